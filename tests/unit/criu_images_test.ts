/** src/criu/images.ts: decoding CRIU's image files (process tree, command names, pages). */

import { deepEqual as assertEquals, throws } from "node:assert/strict";
import { decodeFields, parseCoreComm, parsePagemapPages, parsePstree, readCriuImages } from "../../src/criu/images.ts";

/** Protobuf encoding of the few field kinds CRIU's images use here. */
function varint(n: number): number[] {
  const out: number[] = [];
  let v = BigInt(n);
  do {
    let b = Number(v & 0x7fn);
    v >>= 7n;
    if (v > 0n) b |= 0x80;
    out.push(b);
  } while (v > 0n);
  return out;
}
const fieldVarint = (n: number, v: number) => [...varint((n << 3) | 0), ...varint(v)];
const fieldBytes = (n: number, b: number[]) => [...varint((n << 3) | 2), ...varint(b.length), ...b];
function image(entries: number[][]): Uint8Array {
  const out: number[] = [0x19, 0x43, 0x56, 0x54, 0x30, 0x30, 0x27, 0x50]; // two magics
  for (const e of entries) out.push(e.length & 0xff, (e.length >> 8) & 0xff, 0, 0, ...e);
  return new Uint8Array(out);
}

Deno.test("CRIU images: process tree, command names, pages", async (t) => {
  const pstree = image([
    [...fieldVarint(1, 1), ...fieldVarint(2, 0), ...fieldVarint(3, 1), ...fieldVarint(4, 1), ...fieldBytes(5, [1])],
    [...fieldVarint(1, 7), ...fieldVarint(2, 1), ...fieldVarint(5, 7), ...fieldVarint(5, 8)],
  ]);
  const tc = [...fieldVarint(1, 1), ...fieldVarint(2, 0), ...fieldBytes(6, [...new TextEncoder().encode("workload")])];
  const core = image([[...fieldVarint(1, 1), ...fieldBytes(2, [0x08, 0x01]), ...fieldBytes(3, tc)]]);
  const pagemap = image([
    fieldVarint(1, 1), // pagemap_head
    [...fieldVarint(1, 4096), ...fieldVarint(2, 0), ...fieldVarint(4, 4), ...fieldVarint(5, 100)], // pages_nr
    [...fieldVarint(1, 8192), ...fieldVarint(2, 3), ...fieldVarint(4, 4)], // legacy nr_pages
    [...fieldVarint(1, 9999), ...fieldVarint(2, 9), ...fieldVarint(4, 1)], // in the parent image: not here
  ]);
  await t.step("decoders", () => {
    assertEquals(parsePstree(pstree), [{ pid: 1, ppid: 0, threads: [1] }, { pid: 7, ppid: 1, threads: [7, 8] }]);
    assertEquals(parseCoreComm(core), "workload");
    assertEquals(parsePagemapPages(pagemap), 103);
    throws(() => decodeFields(new Uint8Array([0x0a, 0x05, 1])), /truncated/);
  });
  await t.step("a directory: tree with names and pages, memory = pages-*.img, symlinks not read", () => {
    const dir = Deno.makeTempDirSync({ prefix: "arch-criu-" });
    try {
      Deno.writeFileSync(`${dir}/pstree.img`, pstree);
      Deno.writeFileSync(`${dir}/core-1.img`, core);
      Deno.writeFileSync(`${dir}/pagemap-1.img`, pagemap);
      Deno.writeFileSync(`${dir}/pages-1.img`, new Uint8Array(3 * 4096));
      Deno.symlinkSync("/etc/passwd", `${dir}/core-7.img`);
      Deno.symlinkSync("/etc/passwd", `${dir}/pages-2.img`);
      const s = readCriuImages(dir)!;
      assertEquals(s.memoryBytes, 3 * 4096);
      assertEquals(s.processes.map((p) => [p.pid, p.comm, p.pages]), [[1, "workload", 103], [7, undefined, undefined]]);
      Deno.writeFileSync(`${dir}/pstree.img`, new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8, 200, 0, 0, 0, 1]));
      assertEquals(readCriuImages(dir)!.processes, [], "a damaged pstree: no tree, no exception");
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  });
});
