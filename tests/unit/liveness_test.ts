/** src/process/liveness.ts: a process named by pid and start time (field 22 of /proc/<pid>/stat). */
import { deepEqual as assertEquals, ok } from "node:assert/strict";
import { parseStartTime } from "../../src/process/liveness.ts";

Deno.test("parseStartTime reads field 22 whatever the command name holds", () => {
  const tail = "S 1 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 98765 1 2 3";
  assertEquals(parseStartTime(`42 (sleep) ${tail}`), 98765);
  assertEquals(parseStartTime(`42 (a ) b) (c) ${tail}`), 98765);
  assertEquals(parseStartTime(`42 (x)\n${tail}`), 98765);
  assertEquals(parseStartTime("42 (short) S 1 2"), undefined);
  assertEquals(parseStartTime("no parenthesis"), undefined);
  assertEquals(parseStartTime(`42 (x) ${tail.replace("98765", "-5")}`), undefined);
  const self = parseStartTime(Deno.readTextFileSync("/proc/self/stat"));
  ok(self !== undefined && self > 0);
});
