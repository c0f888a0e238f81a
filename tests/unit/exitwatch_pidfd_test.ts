/** src/exitwatch/pidfd.ts: decoding a wait status into an exit code and signal. */

import { deepEqual as assertEquals } from "node:assert/strict";
import { decodeWaitStatus } from "../../src/exitwatch/pidfd.ts";

Deno.test("decodeWaitStatus", () => {
  assertEquals(decodeWaitStatus(0), { code: 0 });
  assertEquals(decodeWaitStatus(3 << 8), { code: 3 });
  assertEquals(decodeWaitStatus(9), { code: 137, signal: 9 });
  assertEquals(decodeWaitStatus(15 | 0x80), { code: 143, signal: 15 }); // core dump flag
});
