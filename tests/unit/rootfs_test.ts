import { deepEqual as assertEquals, ok, throws } from "node:assert/strict";
import {
  assertNoSymlinkParents,
  formatBytes,
  isSafeMemberName,
  planApply,
  tarEscape,
} from "../../src/rootfs/layer_archive.ts";
import {
  overlayFromMountinfo,
  type OverlayMount,
  resolveOverlayPaths,
  upperdirFromMountinfo,
} from "../../src/rootfs/upperdir.ts";
import { listTarMembers, parsePaxRecords, TarFormatError, type TarMember } from "../../src/rootfs/tar_index.ts";
import { remountArguments } from "../../src/rootfs/reset.ts";

Deno.test("upperdirFromMountinfo", async (t) => {
  const info = [
    "25 1 8:1 / / rw,relatime - ext4 /dev/vda rw",
    "99 25 0:50 / /var/lib/docker/overlay2/abc/merged rw,relatime - overlay overlay " +
    "rw,lowerdir=/l1:/l2,upperdir=/var/lib/docker/overlay2/abc/diff,workdir=/var/lib/docker/overlay2/abc/work",
    "100 25 0:51 / /with\\040space rw - overlay overlay rw,lowerdir=/l,upperdir=/u\\040x,workdir=/w",
    "101 25 0:52 / /notoverlay rw - tmpfs tmpfs rw",
  ].join("\n");
  await t.step("docker overlay2", () => {
    assertEquals(
      upperdirFromMountinfo(info, "/var/lib/docker/overlay2/abc/merged"),
      "/var/lib/docker/overlay2/abc/diff",
    );
  });
  await t.step("escaped spaces", () => assertEquals(upperdirFromMountinfo(info, "/with space"), "/u x"));
  await t.step("not an overlay", () => assertEquals(upperdirFromMountinfo(info, "/notoverlay"), undefined));
  await t.step("absent", () => assertEquals(upperdirFromMountinfo(info, "/nope"), undefined));
});

Deno.test("isSafeMemberName refuses absolute and climbing names", () => {
  assertEquals(["./a/b", "a", "./", "a/..b"].map(isSafeMemberName), [true, true, true, true]);
  assertEquals(["/etc/passwd", "../x", "a/../../x", "./.."].map(isSafeMemberName), [false, false, false, false]);
});

Deno.test("assertNoSymlinkParents refuses to write through a symlink of the new rootfs", () => {
  const dir = Deno.makeTempDirSync();
  try {
    Deno.mkdirSync(`${dir}/real`);
    Deno.symlinkSync("/etc", `${dir}/data`);
    Deno.writeTextFileSync(`${dir}/file`, "");
    assertNoSymlinkParents(dir, "/real/x");
    assertNoSymlinkParents(dir, "/new/dir/x");
    assertNoSymlinkParents(dir, "/data"); // the final component is replaced, not followed
    throws(() => assertNoSymlinkParents(dir, "/data/passwd"), /symlink/);
    throws(() => assertNoSymlinkParents(dir, "/file/x"), /not a directory/);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

const decoder = new TextDecoder();

async function tar(args: string[], cwd?: string): Promise<string> {
  const out = await new Deno.Command("tar", {
    args,
    env: { LC_ALL: "C" },
    stdout: "piped",
    stderr: "piped",
    ...(cwd ? { cwd } : {}),
  })
    .output();
  if (!out.success) throw new Error(`tar ${args.join(" ")}: ${decoder.decode(out.stderr)}`);
  return decoder.decode(out.stdout);
}

/** A temp dir removed at the end of the scope. */
function tempDir(): { path: string } & Disposable {
  const path = Deno.makeTempDirSync();
  return { path, [Symbol.dispose]: () => Deno.removeSync(path, { recursive: true }) };
}

const ODD_NAMES = ["with space", "tab\there", "new\nline", "back\\slash", "é-utf8", "del\x7f", `${"n".repeat(150)}`];

Deno.test("listTarMembers reads what GNU tar writes", async (t) => {
  using dir = tempDir();
  const src = `${dir.path}/src`;
  Deno.mkdirSync(`${src}/d`, { recursive: true });
  for (const name of ODD_NAMES) Deno.writeTextFileSync(`${src}/d/${name}`, name);
  Deno.writeTextFileSync(`${src}/data`, "12345");
  Deno.linkSync(`${src}/data`, `${src}/hard`);
  Deno.symlinkSync("d/with space", `${src}/sym`);
  {
    using file = Deno.openSync(`${src}/sparse`, { write: true, create: true });
    file.truncateSync(16 * 1024 ** 3);
    file.seekSync(1024 ** 3, Deno.SeekMode.Start);
    file.writeSync(new Uint8Array(4096).fill(1));
  }
  const names = ["./d", "./data", "./hard", "./sym", "./sparse"];
  for (const format of ["posix", "gnu"]) {
    await t.step(`${format} format`, async () => {
      const archive = `${dir.path}/${format}.tar`;
      const pax = format === "posix" ? ["--pax-option=SCHILY.xattr.user.x:=y"] : [];
      await tar([`--format=${format}`, ...pax, "--sparse", "-C", src, "-cf", archive, ...names]);
      const members = listTarMembers(archive);
      const byName = new Map(members.map((m) => [m.name, m]));
      assertEquals(
        members.map((m) => m.name).sort(),
        ["./d/", ...ODD_NAMES.map((n) => `./d/${n}`), "./data", "./hard", "./sparse", "./sym"].sort(),
      );
      const data = byName.get("./data")!;
      assertEquals([data.kind, data.dataSize, data.linkName], ["file", 5, ""]);
      assertEquals(format === "posix" ? data.xattrs : {}, format === "posix" ? { "user.x": "y" } : data.xattrs);
      assertEquals([byName.get("./hard")!.kind, byName.get("./hard")!.linkName], ["hardlink", "./data"]);
      assertEquals([byName.get("./sym")!.kind, byName.get("./sym")!.linkName], ["symlink", "d/with space"]);
      assertEquals(byName.get("./d/")!.kind, "directory");
      const sparse = byName.get("./sparse")!;
      ok(sparse.kind === "file" && sparse.dataSize >= 4096 && sparse.dataSize < 16384, `${sparse.dataSize}`);
      // The names are GNU tar's own, in its order: what the apply cross-checks.
      const listing = (await tar(["-tv", "--quoting-style=escape", "-f", archive])).trimEnd().split("\n");
      assertEquals(listing.length, members.length);
      members.forEach((m, i) => ok(listing[i]!.includes(` ${tarEscape(m.name)}`), `${listing[i]} vs ${m.name}`));
    });
  }
});

Deno.test("listTarMembers refuses a damaged archive", async (t) => {
  using dir = tempDir();
  Deno.writeTextFileSync(`${dir.path}/a`, "a".repeat(10000));
  Deno.writeTextFileSync(`${dir.path}/b`, "b");
  const archive = `${dir.path}/x.tar`;
  await tar(["-C", dir.path, "-cf", archive, "./a", "./b"]);
  const bytes = Deno.readFileSync(archive);
  await t.step("truncated in the data of a member", () => {
    Deno.writeFileSync(archive, bytes.subarray(0, 4096));
    throws(() => listTarMembers(archive), TarFormatError);
  });
  await t.step("a header with a wrong checksum", () => {
    const damaged = bytes.slice();
    damaged[10] = 0x41;
    Deno.writeFileSync(archive, damaged);
    throws(() => listTarMembers(archive), /damaged header/);
  });
  await t.step("a name that is not UTF-8", async () => {
    await tar(["-C", dir.path, "-cf", archive, "./b"]);
    const odd = Deno.readFileSync(archive);
    odd[2] = 0xff; // "./b" becomes "./\xff"; then the header checksum is made right again
    const sum = odd.subarray(0, 512).reduce((s, b, i) => s + (i >= 148 && i < 156 ? 32 : b), 0);
    odd.set(new TextEncoder().encode(`${sum.toString(8).padStart(6, "0")}\0 `), 148);
    Deno.writeFileSync(archive, odd);
    throws(() => listTarMembers(archive), /not UTF-8/);
  });
});

Deno.test("parsePaxRecords", () => {
  const records = parsePaxRecords(new TextEncoder().encode("11 path=ab\n27 SCHILY.xattr.user.k=v=w\n"));
  assertEquals(decoder.decode(records.get("path")), "ab");
  assertEquals(decoder.decode(records.get("SCHILY.xattr.user.k")), "v=w");
  throws(() => parsePaxRecords(new TextEncoder().encode("99 path=ab\n")), TarFormatError);
});

Deno.test("tarEscape quotes names as GNU tar lists them", () => {
  assertEquals(
    ODD_NAMES.slice(0, 6).map(tarEscape),
    ["with space", "tab\\there", "new\\nline", "back\\\\slash", "\\303\\251-utf8", "del\\177"],
  );
});

Deno.test("formatBytes", () => {
  assertEquals([0, 1023, 1536, 16 * 1024 ** 2, 3 * 1024 ** 4].map(formatBytes), [
    "0 bytes",
    "1023 bytes",
    "1.5 KiB",
    "16.0 MiB",
    "3.0 TiB",
  ]);
});

const member = (name: string, kind: TarMember["kind"] = "file", more: Partial<TarMember> = {}): TarMember => ({
  name,
  kind,
  linkName: "",
  dataSize: 0,
  devMajor: 0,
  devMinor: 0,
  xattrs: {},
  ...more,
});
const whiteout = (name: string) => member(name, "chardev");

Deno.test("planApply checks every member before anything is written", async (t) => {
  using dir = tempDir();
  const rootfs = dir.path;
  writeRootfs(rootfs);
  const refusals: [string, TarMember[], RegExp][] = [
    ["an absolute name", [member("./a"), member("/etc/passwd")], /unsafe member names: \/etc\/passwd/],
    ["a climbing name", [member("./a/../../x")], /unsafe/],
    ["a hard link out of the rootfs", [member("./h", "hardlink", { linkName: "../../etc/shadow" })], /unsafe/],
    ["a name twice", [member("./a"), whiteout("a")], /twice/],
    [
      "a member under a symlink member",
      [member("./s", "symlink", { linkName: "/etc" }), member("./s/passwd")],
      /non-directory/,
    ],
    ["a member under a symlink of the rootfs", [member("./ok"), member("./etc-link/passwd")], /symlink/],
    ["a directory onto a symlink of the rootfs", [member("./ok"), member("./etc-link/", "directory")], /symlink/],
    [
      "a hard link through a symlink of the rootfs",
      [member("./h", "hardlink", { linkName: "etc-link/shadow" })],
      /symlink/,
    ],
    ["a member under a file of the rootfs", [member("./file/x")], /not a directory/],
  ];
  for (const [what, members, error] of refusals) {
    await t.step(what, () => throws(() => planApply(members, rootfs), error));
  }
  await t.step("what an accepted layer does", () => {
    const plan = planApply([
      member("./", "directory"),
      whiteout("./gone"),
      whiteout("./never-was"),
      member("./opaque/", "directory", { xattrs: { "trusted.overlay.opaque": "y" } }),
      member("./plain/", "directory", { xattrs: { "user.overlay.opaque": "x" } }),
      member("./dir-now-file", "file", { dataSize: 5000 }),
      member("./new/deep/file", "file", { dataSize: 1 }),
      member("./h", "hardlink", { linkName: "./new/deep/file" }),
    ], rootfs);
    assertEquals(plan.exclude, ["./gone", "./never-was"]);
    assertEquals(plan.remove, ["/gone", "/opaque", "/dir-now-file"]);
    assertEquals(plan.bytes, 3 * 4096 + 8192 + 4096);
    assertEquals(plan.inodes, 5);
  });
});

function writeRootfs(rootfs: string): void {
  for (const d of ["opaque/sub", "plain", "dir-now-file/x"]) Deno.mkdirSync(`${rootfs}/${d}`, { recursive: true });
  Deno.writeTextFileSync(`${rootfs}/gone`, "");
  Deno.writeTextFileSync(`${rootfs}/file`, "");
  Deno.symlinkSync("/etc", `${rootfs}/etc-link`);
}

Deno.test("overlayFromMountinfo and resolveOverlayPaths", async (t) => {
  const at = (line: string, point: string) => overlayFromMountinfo(line, point)!;
  await t.step("absolute layers", () => {
    const o = at("9 1 0:5 / /m rw,relatime - overlay overlay rw,lowerdir=/a:/b,upperdir=/u,workdir=/w,uuid=on", "/m");
    assertEquals([o.lowerdirs, o.upperdir, o.workdir, o.source, o.root], [["/a", "/b"], "/u", "/w", "overlay", "/"]);
    assertEquals(resolveOverlayPaths(o).base, undefined);
  });
  await t.step("Docker overlay2 with relative layers (long option string)", () => {
    const line = "9 1 0:5 / /var/lib/docker/overlay2/abc/merged rw - overlay overlay " +
      "rw,lowerdir=l/X:l/Y,upperdir=abc/diff,workdir=abc/work";
    const point = "/var/lib/docker/overlay2/abc/merged";
    assertEquals(upperdirFromMountinfo(line, point), "/var/lib/docker/overlay2/abc/diff");
    assertEquals(resolveOverlayPaths(at(line, point)), {
      base: "/var/lib/docker/overlay2",
      lowerdirs: ["/var/lib/docker/overlay2/l/X", "/var/lib/docker/overlay2/l/Y"],
      upperdir: "/var/lib/docker/overlay2/abc/diff",
      workdir: "/var/lib/docker/overlay2/abc/work",
    });
  });
  await t.step("containerd with relative lower layers (long option string)", () => {
    const s = "/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots";
    const line =
      `9 1 0:5 / /run/c/rootfs rw - overlay overlay rw,lowerdir=12/fs:11/fs,upperdir=${s}/13/fs,workdir=${s}/13/work`;
    assertEquals(resolveOverlayPaths(at(line, "/run/c/rootfs")).lowerdirs, [`${s}/12/fs`, `${s}/11/fs`]);
  });
  await t.step("relative layers of an unknown layout", () => {
    const line = "9 1 0:5 / /m rw - overlay overlay rw,lowerdir=x:y,upperdir=u,workdir=w";
    throws(() => resolveOverlayPaths(at(line, "/m")), /relative layer paths of an unknown layout \("x"\)/);
  });
  await t.step("lowerdir+ and datadir+ layers", () => {
    const line = "9 1 0:5 / /m rw - overlay overlay rw,lowerdir+=/a,lowerdir+=/b,datadir+=/c,upperdir=/u,workdir=/w";
    assertEquals(at(line, "/m").lowerdirs, ["/a", "/b", "/c"]);
  });
  await t.step("the last mount at the point wins", () => {
    const lines =
      "9 1 0:5 / /m rw - overlay overlay rw,lowerdir=/a,upperdir=/u,workdir=/w\n10 9 0:6 / /m rw - tmpfs tmpfs rw";
    assertEquals(overlayFromMountinfo(lines, "/m"), undefined);
  });
});

Deno.test("remountArguments reproduces the mount or refuses", async (t) => {
  const at = (perMount: string, sb: string, root = "/") =>
    overlayFromMountinfo(`9 1 0:5 ${root} /m ${perMount} - overlay overlay ${sb}`, "/m")!;
  await t.step("flags and overlay options", () => {
    const { flags, data } = remountArguments(
      at("ro,nosuid,nodev,noexec,noatime", "ro,lazytime,lowerdir=/a:/b,upperdir=/u,workdir=/w,index=off,xino=off"),
    );
    assertEquals(flags, 1n | 2n | 4n | 8n | 1024n | (1n << 25n));
    assertEquals(data, "lowerdir=/a:/b,upperdir=/u,workdir=/w,index=off,xino=off");
  });
  await t.step("neither relatime nor noatime: strictatime", () => {
    assertEquals(remountArguments(at("rw", "rw,lowerdir=/a,upperdir=/u,workdir=/w")).flags, 1n << 24n);
  });
  const refusals: [string, OverlayMount, RegExp][] = [
    ["no upperdir", at("rw", "rw,lowerdir=/a:/b"), /no upperdir/],
    ["a bind mount of a subtree", at("rw", "rw,lowerdir=/a,upperdir=/u,workdir=/w", "/sub"), /bind mount/],
    ["an idmapped mount", at("rw,idmapped", "rw,lowerdir=/a,upperdir=/u,workdir=/w"), /"idmapped"/],
    ["an escaped path", at("rw", "rw,lowerdir=/a\\054b,upperdir=/u,workdir=/w"), /escaped/],
  ];
  for (const [what, overlay, error] of refusals) {
    await t.step(what, () => throws(() => remountArguments(overlay), error));
  }
});
