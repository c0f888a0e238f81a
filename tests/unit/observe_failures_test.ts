/** src/observe/failures.ts: each key's last failed checkpoint or restore, read back from the events file. */
import { deepEqual as assertEquals } from "node:assert/strict";
import { lastFailures, readLastFailures } from "../../src/observe/failures.ts";

const line = (e: Record<string, unknown>) => JSON.stringify({ time: "t", scope: "moby", namespace: "moby", ...e });

Deno.test("the last failure of each key; successes and finalize records are not failures", () => {
  const text = [
    '{"kind":"checkpoint","result":"ok","scope":"moby","key":"half-a-line-cut-by-the-tail', // the tail's first line
    line({ kind: "checkpoint", result: "failed", key: "a", error: "first", code: "checkpoint-dump", time: "1" }),
    line({ kind: "checkpoint", result: "failed", key: "a", error: "second", code: "checkpoint-size", time: "2" }),
    line({ kind: "checkpoint", result: "ok", key: "b" }),
    line({ kind: "restore", result: "refused", key: "c", error: "no secret", code: "restore-refused", time: "3" }),
    line({ kind: "finalize", result: "failed", containers: { failed: 1 } }),
    "not json",
  ].join("\n");
  const f = lastFailures(text);
  assertEquals([...f.keys()], ["moby/a", "moby/c"]);
  assertEquals([f.get("moby/a")?.error, f.get("moby/a")?.code, f.get("moby/c")?.result], [
    "second",
    "checkpoint-size",
    "refused",
  ]);
});

Deno.test("no events file, or events turned off: no failure, no error", () => {
  assertEquals(readLastFailures("").size, 0);
  assertEquals(readLastFailures("/nonexistent/events.jsonl").size, 0);
});
