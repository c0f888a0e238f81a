/**
 * src/checkpoint/inotify_paths.ts: the watched inodes of a process tree are found, by device
 * and inode, below their file system's mount point, and written as CRIU's irmap cache. The
 * watching process is this one (Deno.watchFs is inotify), the file system a tmpfs of its own.
 */
import { deepEqual as assertEquals, ok } from "node:assert/strict";
import {
  containerWatches,
  findWatchedPaths,
  irmapCacheImage,
  kernelDev,
  prepareInotifyPaths,
} from "../../src/checkpoint/inotify_paths.ts";
import { decodeFields, imageEntries } from "../../src/criu/images.ts";

const ignore = Deno.uid() !== 0 && Deno.env.get("CI") !== "true";

Deno.test("kernelDev: glibc's st_dev back to the kernel's dev_t", () => {
  assertEquals(kernelDev((8 << 8) | 3), (8 << 20) | 3); // sda3
  assertEquals(kernelDev(0x5a), 0x5a); // an overlay's anonymous device (major 0)
  assertEquals(kernelDev(((259 & 0xfff) << 8) | (0x1234 & 0xff) | ((0x1234 & ~0xff) << 12)), (259 << 20) | 0x1234);
});

Deno.test({
  name: "the watches of a process are found on their file system and written as CRIU's irmap cache",
  ignore,
  async fn() {
    const dir = Deno.makeTempDirSync({ prefix: "arch-inotify-" });
    const mnt = `${dir}/fs`;
    Deno.mkdirSync(mnt);
    await new Deno.Command("mount", { args: ["-t", "tmpfs", "tmpfs", mnt] }).output();
    const watcher = (() => {
      Deno.mkdirSync(`${mnt}/a/b/watched`, { recursive: true });
      Deno.writeTextFileSync(`${mnt}/a/file`, "x");
      return Deno.watchFs([`${mnt}/a/b/watched`, `${mnt}/a/file`], { recursive: false });
    })();
    try {
      const watches = containerWatches(Deno.pid);
      const dev = kernelDev(Deno.statSync(mnt).dev!);
      const mine = watches.filter((w) => w.sdev === dev);
      assertEquals(mine.length, 2, JSON.stringify(watches, (_, v) => typeof v === "bigint" ? String(v) : v));
      const paths = await findWatchedPaths(Deno.pid, mine);
      assertEquals([...paths.values()].sort(), [`${mnt}/a/b/watched`, `${mnt}/a/file`]);

      const work = `${dir}/work`;
      const result = await prepareInotifyPaths(Deno.pid, work);
      ok(result.found >= 2, JSON.stringify(result));
      const image = Deno.readFileSync(`${work}/irmap-cache`);
      const view = new DataView(image.buffer);
      assertEquals([view.getUint32(0, true), view.getUint32(4, true)], [0x55105940, 0x57004059]);
      const entries = imageEntries(image).map((e) => decodeFields(e));
      const written = entries.map((f) => new TextDecoder().decode(f.find((x) => x.n === 3)!.value as Uint8Array));
      ok(written.includes(`${mnt}/a/b/watched`) && written.includes(`${mnt}/a/file`), written.join(", "));
      const watched = entries.find((f) => new TextDecoder().decode(f[2]!.value as Uint8Array) === `${mnt}/a/file`)!;
      assertEquals([watched[0]!.value, watched[1]!.value], [dev, Number(Deno.statSync(`${mnt}/a/file`).ino)]);
    } finally {
      watcher.close();
      await new Deno.Command("umount", { args: [mnt] }).output();
      Deno.removeSync(dir, { recursive: true });
    }
  },
});

Deno.test("no watch, no file", async () => {
  const dir = Deno.makeTempDirSync();
  try {
    assertEquals(irmapCacheImage([]).length, 8);
    // a process without inotify (sleep): nothing written
    const child = new Deno.Command("sleep", { args: ["5"] }).spawn();
    try {
      assertEquals(await prepareInotifyPaths(child.pid, `${dir}/work`), { found: 0, missing: 0 });
    } finally {
      child.kill();
    }
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
