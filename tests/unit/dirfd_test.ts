/**
 * util/dirfd.ts: trees entered and removed from descriptors, files read only when regular
 * (issue 24: no link followed, no hang on a FIFO, no device opened, names that are not UTF-8,
 * depth without running out of descriptors, links of an image resolved inside its root).
 */

import { deepEqual as assertEquals, ok, throws } from "node:assert/strict";
import { Dir, openRegularFile, readRegularFile, UnsafeEntryError } from "../../src/util/dirfd.ts";
import { mustRun } from "../../src/process/exec.ts";

Deno.test("dirfd: reads only regular files, never through a link, never waiting on a FIFO", async () => {
  const d = Deno.makeTempDirSync();
  try {
    Deno.writeTextFileSync(`${d}/reg`, "hello");
    Deno.symlinkSync(`${d}/reg`, `${d}/link`);
    await mustRun({ cmd: "mkfifo", args: [`${d}/fifo`] });
    await mustRun({ cmd: "mknod", args: [`${d}/null`, "c", "1", "3"] });
    assertEquals(new TextDecoder().decode(readRegularFile(`${d}/reg`, 16)), "hello");
    throws(() => readRegularFile(`${d}/reg`, 3), /larger than 3 bytes/);
    throws(() => readRegularFile(`${d}/link`, 16), /is a symbolic link/);
    throws(() => readRegularFile(`${d}/fifo`, 16), /is not a regular file/);
    throws(() => readRegularFile(`${d}/null`, 16), UnsafeEntryError);
    throws(() => openRegularFile(`${d}/fifo`), /is not a regular file/);
    throws(() => readRegularFile(`${d}/missing`, 16), Deno.errors.NotFound);
    using f = openRegularFile(`${d}/reg`);
    assertEquals(f.readSync(new Uint8Array(16)), 5);
  } finally {
    Deno.removeSync(d, { recursive: true });
  }
});

Deno.test("dirfd: removeTree stays in its tree, removes names that are not UTF-8, and any depth", async () => {
  const d = Deno.makeTempDirSync();
  try {
    Deno.mkdirSync(`${d}/victim`);
    Deno.writeTextFileSync(`${d}/victim/keep`, "k");
    Deno.mkdirSync(`${d}/t/a`, { recursive: true });
    Deno.symlinkSync(`${d}/victim`, `${d}/t/a/link`);
    Deno.symlinkSync(`${d}/victim/keep`, `${d}/t/file-link`);
    let deep = `${d}/t`;
    for (let i = 0; i < 200; i++) deep += "/x";
    Deno.mkdirSync(deep, { recursive: true });
    Deno.writeTextFileSync(`${deep}/bottom`, "b");
    // a name with bytes that are not UTF-8, and a tenant's ".deep-0" where the flattening could look
    await mustRun({ cmd: "sh", args: ["-c", `touch "${d}/t/a/$(printf 'x\\377y')" && mkdir -p "${d}/t/.deep-0/q"`] });
    using root = Dir.open(d);
    root.removeTree("t");
    assertEquals([...Deno.readDirSync(d)].map((e) => e.name), ["victim"]);
    assertEquals(Deno.readTextFileSync(`${d}/victim/keep`), "k");
    root.removeTree("absent"); // nothing to do
  } finally {
    Deno.removeSync(d, { recursive: true });
  }
});

Deno.test("dirfd: a link on the way is refused, and root-only is checked at each step", () => {
  const d = Deno.makeTempDirSync();
  try {
    Deno.mkdirSync(`${d}/real/inner`, { recursive: true });
    Deno.symlinkSync(`${d}/real`, `${d}/link`);
    using root = Dir.open(d);
    throws(() => root.descend(["link", "inner"]), /is not a directory \(a link is never followed\)/);
    ok(root.descend(["real", "inner"]) !== undefined);
    assertEquals(root.descend(["real", "missing"]), undefined);
    Deno.chownSync(`${d}/real`, 1000, 1000);
    throws(() => root.descend(["real"], { rootOnly: true }), /owned by uid 1000/);
  } finally {
    Deno.removeSync(d, { recursive: true });
  }
});

Deno.test("dirfd: openInRoot resolves an image's links inside its root, as runc resolves a mount destination", () => {
  const d = Deno.makeTempDirSync();
  try {
    Deno.mkdirSync(`${d}/rootfs/data`, { recursive: true });
    Deno.symlinkSync("/data", `${d}/rootfs/abs`);
    Deno.symlinkSync("../../../../../..", `${d}/rootfs/up`);
    Deno.symlinkSync(d, `${d}/rootfs/host`); // the host path of the rootfs's parent: inside, it does not exist
    using root = Dir.open(`${d}/rootfs`);
    const ino = (dir: Dir) => Deno.statSync(dir.at()).ino;
    const data = Deno.statSync(`${d}/rootfs/data`).ino;
    for (const path of ["/data", "abs", "/up/data", "up/up/data"]) {
      using found = root.openInRoot(path);
      assertEquals(ino(found), data, path);
    }
    throws(() => root.openInRoot("host/rootfs"), /No such file/);
  } finally {
    Deno.removeSync(d, { recursive: true });
  }
});
