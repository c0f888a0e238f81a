/**
 * resetRootfs on real overlay mounts (root; no engine needed): after a (partly) applied
 * layer the rootfs shows the image's files again, with the same mount options, for absolute
 * layer paths and for the relative ones Docker and containerd use for long option strings.
 */

import { deepEqual as assertEquals, ok, rejects } from "node:assert/strict";
import { resetRootfs } from "../../src/rootfs/reset.ts";
import { applyToRootfs, captureUpperdir } from "../../src/rootfs/layer_archive.ts";
import {
  isMounted,
  mountOverlay,
  mountProgram,
  scratchFs,
  snapshot,
  umountProgram,
  writeTree,
} from "./_rootfs_fixtures.ts";

const ignore = Deno.uid() !== 0;
if (ignore && Deno.env.get("CI") === "true") throw new Error("the rootfs tests need root");

/**
 * What mountinfo shows of the mount at `point` that a remount must keep: root, mount point,
 * per-mount options, file system type, source and superblock options (not the ids, device
 * number and peer groups a new mount gets).
 */
function mountLine(point: string): string {
  const line = Deno.readTextFileSync("/proc/self/mountinfo").split("\n").findLast((l) => l.split(" ")[4] === point);
  ok(line !== undefined, `nothing mounted at ${point}`);
  const [left, right] = line.split(" - ");
  return [...left!.split(" ").slice(3, 6), right].join(" ");
}

/** Writes through the merged view the way a container (or a half-applied layer) does. */
function scribble(merged: string): void {
  Deno.removeSync(`${merged}/etc/hostname`); // whiteout
  Deno.removeSync(`${merged}/usr`, { recursive: true });
  writeTree(merged, { "usr/new": "opaque now", "etc/new": "new", "root/.history": "ls" });
  Deno.writeTextFileSync(`${merged}/etc/passwd`, "changed"); // copy-up
}

const IMAGE = {
  "etc/hostname": "image",
  "etc/passwd": "root:x:0:0::/root:/bin/sh\n",
  "usr/bin/tool": "#!/bin/sh\n",
  "usr/lib/x": "x",
  "root": null,
};

Deno.test({ name: "resetRootfs shows the image's files again, same mount options", ignore }, async () => {
  await using fs = await scratchFs(64);
  const image = `${fs.dir}/image`;
  writeTree(image, IMAGE);
  const archive = `${fs.dir}/layer.tar`;
  {
    await using old = await mountOverlay(fs.dir, [image]);
    scribble(old.merged);
    await captureUpperdir(old.upper, archive);
  }
  await using rootfs = await mountOverlay(fs.dir, [image]);
  const line = mountLine(rootfs.merged);
  await applyToRootfs(archive, rootfs.merged); // the restore that then failed
  ok(!snapshot(rootfs.merged).some((l) => l.startsWith("/etc/hostname")));
  await resetRootfs(rootfs.merged);
  assertEquals(snapshot(rootfs.merged), snapshot(image));
  assertEquals([...Deno.readDirSync(rootfs.upper)], []);
  assertEquals(mountLine(rootfs.merged), line);
  writeTree(rootfs.merged, { "etc/after": "writable again" });
  assertEquals(Deno.readTextFileSync(`${rootfs.upper}/etc/after`), "writable again");
});

Deno.test({ name: "resetRootfs remounts Docker's relative layer paths from Docker's home", ignore }, async () => {
  await using fs = await scratchFs(64);
  const home = `${fs.dir}/overlay2`; // /var/lib/docker/overlay2
  writeTree(`${home}/layer1/diff`, IMAGE);
  writeTree(`${home}/layer2/diff`, { "etc/hostname": "layer 2", "opt/app": "app" });
  Deno.mkdirSync(`${home}/l`);
  Deno.symlinkSync("../layer1/diff", `${home}/l/AAAA`);
  Deno.symlinkSync("../layer2/diff", `${home}/l/BBBB`);
  for (const d of ["diff", "work", "merged"]) Deno.mkdirSync(`${home}/abc/${d}`, { recursive: true });
  // What Docker's mountFrom does when the absolute option string exceeds a page: chdir, relative paths.
  await mountProgram([
    "-t",
    "overlay",
    "-o",
    "lowerdir=l/BBBB:l/AAAA,upperdir=abc/diff,workdir=abc/work",
    "overlay",
    "abc/merged",
  ], home);
  const merged = `${home}/abc/merged`;
  try {
    const line = mountLine(merged);
    ok(line.includes("lowerdir=l/BBBB:l/AAAA,upperdir=abc/diff,workdir=abc/work"), line); // the kernel shows them as given
    const expected = snapshot(merged);
    scribble(merged);
    const cwd = Deno.cwd();
    await resetRootfs(merged);
    assertEquals(Deno.cwd(), cwd);
    assertEquals(snapshot(merged), expected);
    assertEquals([...Deno.readDirSync(`${home}/abc/diff`)], []);
    assertEquals(mountLine(merged), line);
  } finally {
    while (isMounted(merged)) await umountProgram(merged);
  }
});

Deno.test(
  { name: "resetRootfs remounts containerd's relative lower layers from its snapshots dir", ignore },
  async () => {
    await using fs = await scratchFs(64);
    const snapshots = `${fs.dir}/snapshots`;
    writeTree(`${snapshots}/1/fs`, IMAGE);
    writeTree(`${snapshots}/2/fs`, { "etc/hostname": "layer 2" });
    for (const d of ["3/fs", "3/work"]) Deno.mkdirSync(`${snapshots}/${d}`, { recursive: true });
    const rootfs = `${fs.dir}/bundle/rootfs`;
    Deno.mkdirSync(rootfs, { recursive: true });
    await mountProgram(
      [
        "-t",
        "overlay",
        "-o",
        `lowerdir=2/fs:1/fs,upperdir=${snapshots}/3/fs,workdir=${snapshots}/3/work`,
        "overlay",
        rootfs,
      ],
      snapshots,
    );
    try {
      const line = mountLine(rootfs);
      const expected = snapshot(rootfs);
      scribble(rootfs);
      await resetRootfs(rootfs);
      assertEquals(snapshot(rootfs), expected);
      assertEquals([...Deno.readDirSync(`${snapshots}/3/fs`)], []);
      assertEquals(mountLine(rootfs), line);
    } finally {
      while (isMounted(rootfs)) await umountProgram(rootfs);
    }
  },
);

Deno.test({ name: "resetRootfs refuses, changing nothing, what it cannot reset", ignore }, async (t) => {
  await using fs = await scratchFs(64);
  const image = `${fs.dir}/image`;
  writeTree(image, IMAGE);
  await t.step("a rootfs still in use", async () => {
    await using rootfs = await mountOverlay(fs.dir, [image]);
    scribble(rootfs.merged);
    const before = snapshot(rootfs.merged);
    using _open = Deno.openSync(`${rootfs.merged}/etc/new`);
    await rejects(
      resetRootfs(rootfs.merged),
      new RegExp(`^Error: cannot reset the rootfs "${rootfs.merged}": umount .* failed: Device or resource busy`),
    );
    ok(isMounted(rootfs.merged));
    assertEquals(snapshot(rootfs.merged), before);
  });
  await t.step("an overlay mounted elsewhere too (a container still running from it)", async () => {
    await using rootfs = await mountOverlay(fs.dir, [image]);
    scribble(rootfs.merged);
    const before = snapshot(rootfs.merged);
    const other = Deno.makeTempDirSync({ dir: fs.dir });
    await mountProgram(["--bind", rootfs.merged, other]);
    try {
      await rejects(
        resetRootfs(rootfs.merged),
        /its overlay is also mounted at ".*": is a container still using it\?$/,
      );
      assertEquals(snapshot(rootfs.merged), before);
    } finally {
      await umountProgram(other);
    }
  });
  await t.step("a rootfs that is not an overlay", async () => {
    const dir = Deno.makeTempDirSync({ dir: fs.dir });
    await rejects(resetRootfs(dir), /^Error: cannot reset the rootfs ".*": it is not an overlay mount$/);
  });
});
