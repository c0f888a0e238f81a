/**
 * `arch finalize` at node scale, as a user meets it: N small ARCH containers (the workload
 * with 8 MiB) run through Docker with the runtime `arch` on the embedded engines; the spot
 * notice comes; `arch finalize` checkpoints and stops them all. Beside it, the floor at the
 * same parallelism: the same number of containers of the same image, checkpointed by raw
 * `runc checkpoint` (which stops them too) through a pool of the same size, then one `sync`.
 *
 * ARCH runs at ARCH_BENCH_FINALIZE_CONCURRENCY (default "auto": measured during the run); the
 * raw pool runs at the concurrency ARCH settled at.
 *
 * Reported per N (ARCH_BENCH_FINALIZE_COUNTS, default 50,100,200): the finalize time against
 * the raw time, how many checkpoints were committed (and how many in the first 30 s, what a
 * GCP/Azure notice would have saved) and how many failed or were not started by the deadline, and, for a sample of the keys (ARCH_BENCH_FINALIZE_RESUME, default 10;
 * "all" for every one), whether a new container of the key resumes (first tick = last + 1).
 * Requires root, the engines, CRIU and the built dist/.
 */

import { runcArgv } from "../../src/runc/client.ts";
import { ARCH, archDockerRun, startStack, uniqueName } from "../integration/_env.ts";
import { TEST_IMAGE } from "../harness/stack.ts";
import type { EmbeddedStack } from "../harness/stack.ts";
import { parseProgress } from "../integration/_workload.ts";
import { runCommand } from "../../src/process/exec.ts";
import { timed } from "./checkpoint.ts";
import type { BenchRecord } from "./report.ts";

type Emit = (name: string, value: number, unit: string, baseline: number, extra?: Partial<BenchRecord>) => void;

const MIB = 8;
/** The runc root of the stack's Docker containers (dockerd's `<exec-root>/runtime-runc/moby`). */
/** Docker's default runc root, as the node (the stack's mount namespace) names it. */
const DOCKER_RUNC_ROOT = "/var/run/docker/runtime-runc/moby";

/** Runs `fn` over `items` with at most `width` at once. */
async function pool<T>(items: readonly T[], width: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await fn(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(width, items.length) }, worker));
}

async function startMany(stack: EmbeddedStack, prefix: string, n: number, arch: boolean): Promise<string[]> {
  const names = Array.from({ length: n }, (_, i) => `${prefix}-${i}`);
  await pool(names, 4, async (name) => {
    await stack.docker([
      "run",
      "-d",
      "--name",
      name,
      "--network",
      "none",
      "--runtime",
      arch ? "arch" : "runc",
      ...(arch ? ["--env", "ARCH_ENABLE=1", "--env", `ARCH_CHECKPOINT_ID=${name}`] : []),
      TEST_IMAGE,
      "workload",
      "--mem",
      String(MIB),
      "--interval-ms",
      "200",
      "--verify-every",
      "0",
    ]);
  });
  // Every workload has filled its memory and ticks.
  for (const name of names) {
    for (let i = 0; i < 300; i++) {
      if (parseProgress((await stack.docker(["logs", name])).stdout).lastTick >= 1) break;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return names;
}

async function removeAll(stack: EmbeddedStack, names: readonly string[]): Promise<void> {
  for (let i = 0; i < names.length; i += 50) {
    await stack.docker(["rm", "-f", ...names.slice(i, i + 50)], { check: false });
  }
}

/** One N: ARCH finalize, then the raw floor, then the resume sample. */
async function oneCount(stack: EmbeddedStack, n: number, concurrency: string, emit: Emit): Promise<void> {
  const archNames = await startMany(stack, uniqueName(`fin${n}`), n, true);
  let out = "";
  const startedAt = Date.now();
  const archSeconds = await timed(async () => {
    const r = await stack.run({ cmd: ARCH, args: ["finalize", "--concurrency", concurrency] }, false);
    out = r.stdout + r.stderr;
  });
  await stack.run({ cmd: ARCH, args: ["finalize", "--undo"] }, false);
  const lines = out.split("\n");
  const committed = lines.filter((l) => l.startsWith("ok ")).length;
  // The summary line: "finalize: … not started …; concurrency 2→3→4 (auto)".
  const summary = lines.find((l) => l.startsWith("finalize: ")) ?? "";
  const ran = (summary.match(/concurrency ([\d→]+)/)?.[1] ?? concurrency).split("→").map(Number);
  const settled = ran.at(-1)!;
  const notStarted = Number(summary.match(/(\d+) not started/)?.[1] ?? "0");
  // Why checkpoints failed, each reason once (the key and the container differ, the cause not).
  const reasons = [...new Set(lines.filter((l) => l.startsWith("FAIL")).map((l) => l.replace(/^.*?key=\S+: /, "")))];
  // Each committed checkpoint's step timings, from its manifest: where the time goes.
  const steps: Record<string, number[]> = {};
  let within30 = 0; // committed in the first 30 s: what a GCP/Azure notice would have saved
  for (const l of lines.filter((l) => l.startsWith("ok "))) {
    try {
      const manifest = JSON.parse(Deno.readTextFileSync(`${l.split("-> ")[1]}/manifest.json`));
      for (const [k, v] of Object.entries(manifest.timings as Record<string, number>)) (steps[k] ??= []).push(v);
      if (Date.parse(manifest.createdAt) - startedAt <= 30_000) within30++;
    } catch { /* removed already: not counted */ }
  }
  const medianOf = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;
  const stepMedians = Object.fromEntries(Object.entries(steps).map(([k, v]) => [k, medianOf(v)]));
  const failed = lines.filter((l) => l.startsWith("FAIL")).length - notStarted;
  const lastTicks = new Map<string, number>();
  for (const name of archNames) {
    lastTicks.set(name, parseProgress((await stack.docker(["logs", name])).stdout).lastTick);
  }

  const rawNames = await startMany(stack, uniqueName(`raw${n}`), n, false);
  const ids = await Promise.all(
    rawNames.map(async (name) => (await stack.docker(["inspect", "-f", "{{.Id}}", name])).stdout.trim()),
  );
  const images = Deno.makeTempDirSync({ prefix: "arch-bench-raw-", dir: "/var/tmp" });
  let rawFailed = 0;
  const rawSeconds = await timed(async () => {
    await pool(ids, settled, async (id) => {
      const r = await stack.run({
        cmd: stack.engines.runc,
        args: runcArgv.checkpoint(
          { runc: stack.engines.runc, global: { root: DOCKER_RUNC_ROOT }, id },
          `${images}/${id}`,
          `${images}/${id}-w`,
          { leaveRunning: false },
        ),
      }, false);
      if (r.code !== 0 && rawFailed++ === 0) {
        console.error(`bench: raw runc checkpoint of ${id} failed: ${r.stderr.trim()}`);
      }
    });
    await runCommand({ cmd: "sync", args: [] });
  });
  Deno.removeSync(images, { recursive: true });
  await removeAll(stack, rawNames);

  // Resumable: a new container of each sampled key resumes where its checkpoint left off.
  const sampleEnv = Deno.env.get("ARCH_BENCH_FINALIZE_RESUME") ?? "10";
  const sample = sampleEnv === "all" ? archNames : archNames.slice(0, Number(sampleEnv));
  await removeAll(stack, archNames);
  let resumed = 0;
  for (const key of sample) {
    const name = `${key}-again`;
    await stack.docker(archDockerRun(name, key, [], ["workload"]), { check: false });
    for (let i = 0; i < 100; i++) {
      const p = parseProgress((await stack.docker(["logs", name], { check: false })).stdout);
      if (p.ticks.length > 0) {
        if (p.starts === 0 && p.firstTick === lastTicks.get(key)! + 1) resumed++;
        break;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  await removeAll(stack, sample.map((k) => `${k}-again`));

  emit(
    `finalize ${n} x ${MIB} MiB containers (arch finalize vs raw runc checkpoint + sync)`,
    archSeconds,
    "s",
    rawSeconds,
    {
      chart: "finalize",
      x: n,
      concurrency: ran.join("→"),
      rawConcurrency: settled,
      committed,
      committedWithin30s: within30,
      failed,
      notStarted,
      rawFailed,
      resumed: `${resumed}/${sample.length}`,
      stepMediansMs: stepMedians,
      failures: reasons.slice(0, 3),
    },
  );
  emit(`finalize ${n} containers against the 30 s notice (GCP/Azure)`, archSeconds, "s", 30, {
    target: 1,
    note: "baseline is the notice window, not a measurement",
  });
}

/** The finalize series: one figure per container count. */
export async function finalizeBench(counts: readonly number[], emit: Emit): Promise<void> {
  await using stack = await startStack();
  const concurrency = Deno.env.get("ARCH_BENCH_FINALIZE_CONCURRENCY") ?? "auto";
  for (const n of counts) await oneCount(stack, n, concurrency, emit);
}
