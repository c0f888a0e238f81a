/**
 * Downtime per migration: what a job loses when it moves, measured by the job itself.
 *
 * The workload ticks every 10 ms and stamps each tick line with CLOCK_REALTIME
 * (`workload --timestamps 1`, see ticks.ts); the first tick after a restore comes at most one
 * interval after the restored process's first instruction, so every figure here is an upper
 * bound, at most 10 ms above the true one. Host and container read the same clock.
 *
 * For each memory size (ARCH_BENCH_SIZES), ARCH_BENCH_ROUNDS repetitions, interleaved
 * (raw, ARCH, raw, ARCH...), same image, same machine, same run; medians are reported:
 * - ARCH, through the embedded Docker of the test stack: a container with a key ticks,
 *   `arch checkpoint` stops it, and a new `docker run --runtime arch` of the same key restores
 *   it. Downtime = from `docker run` to the new container's first tick; loss = from the old
 *   container's last tick to that first tick (checkpoint + restore + engine overhead).
 * - Raw floor, on a plain bundle of the same image (makeLab/makeBundle): `runc checkpoint` +
 *   `sync`, then `runc restore -d`. Downtime = from `runc restore` to the first tick; loss =
 *   from the last tick to the first tick.
 * A repetition whose new container started fresh instead of restoring fails the bench (a fresh
 * start would look like a tiny downtime). Requires root, the engines, CRIU and the built dist/.
 */

import { runcArgv } from "../../src/runc/client.ts";
import { archCli, archDockerRun, eventually, startStack, uniqueName } from "../integration/_env.ts";
import { fullId, parseProgress } from "../integration/_workload.ts";
import type { EmbeddedStack } from "../harness/stack.ts";
import { mustRun } from "../../src/process/exec.ts";
import {
  type Lab,
  labTarget,
  makeBundle,
  makeLab,
  rawRestoreArgs,
  removeContainer,
  timed,
  unmountBundle,
} from "./checkpoint.ts";
import { DOWNTIME_INTERVAL_MS, median, type TimedTick, timedTicks } from "./ticks.ts";
import type { BenchRecord } from "./report.ts";

type Emit = (name: string, value: number, unit: string, baseline: number, extra?: Partial<BenchRecord>) => void;

/** One migration's figures, in milliseconds. */
interface Migration {
  readonly downtimeMs: number;
  readonly lossMs: number;
  /** The first tick after the restore is the last one before the checkpoint + 1. */
  readonly inOrder: boolean;
  /** When `runc restore -d` / `docker run -d` returned, from its start. */
  readonly commandMs: number;
  /** ARCH only: the `arch checkpoint` command's wall time. */
  readonly checkpointMs?: number;
}

/** How many ticks a workload shows (its memory filled) before it is checkpointed. */
const TICKS_BEFORE = 5;

const workloadArgs = (mib: number) => [
  "workload",
  "--mem",
  String(mib),
  "--interval-ms",
  String(DOWNTIME_INTERVAL_MS),
  "--verify-every",
  "0",
  "--timestamps",
  "1",
];

/** A child's output, collected as it arrives (read in-process: no polling of another program). */
class Collected {
  text = "";
  constructor(stream: ReadableStream<Uint8Array>) {
    const dec = new TextDecoder();
    (async () => {
      for await (const chunk of stream) this.text += dec.decode(chunk, { stream: true });
    })().catch(() => {});
  }
  /** The first tick collected, once there is one. */
  firstTick(what: string, timeoutMs = 60_000): Promise<TimedTick> {
    return eventually(what, () => timedTicks(this.text)[0], timeoutMs);
  }
}

/** Raw floor: runc checkpoint + sync, then runc restore -d of the same bundle. */
async function rawMigration(lab: Lab, runc: string, mib: number, n: number): Promise<Migration> {
  const id = `down-raw-${mib}-${n}`;
  const bundle = await makeBundle(lab, id, mib, id);
  const images = `${lab.dir}/${id}-img`;
  try {
    const spec = JSON.parse(Deno.readTextFileSync(`${bundle}/config.json`));
    spec.process.args = workloadArgs(mib);
    Deno.writeTextFileSync(`${bundle}/config.json`, JSON.stringify(spec));
    // runc create leaves our pipes as the container's stdout (a host file would make CRIU refuse the dump).
    const create = new Deno.Command(runc, {
      args: runcArgv.create(labTarget(lab, id), bundle, `${bundle}/pid`),
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const before = new Collected(create.stdout);
    const createErr = new Collected(create.stderr);
    if (!(await create.status).success) throw new Error(`runc create ${id}: ${createErr.text}`);
    await mustRun({ cmd: runc, args: runcArgv.start(labTarget(lab, id)) });
    await eventually(`${id} ticking`, () => timedTicks(before.text).length >= TICKS_BEFORE || undefined, 120_000);
    await mustRun({
      cmd: runc,
      args: runcArgv.checkpoint(labTarget(lab, id), images, `${images}-w`, { leaveRunning: false }),
    });
    await mustRun({ cmd: "sync", args: ["--file-system", images] });
    const t0 = Date.now();
    const restore = new Deno.Command(runc, {
      args: rawRestoreArgs(lab, bundle, images, id),
      stdin: "null",
      stdout: "piped", // the restored process keeps it: its ticks come to us
      stderr: "piped",
    }).spawn();
    const after = new Collected(restore.stdout);
    const restoreErr = new Collected(restore.stderr);
    if (!(await restore.status).success) throw new Error(`runc restore ${id}: ${restoreErr.text}`);
    const commandMs = Date.now() - t0;
    const first = await after.firstTick(`${id} restored ticking`);
    const last = timedTicks(before.text).at(-1)!;
    return {
      downtimeMs: first.atMs - t0,
      lossMs: first.atMs - last.atMs,
      inOrder: first.tick === last.tick + 1,
      commandMs,
    };
  } finally {
    await removeContainer(lab, id);
    await unmountBundle(bundle);
    for (const d of [images, `${images}-w`, `${images}-rw`]) await Deno.remove(d, { recursive: true }).catch(() => {});
  }
}

/** The timestamped ticks in the Docker logs of `name`, once `enough` says they are there. */
const dockerTicks = (stack: EmbeddedStack, name: string, enough: (logs: string) => boolean) =>
  eventually(`${name} ticking`, async () => {
    const logs = (await stack.docker(["logs", name], { check: false })).stdout;
    return enough(logs) ? logs : undefined;
  }, 120_000);

/** ARCH: arch checkpoint of a Docker container, then docker run of a new container of the same key. */
async function archMigration(stack: EmbeddedStack, mib: number): Promise<Migration> {
  const key = uniqueName(`down${mib}`);
  const [old, next] = [`${key}-a`, `${key}-b`];
  try {
    await stack.docker(archDockerRun(old, key, [], workloadArgs(mib)));
    await dockerTicks(stack, old, (logs) => timedTicks(logs).length >= TICKS_BEFORE);
    const id = await fullId(stack, old);
    let out = "";
    const checkpointS = await timed(async () => {
      const r = await archCli(stack, ["checkpoint", id]);
      out = r.stdout + r.stderr;
      if (r.code !== 0) throw new Error(`arch checkpoint ${old}: ${out}`);
    });
    const t0 = Date.now();
    await stack.docker(archDockerRun(next, key, [], workloadArgs(mib)));
    const commandMs = Date.now() - t0;
    // The tick carries its own time: polling after `docker run` returned does not change the figure.
    const logs = await dockerTicks(stack, next, (l) => timedTicks(l).length > 0);
    if (parseProgress(logs).starts !== 0) throw new Error(`${next} started fresh instead of restoring: ${out}`);
    const first = timedTicks(logs)[0]!;
    const last = timedTicks((await stack.docker(["logs", old])).stdout).at(-1)!;
    return {
      downtimeMs: first.atMs - t0,
      lossMs: first.atMs - last.atMs,
      inOrder: first.tick === last.tick + 1,
      commandMs,
      checkpointMs: checkpointS * 1000,
    };
  } finally {
    await stack.docker(["rm", "-f", old, next], { check: false });
  }
}

/** The downtime series: per memory size, ARCH's downtime and loss against the raw floor's. */
export async function downtimeBench(sizes: readonly number[], rounds: number, emit: Emit): Promise<void> {
  await using stack = await startStack();
  const lab = await makeLab();
  try {
    for (const mib of sizes) {
      const raw: Migration[] = [], arch: Migration[] = [];
      for (let n = 0; n < rounds; n++) {
        raw.push(await rawMigration(lab, stack.engines.runc, mib, n));
        arch.push(await archMigration(stack, mib));
      }
      const s = (ms: number) => ms / 1000;
      const runs = (ms: Migration[], k: "downtimeMs" | "lossMs" | "commandMs") => ms.map((m) => Math.round(m[k]));
      const inOrder = (ms: Migration[]) => `${ms.filter((m) => m.inOrder).length}/${ms.length}`;
      const bound =
        `upper bound: the first tick comes at most ${DOWNTIME_INTERVAL_MS} ms after the restored process resumes`;
      emit(
        `downtime ${mib} MiB (docker run of the new container to its first tick, vs runc restore -d to its first tick)`,
        s(median(arch.map((m) => m.downtimeMs))),
        "s",
        s(median(raw.map((m) => m.downtimeMs))),
        {
          rounds,
          chart: "downtime",
          x: mib,
          intervalMs: DOWNTIME_INTERVAL_MS,
          archRunsMs: runs(arch, "downtimeMs"),
          rawRunsMs: runs(raw, "downtimeMs"),
          // when docker run -d / runc restore -d returned: the first tick comes after it, not before
          archCommandMs: runs(arch, "commandMs"),
          rawCommandMs: runs(raw, "commandMs"),
          note: bound,
        },
      );
      emit(
        `loss per migration ${mib} MiB (last tick before arch checkpoint to first tick after docker run, vs runc checkpoint + sync + runc restore -d)`,
        s(median(arch.map((m) => m.lossMs))),
        "s",
        s(median(raw.map((m) => m.lossMs))),
        {
          rounds,
          x: mib,
          intervalMs: DOWNTIME_INTERVAL_MS,
          archCheckpointMedianMs: Math.round(median(arch.map((m) => m.checkpointMs!))),
          archRunsMs: runs(arch, "lossMs"),
          rawRunsMs: runs(raw, "lossMs"),
          resumedAtNextTick: { arch: inOrder(arch), raw: inOrder(raw) },
          note:
            `${bound}; the last tick before the checkpoint came at most ${DOWNTIME_INTERVAL_MS} ms before the freeze`,
        },
      );
    }
  } finally {
    await new Deno.Command("sh", {
      args: ["-c", `grep -o '${lab.dir}[^ ]*' /proc/self/mountinfo | xargs -r -n1 umount -l`],
    }).output();
    if (Deno.env.get("ARCH_BENCH_KEEP") !== "1") await Deno.remove(lab.dir, { recursive: true }).catch(() => {});
  }
}
