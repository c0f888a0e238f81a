import { deepEqual as assertEquals, ok as assert } from "node:assert/strict";
import {
  CheckpointEstimator,
  ConcurrencyController,
  containerMemory,
  orderForDeadline,
  PRIOR_FIXED_MS,
  PRIOR_RATE_BYTES_PER_MS,
} from "../../src/engine/finalize_plan.ts";

const MIB = 2 ** 20;

Deno.test("estimator: priors first, then what completed checkpoints measured", () => {
  const e = new CheckpointEstimator();
  assertEquals(e.estimateMs(200 * MIB), PRIOR_FIXED_MS + (200 * MIB) / PRIOR_RATE_BYTES_PER_MS);
  // 512 MiB dumped in 2 s: the rate; small ones tell the fixed part.
  e.observe(512 * MIB, 2600, 2000);
  for (let i = 0; i < 5; i++) e.observe(8 * MIB, 1500, 1200);
  assertEquals(e.rate(), (512 * MIB) / 2000);
  assert(Math.abs(e.fixedMs() - (1500 - (8 * MIB) / e.rate())) < 1);
  assert(e.estimateMs(2048 * MIB) > e.estimateMs(8 * MIB));
});

Deno.test("ordering: most time at risk per estimated second first, cheaper first on ties", () => {
  const e = new CheckpointEstimator();
  const items = [
    { item: "big-old", memoryBytes: 2048 * MIB, atRiskSeconds: 3600 },
    { item: "small-old", memoryBytes: 8 * MIB, atRiskSeconds: 3600 },
    { item: "small-new", memoryBytes: 8 * MIB, atRiskSeconds: 10 },
    { item: "mid-old", memoryBytes: 512 * MIB, atRiskSeconds: 3600 },
    { item: "tie-cheaper", memoryBytes: 4 * MIB, atRiskSeconds: 0 },
    { item: "tie-dearer", memoryBytes: 64 * MIB, atRiskSeconds: 0 },
  ];
  assertEquals(
    orderForDeadline(items, e).map((i) => i.item),
    ["small-old", "mid-old", "big-old", "small-new", "tie-cheaper", "tie-dearer"],
  );
});

Deno.test("concurrency: climbs while the measured rate improves, turns back when it falls, stays in bounds", () => {
  let now = 0;
  const c = new ConcurrencyController(2, undefined, () => now);
  assertEquals(c.current, 2);
  // Throughput as a function of concurrency: best at 4.
  const perMs = (n: number) => [0, 1, 1.8, 2.4, 2.6, 2.2, 1.8][n]! / 1000;
  for (let round = 0; round < 40; round++) {
    const n = c.current;
    const window = Math.max(4, 2 * n);
    for (let i = 0; i < window; i++) {
      now += 1000 / (perMs(n) * 1000);
      c.completed(1);
    }
  }
  const last = c.history.slice(-6).map((h) => h.concurrency);
  assert(last.every((n) => n >= 3 && n <= 5), `settles near the best (4): ${last.join(",")}`);
  assert(c.history.every((h) => h.concurrency >= 1 && h.concurrency <= c.max));
});

Deno.test("concurrency: a fixed number never changes", () => {
  const c = new ConcurrencyController(2, 3, () => 0);
  for (let i = 0; i < 50; i++) c.completed(1);
  assertEquals(c.current, 3);
  assertEquals(c.history.length, 1);
});

Deno.test("containerMemory: this process's resident memory, undefined for a pid that does not exist", () => {
  const own = containerMemory(Deno.pid);
  assert(own !== undefined && own > MIB, `own memory ${own}`);
  assertEquals(containerMemory(2 ** 30), undefined);
});
