/**
 * The saved writable layer through capture → apply on real overlay mounts and size-limited
 * tmpfs file systems (root; no engine needed): overlay semantics, holes, free space, no
 * staging, refusals that leave the rootfs untouched, failing tars never ignored.
 */

import { deepEqual as assertEquals, ok, rejects } from "node:assert/strict";
import { applyToRootfs, captureUpperdir } from "../../src/rootfs/layer_archive.ts";
import { resolveProgram } from "../../src/process/programs.ts";
import { mountOverlay, scratchFs, snapshot, writeTree } from "./_rootfs_fixtures.ts";

const ignore = Deno.uid() !== 0;
if (ignore && Deno.env.get("CI") === "true") throw new Error("the rootfs tests need root");

const GiB = 1024 ** 3;

Deno.test({ name: "apply reproduces the old container's files like overlay does", ignore }, async () => {
  await using fs = await scratchFs(256);
  const image = `${fs.dir}/image`;
  writeTree(image, {
    "etc/keep": "keep",
    "etc/gone": "gone",
    "opq/old1": "old1",
    "opq/sub/old2": "old2",
    "rep/inside": "x",
    "file": "file",
    "with space/é\nnl": "odd names",
  });
  const archive = `${fs.dir}/layer.tar`;
  let expected: string[];
  {
    await using old = await mountOverlay(fs.dir, [image]);
    const m = old.merged;
    Deno.removeSync(`${m}/etc/gone`); // whiteout
    Deno.removeSync(`${m}/opq`, { recursive: true }); // then recreated: opaque directory
    writeTree(m, { "opq/new": "new", "etc/new": "new file" });
    Deno.removeSync(`${m}/rep`, { recursive: true });
    Deno.writeTextFileSync(`${m}/rep`, "a file where a directory was");
    Deno.linkSync(`${m}/etc/new`, `${m}/etc/new-link`);
    Deno.symlinkSync("new", `${m}/etc/sym`);
    Deno.chmodSync(`${m}/etc/keep`, 0o600);
    Deno.chownSync(`${m}/file`, 1234, 5678);
    Deno.removeSync(`${m}/with space/é\nnl`);
    expected = snapshot(m);
    await captureUpperdir(old.upper, archive);
  }
  await using fresh = await mountOverlay(fs.dir, [image]);
  await applyToRootfs(archive, fresh.merged);
  assertEquals(snapshot(fresh.merged), expected);
});

Deno.test({ name: "a sparse file keeps its holes through capture and apply", ignore }, async () => {
  await using fs = await scratchFs(64);
  await using target = await scratchFs(64); // a copy without holes would run it full at once
  const upper = `${fs.dir}/upper`;
  Deno.mkdirSync(upper);
  {
    using file = Deno.openSync(`${upper}/disk.img`, { write: true, create: true });
    file.truncateSync(64 * GiB);
    for (const offset of [0, 32 * GiB, 64 * GiB - 4096]) {
      file.seekSync(offset, Deno.SeekMode.Start);
      file.writeSync(new Uint8Array(4096).fill(0x61));
    }
  }
  const archive = `${fs.dir}/layer.tar`;
  await captureUpperdir(upper, archive);
  ok(Deno.statSync(archive).size < 1024 * 1024, `archive of ${Deno.statSync(archive).size} bytes`);
  const rootfs = `${target.dir}/rootfs`;
  Deno.mkdirSync(rootfs);
  await applyToRootfs(archive, rootfs);
  const info = Deno.statSync(`${rootfs}/disk.img`);
  assertEquals(info.size, 64 * GiB);
  const allocated = info.blocks! * 512;
  console.log(`  64 GiB sparse file: ${allocated} bytes allocated after apply`);
  ok(allocated <= 64 * 1024, `${allocated} bytes allocated`);
  using file = Deno.openSync(`${rootfs}/disk.img`);
  const chunk = new Uint8Array(4096);
  file.seekSync(32 * GiB, Deno.SeekMode.Start);
  file.readSync(chunk);
  ok(chunk.every((b) => b === 0x61));
});

Deno.test({ name: "apply stages nothing outside the rootfs", ignore }, async () => {
  await using fs = await scratchFs(64);
  await using small = await scratchFs(1); // no staging copy of the layer would fit here
  const upper = `${fs.dir}/upper`;
  writeTree(upper, { "data/big": "b".repeat(4 * 1024 * 1024), "data/small": "s" });
  const archive = `${fs.dir}/layer.tar`;
  await captureUpperdir(upper, archive);
  const rootfs = `${fs.dir}/rootfs`;
  Deno.mkdirSync(rootfs);
  const tmp = Deno.env.get("TMPDIR");
  Deno.env.set("TMPDIR", small.dir);
  try {
    await applyToRootfs(archive, rootfs);
  } finally {
    if (tmp === undefined) Deno.env.delete("TMPDIR");
    else Deno.env.set("TMPDIR", tmp);
  }
  assertEquals(Deno.statSync(`${rootfs}/data/big`).size, 4 * 1024 * 1024);
  assertEquals([...Deno.readDirSync(small.dir)], []);
});

Deno.test({ name: "apply refuses a layer that does not fit, before writing anything", ignore }, async () => {
  await using fs = await scratchFs(64);
  await using target = await scratchFs(8);
  const upper = `${fs.dir}/upper`;
  writeTree(upper, { "a-small": "small", "big": "b".repeat(16 * 1024 * 1024) });
  const archive = `${fs.dir}/layer.tar`;
  await captureUpperdir(upper, archive);
  const rootfs = `${target.dir}/rootfs`;
  writeTree(rootfs, { "etc/passwd": "root:x:0:0::/root:/bin/sh\n" });
  const before = snapshot(rootfs);
  await rejects(
    applyToRootfs(archive, rootfs),
    new RegExp(
      `^LayerRefusedError: not enough free space on the file system of "${rootfs}" for the saved writable layer: ` +
        `need 16\\.0 MiB, have [0-9.]+ MiB$`,
    ),
  );
  assertEquals(snapshot(rootfs), before);
});

Deno.test(
  { name: "a refused member leaves the rootfs untouched, even after an accepted whiteout", ignore },
  async () => {
    await using fs = await scratchFs(64);
    const oldImage = `${fs.dir}/old-image`;
    writeTree(oldImage, { "w": "deleted by the old container", "l/keep": "" });
    const newImage = `${fs.dir}/new-image`;
    writeTree(newImage, { "w": "still here", "l": { symlink: `${fs.dir}/host-etc` }, "host-etc-marker": "" });
    Deno.mkdirSync(`${fs.dir}/host-etc`);
    const archive = `${fs.dir}/layer.tar`;
    {
      await using old = await mountOverlay(fs.dir, [oldImage]);
      Deno.removeSync(`${old.merged}/w`); // member: whiteout "./w"
      Deno.writeTextFileSync(`${old.merged}/l/passwd`, "evil"); // members "./l/", "./l/passwd"
      await captureUpperdir(old.upper, archive);
    }
    await using fresh = await mountOverlay(fs.dir, [newImage]);
    const before = snapshot(fresh.merged);
    await rejects(applyToRootfs(archive, fresh.merged), /symlink/);
    assertEquals(snapshot(fresh.merged), before);
    assertEquals([...Deno.readDirSync(`${fs.dir}/host-etc`)], []);
  },
);

Deno.test({ name: "every tar the apply runs is checked: one that fails fails the apply", ignore }, async () => {
  await using fs = await scratchFs(64);
  const upper = `${fs.dir}/upper`;
  writeTree(upper, { "a": "a", "b": "b" });
  const archive = `${fs.dir}/layer.tar`;
  await captureUpperdir(upper, archive);
  // A tar that does its work, then exits 2 if it is the FAIL_AT-th tar started (as GNU tar
  // does after skipping a file it could not read: its output is incomplete, only the exit
  // status says so). Shell builtins only; `set -C` makes the counting race-free.
  const bin = `${fs.dir}/bin`;
  Deno.mkdirSync(bin);
  Deno.writeTextFileSync(
    `${bin}/tar`,
    `#!/bin/sh\n${resolveProgram("tar")} "$@"; status=$?\n` +
      `n=1; while ! (set -C; : > "$TAR_LOG/$n") 2>/dev/null; do n=$((n + 1)); done\n` +
      `[ "$n" = "$FAIL_AT" ] && exit 2\nexit $status\n`,
  );
  Deno.chmodSync(`${bin}/tar`, 0o755);
  const path = Deno.env.get("PATH") ?? "";
  for (let failAt = 1;; failAt++) {
    const log = Deno.makeTempDirSync({ dir: fs.dir });
    const rootfs = Deno.makeTempDirSync({ dir: fs.dir });
    Deno.env.set("PATH", `${bin}:${path}`);
    Deno.env.set("TAR_LOG", log);
    Deno.env.set("FAIL_AT", String(failAt));
    let outcome: unknown;
    try {
      outcome = await applyToRootfs(archive, rootfs).then(() => "applied", (e: Error) => e);
    } finally {
      Deno.env.set("PATH", path);
    }
    const started = [...Deno.readDirSync(log)].length;
    if (started < failAt) break; // every tar of the apply has had its turn
    ok(outcome instanceof Error, `the apply ignored the failure of tar number ${failAt} of ${started}`);
    ok(/exited with 2/.test(outcome.message), outcome.message);
  }
});
