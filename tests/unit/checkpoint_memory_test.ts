/** src/checkpoint/memory.ts: the memory a checkpoint of a running container will hold. */
import { deepEqual as assertEquals, ok } from "node:assert/strict";
import { deletedOpenBytes, memoryToDump } from "../../src/checkpoint/memory.ts";

const MIB = 2 ** 20;

Deno.test("memoryToDump: this process's resident memory, undefined for a pid that does not exist", () => {
  const own = memoryToDump(Deno.pid);
  ok(own !== undefined && own > MIB, `own memory ${own}`);
  assertEquals(memoryToDump(2 ** 30), undefined);
});

Deno.test("deletedOpenBytes: the files a process holds open after deleting them, each up to the limit, once", () => {
  const dir = Deno.makeTempDirSync();
  const small = Deno.openSync(`${dir}/small`, { create: true, write: true, read: true });
  const again = Deno.openSync(`${dir}/small`, { read: true });
  const big = Deno.openSync(`${dir}/big`, { create: true, write: true });
  try {
    small.writeSync(new Uint8Array(3000));
    big.writeSync(new Uint8Array(9000));
    const before = deletedOpenBytes(Deno.pid, 5000);
    Deno.removeSync(`${dir}/small`);
    Deno.removeSync(`${dir}/big`);
    assertEquals(deletedOpenBytes(Deno.pid, 5000) - before, 3000); // small once (two fds), big over the limit
  } finally {
    small.close(), again.close(), big.close();
    Deno.removeSync(dir, { recursive: true });
  }
});
