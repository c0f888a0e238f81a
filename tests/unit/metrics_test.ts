/**
 * The node's metrics: counting and histograms (pure), the Prometheus text, a damaged state
 * file, counters that survive separate processes writing at the same time, symlinks planted in
 * the textfile directory (never followed), and a lock held elsewhere (the update is skipped
 * within ~100 ms and counted, the event still written).
 */

import { deepEqual as assertEquals, ok } from "node:assert/strict";
import {
  applyEvent,
  emptyState,
  type MetricsState,
  parseState,
  recordMetrics,
  renderProm,
} from "../../src/observe/metrics.ts";
import { recordEvent } from "../../src/observe/events.ts";

Deno.test("metrics: counters and histograms", async (t) => {
  await t.step("a checkpoint counts by result and observes duration and size when it succeeded", () => {
    let s: MetricsState = emptyState();
    s = applyEvent(s, { kind: "checkpoint", result: "ok", durationMs: 1500, bytes: 100 << 20 });
    s = applyEvent(s, { kind: "checkpoint", result: "failed", durationMs: 300 });
    assertEquals(s.checkpoints, { ok: 1, failed: 1 });
    assertEquals([s.checkpointSeconds.count, s.checkpointSeconds.sum], [1, 1.5]);
    // cumulative buckets: 1.5 s is above 1 and within 2.5
    const le = (b: number) => s.checkpointSeconds.counts[s.checkpointSeconds.bounds.indexOf(b)];
    assertEquals([le(1), le(2.5), le(300)], [0, 1, 1]);
    assertEquals(s.checkpointBytes.count, 1);
  });
  await t.step("restores count every result; finalize keeps the last one", () => {
    let s = emptyState();
    for (const result of ["ok", "ok", "refused", "failed"]) {
      s = applyEvent(s, { kind: "restore", result, durationMs: 400 });
    }
    assertEquals(s.restores, { ok: 2, refused: 1, failed: 1 });
    assertEquals(s.restoreSeconds.count, 2);
    s = applyEvent(s, { kind: "finalize", result: "ok", durationMs: 3000, containers: { ok: 3, failed: 0 }, at: 5000 });
    assertEquals(s.lastFinalize, { timestamp: 5, durationSeconds: 3, containers: { ok: 3, failed: 0 } });
  });
  await t.step("a result label that is not a plain word is counted as other (no label injection)", () => {
    const s = applyEvent(emptyState(), { kind: "checkpoint", result: 'x"} 1\nevil{a="' });
    assertEquals(s.checkpoints, { other: 1 });
  });
});

Deno.test("metrics: Prometheus text format", () => {
  let s = emptyState();
  s = applyEvent(s, { kind: "checkpoint", result: "ok", durationMs: 200, bytes: 1 << 20 });
  s = applyEvent(s, { kind: "finalize", result: "ok", durationMs: 1200, containers: { ok: 1 }, at: 1_700_000_000_000 });
  const text = renderProm(s);
  for (
    const line of [
      "# TYPE arch_checkpoints_total counter",
      'arch_checkpoints_total{result="failed"} 0',
      'arch_checkpoints_total{result="ok"} 1',
      'arch_restores_total{result="ok"} 0',
      "# TYPE arch_checkpoint_duration_seconds histogram",
      'arch_checkpoint_duration_seconds_bucket{le="0.25"} 1',
      'arch_checkpoint_duration_seconds_bucket{le="+Inf"} 1',
      "arch_checkpoint_duration_seconds_sum 0.2",
      "arch_checkpoint_duration_seconds_count 1",
      'arch_checkpoint_bytes_bucket{le="16777216"} 1',
      "arch_last_finalize_timestamp_seconds 1700000000",
      "arch_last_finalize_duration_seconds 1.2",
      'arch_last_finalize_containers{result="failed"} 0',
      'arch_last_finalize_containers{result="ok"} 1',
    ]
  ) ok(text.split("\n").includes(line), `missing ${line}:\n${text}`);
  ok(text.endsWith("\n"));
  // every sample line is "name{labels} value" or "name value"
  for (const line of text.split("\n").filter((l) => l && !l.startsWith("#"))) {
    ok(/^[a-z_]+(\{[a-z]+="[^"]*"\})? [0-9.e+-]+$/.test(line), line);
  }
});

Deno.test("metrics: a damaged or foreign state file starts from zero, a valid one is kept", () => {
  assertEquals(parseState("not json"), emptyState());
  assertEquals(parseState(JSON.stringify({ version: 9 })), emptyState());
  const s = applyEvent(emptyState(), { kind: "restore", result: "ok", durationMs: 10 });
  assertEquals(parseState(JSON.stringify(s)), s);
});

Deno.test("metrics: separate processes recording at once lose no count; files are 0600 and 0644", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "arch-metrics-" });
  try {
    const state = `${dir}/run`;
    const prom = `${dir}/metrics/arch.prom`;
    const module = new URL("../../src/observe/metrics.ts", import.meta.url).href;
    const script = `import { recordMetrics } from "${module}";\n` +
      `for (let i = 0; i < 25; i++) recordMetrics(${JSON.stringify(state)}, ${JSON.stringify(prom)}, ` +
      `{ kind: "checkpoint", result: "ok", durationMs: 100, bytes: 1 }, 10_000);\n`;
    const writers = Array.from(
      { length: 4 },
      () => new Deno.Command(Deno.execPath(), { args: ["eval", script], stdout: "null", stderr: "piped" }).output(),
    );
    for (const out of await Promise.all(writers)) assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
    recordMetrics(state, prom, { kind: "restore", result: "ok", durationMs: 50 });
    const text = Deno.readTextFileSync(prom);
    ok(text.includes('arch_checkpoints_total{result="ok"} 100\n'), text);
    ok(text.includes('arch_restores_total{result="ok"} 1\n'), text);
    ok(text.includes("arch_metrics_skipped_total 0\n"), text);
    assertEquals(Deno.statSync(`${state}/metrics.json`).mode! & 0o777, 0o600);
    assertEquals(Deno.statSync(prom).mode! & 0o777, 0o644);
    assertEquals([...Deno.readDirSync(`${dir}/metrics`)].map((e) => e.name), ["arch.prom"], "no temp file left");
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("events: one JSON line per event, file 0600; an unwritable target never throws", () => {
  const dir = Deno.makeTempDirSync({ prefix: "arch-events-" });
  try {
    const targets = { stateDir: `${dir}/run`, metricsFile: "", eventsFile: `${dir}/log/events.jsonl` };
    recordEvent(targets, { kind: "checkpoint", result: "ok", id: "c1", key: "k", bytes: 5, durationMs: 7 });
    recordEvent(targets, { kind: "restore", result: "failed", id: "c2", key: "k", error: "bad" });
    const lines = Deno.readTextFileSync(targets.eventsFile).trimEnd().split("\n").map((l) => JSON.parse(l));
    assertEquals(lines.map((l) => [l.kind, l.result, l.id]), [["checkpoint", "ok", "c1"], ["restore", "failed", "c2"]]);
    ok(typeof lines[0].time === "string" && !Number.isNaN(Date.parse(lines[0].time)));
    assertEquals(Deno.statSync(targets.eventsFile).mode! & 0o777, 0o600);
    // a file where a directory should be: nothing thrown, nothing written
    Deno.writeTextFileSync(`${dir}/blocker`, "");
    recordEvent({
      stateDir: `${dir}/blocker/run`,
      metricsFile: `${dir}/blocker/m.prom`,
      eventsFile: `${dir}/blocker/e`,
    }, {
      kind: "checkpoint",
      result: "ok",
    });
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("metrics: symlinks planted in the textfile directory are never followed", () => {
  const dir = Deno.makeTempDirSync({ prefix: "arch-metrics-link-" });
  try {
    const victim = `${dir}/victim`;
    Deno.writeTextFileSync(victim, "root's file\n");
    Deno.chmodSync(victim, 0o600);
    Deno.mkdirSync(`${dir}/textfile`);
    Deno.chmodSync(`${dir}/textfile`, 0o777); // as writable as a careless textfile directory
    const prom = `${dir}/textfile/arch.prom`;
    // the temp name of earlier versions, and the final name
    Deno.symlinkSync(victim, `${prom}.${Deno.pid}.tmp`);
    Deno.symlinkSync(victim, prom);
    recordMetrics(`${dir}/run`, prom, { kind: "checkpoint", result: "ok", durationMs: 10 });
    assertEquals(Deno.readTextFileSync(victim), "root's file\n", "the victim's bytes are untouched");
    assertEquals(Deno.statSync(victim).mode! & 0o777, 0o600, "and its mode");
    ok(!Deno.lstatSync(prom).isSymlink, "the final name's symlink is replaced by the metrics file");
    ok(Deno.readTextFileSync(prom).includes('arch_checkpoints_total{result="ok"} 1\n'));
    assertEquals(Deno.statSync(prom).mode! & 0o777, 0o644);
    ok(Deno.lstatSync(`${prom}.${Deno.pid}.tmp`).isSymlink, "the planted old temp name is left alone");
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("metrics: a lock held by another process: recording returns within ~200 ms, skipped and counted", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "arch-metrics-lock-" });
  const state = `${dir}/run`;
  Deno.mkdirSync(state, { mode: 0o700 });
  const holder = new Deno.Command(Deno.execPath(), {
    args: [
      "eval",
      `const f = Deno.openSync(${
        JSON.stringify(`${state}/metrics.lock`)
      }, { read: true, write: true, create: true });` +
      `f.lockSync(true); console.log("locked"); await new Promise((r) => setTimeout(r, 30_000));`,
    ],
    stdout: "piped",
    stderr: "null",
  }).spawn();
  try {
    const reader = holder.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let said = "";
    while (!said.includes("locked")) said += (await reader.read()).value ?? "";
    reader.releaseLock();
    const targets = { stateDir: state, metricsFile: `${dir}/m/arch.prom`, eventsFile: `${dir}/log/events.jsonl` };
    const started = performance.now();
    recordEvent(targets, { kind: "restore", result: "ok", durationMs: 5 });
    const ms = performance.now() - started;
    ok(ms < 200, `took ${ms.toFixed(0)} ms`);
    ok(ms >= 90, `gave up after ${ms.toFixed(0)} ms, before ~100 ms of tries`);
    assertEquals(Deno.readTextFileSync(targets.eventsFile).trim().split("\n").length, 1, "the event is written");
    ok(!existsSync(`${state}/metrics.json`), "the counters are not touched without the lock");
    holder.kill("SIGKILL");
    await holder.status;
    recordMetrics(state, targets.metricsFile, { kind: "restore", result: "ok", durationMs: 5 });
    const text = Deno.readTextFileSync(targets.metricsFile);
    ok(text.includes("arch_metrics_skipped_total 1\n"), text);
    ok(text.includes('arch_restores_total{result="ok"} 1\n'), text);
  } finally {
    try {
      holder.kill("SIGKILL");
    } catch { /* already gone */ }
    await holder.stdout.cancel().catch(() => {});
    await holder.status;
    Deno.removeSync(dir, { recursive: true });
  }
});

function existsSync(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch {
    return false;
  }
}
