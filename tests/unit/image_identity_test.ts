import { deepEqual as assertEquals } from "node:assert/strict";
import { createHash } from "node:crypto";
import { treeDigest } from "../../src/rootfs/image_identity.ts";

Deno.test("a layer's digest is the same hashed whole or streamed, and as node:crypto hashed it line by line", async () => {
  const dir = Deno.makeTempDirSync();
  try {
    Deno.mkdirSync(`${dir}/etc/deep`, { recursive: true });
    Deno.writeTextFileSync(`${dir}/etc/deep/é file`, "x");
    Deno.writeTextFileSync(`${dir}/a`, "hello");
    Deno.symlinkSync("etc/deep", `${dir}/link`);
    for (let i = 0; i < 50; i++) Deno.writeTextFileSync(`${dir}/etc/f${i}`, String(i));
    // The reference: what the digest was before Web Crypto (one update per line).
    const reference = createHash("sha256");
    const walk = (rel: string) => {
      for (const name of [...Deno.readDirSync(rel === "" ? dir : `${dir}/${rel}`)].map((e) => e.name).sort()) {
        const path = rel === "" ? name : `${rel}/${name}`;
        const info = Deno.lstatSync(`${dir}/${path}`);
        const type = info.isDirectory ? "d" : info.isSymlink ? "l" : info.isFile ? "f" : "o";
        const target = info.isSymlink ? Deno.readLinkSync(`${dir}/${path}`) : "";
        const mtime = info.isDirectory ? 0 : Math.floor((info.mtime?.getTime() ?? 0) / 1000);
        const size = info.isFile ? info.size : 0;
        reference.update(`${path}\0${type}\0${info.mode}\0${info.uid}:${info.gid}\0${size}\0${mtime}\0${target}\n`);
        if (info.isDirectory) walk(path);
      }
    };
    walk("");
    const expected = reference.digest("hex");
    assertEquals(await treeDigest(dir), expected);
    assertEquals(await treeDigest(dir, 100), expected); // streamed in batches of ~100 characters
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
