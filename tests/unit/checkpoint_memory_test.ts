/** src/checkpoint/memory.ts: the memory a checkpoint of a running container will hold. */
import { deepEqual as assertEquals, ok } from "node:assert/strict";
import { memoryToDump } from "../../src/checkpoint/memory.ts";

const MIB = 2 ** 20;

Deno.test("memoryToDump: this process's resident memory, undefined for a pid that does not exist", () => {
  const own = memoryToDump(Deno.pid);
  ok(own !== undefined && own > MIB, `own memory ${own}`);
  assertEquals(memoryToDump(2 ** 30), undefined);
});
