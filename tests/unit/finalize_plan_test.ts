import { deepEqual as assertEquals, ok } from "node:assert/strict";
import {
  CheckpointEstimator,
  ConcurrencyController,
  orderForDeadline,
  PRIOR_FIXED_MS,
  PRIOR_RATE_BYTES_PER_MS,
} from "../../src/checkpoint/finalize_plan.ts";

const MIB = 2 ** 20;

Deno.test("estimator: priors first, then the medians of what 3 completed checkpoints measured", () => {
  const e = new CheckpointEstimator();
  assertEquals(e.estimateMs(200 * MIB), PRIOR_FIXED_MS + (200 * MIB) / PRIOR_RATE_BYTES_PER_MS);
  e.observe(512 * MIB, 2600, 2000);
  e.observe(8 * MIB, 1500, 1200);
  assertEquals(e.fixedMs(), PRIOR_FIXED_MS, "two samples are not enough");
  // 512 MiB dumped in 2 s, three times: the rate; small ones tell the fixed part, without their layer capture.
  e.observe(512 * MIB, 2600, 2000);
  e.observe(512 * MIB, 2600, 2000);
  for (let i = 0; i < 5; i++) e.observe(8 * MIB, 1700, 1200, 200);
  assertEquals(e.rate(), (512 * MIB) / 2000);
  ok(Math.abs(e.fixedMs() - (1500 - (8 * MIB) / e.rate())) < 1, `fixed ${e.fixedMs()}`);
  ok(e.estimateMs(2048 * MIB) > e.estimateMs(8 * MIB));
});

Deno.test("estimator: one odd container cannot make the others look too long to start", () => {
  const e = new CheckpointEstimator();
  // A 5 GiB writable layer: 20 s in all, of which 19 s capturing the layer, 300 ms in CRIU.
  e.observe(8 * MIB, 20_000, 300, 19_000);
  for (let i = 0; i < 3; i++) e.observe(8 * MIB, 900, 500, 20);
  ok(e.fixedMs() < 1000, `fixed ${e.fixedMs()}`);
  // A stalled disk: every checkpoint took minutes; the estimate stays within 8 × the prior.
  const stalled = new CheckpointEstimator();
  for (let i = 0; i < 5; i++) stalled.observe(8 * MIB, 300_000, 299_000);
  ok(stalled.fixedMs() <= PRIOR_FIXED_MS * 8);
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
  ok(last.every((n) => n >= 3 && n <= 5), `settles near the best (4): ${last.join(",")}`);
  ok(c.history.every((h) => h.concurrency >= 1 && h.concurrency <= c.max));
});

Deno.test("concurrency: a fixed number never changes", () => {
  const c = new ConcurrencyController(2, 3, () => 0);
  for (let i = 0; i < 50; i++) c.completed(1);
  assertEquals(c.current, 3);
  assertEquals(c.history.length, 1);
});
