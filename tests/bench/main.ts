/**
 * `deno task bench`: what ARCH costs, measured against bare runc in the same run.
 * Prints one JSON object per figure: {"name","value","unit","baseline","ratio"}, where
 * baseline is bare runc's value for the same operation (or the stated target). Never
 * asserts times. Runs are interleaved (runc, arch, runc, arch...) so that machine noise
 * hits both alike; medians are reported.
 *
 * Figures: per-call cost of `runc state`; a create/start/delete cycle through containerd;
 * checkpoint and restore of 64 and 512 MiB workloads; `arch finalize` of N containers in
 * parallel versus one at a time; the node exit watcher's memory with 1 and N watched
 * processes (N = ARCH_BENCH_WATCHED, default 200) and its hand-off latency; checkpoint and
 * restore of the 512 MiB workload through a shared file system (sshfs over SFTP on loopback)
 * versus local disk, and the bytes written (ARCH_BENCH_SHAREDFS_ROUNDS rounds, default 2); the
 * downtime per migration (docker run of the new container to its first tick, and the job's whole
 * loss from its last tick to its first) against raw `runc restore` for the ARCH_BENCH_SIZES
 * (downtime.ts). ARCH_BENCH_ROUNDS scales the repetitions.
 * `deno task bench <overhead|checkpoint|exit-watcher|sharedfs|finalize|downtime>[,...]` runs those parts only.
 * Requires root and the built dist/ (scripts/run bench does both).
 */

import { runcArgv } from "../../src/runc/client.ts";
import { ARCH, ARCH_RUNC, RUNC, startStack } from "../integration/_env.ts";
import {
  archRound,
  makeBundle,
  makeLab,
  rawRound,
  removeContainer,
  startWorkload,
  timed,
  unmountBundle,
} from "./checkpoint.ts";
import { mustRun } from "../../src/process/exec.ts";
import { exitWatcherBench } from "./exit_watcher.ts";
import { sharedFsBench } from "./sharedfs.ts";
import { finalizeBench } from "./finalize.ts";
import { downtimeBench } from "./downtime.ts";
import { type BenchRecord, renderReport } from "./report.ts";
import { ROOT } from "../integration/_env.ts";

const CTR_IMAGE = "docker.io/library/arch-test:latest";

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

const round = (x: number) => Math.round(x * 1000) / 1000;

/** The memory sizes (MiB) of the checkpoint, restore and downtime figures. */
const sizes = (Deno.env.get("ARCH_BENCH_SIZES") ?? "64,512,2048").split(",").map(Number);

/** Every figure of this run, for the report. */
const records: BenchRecord[] = [];

/** Prints one figure as a JSON line (and keeps it for the report). */
export function emit(name: string, value: number, unit: string, baseline: number, extra: Record<string, unknown> = {}) {
  const record = {
    name,
    value: round(value),
    unit,
    baseline: round(baseline),
    ratio: round(value / baseline),
    ...extra,
  };
  records.push(record);
  console.log(JSON.stringify(record));
}

/** Writes this run's JSON lines and the HTML report under `.cache/bench/`; returns the report's path. */
async function writeReport(): Promise<string> {
  const dir = `${ROOT}/.cache/bench`;
  Deno.mkdirSync(dir, { recursive: true });
  const version = async (
    cmd: string,
  ) => (await new Deno.Command(cmd, { args: ["--version"], stdout: "piped", stderr: "null" }).output().then(
    (o) => new TextDecoder().decode(o.stdout).split("\n")[0]!,
    () => "not found",
  ));
  const about = {
    date: new Date().toISOString(),
    machine: `${navigator.hardwareConcurrency} CPUs, ${
      (Deno.systemMemoryInfo().total / 2 ** 30).toFixed(0)
    } GiB, Linux ${Deno.osRelease()}`,
    runc: await version(RUNC),
    criu: await version("criu"),
    command: `deno task bench ${Deno.args.join(" ")}`.trim(),
  };
  Deno.writeTextFileSync(`${dir}/results.jsonl`, records.map((r) => JSON.stringify(r)).join("\n") + "\n");
  Deno.writeTextFileSync(`${dir}/report.html`, renderReport(records, about));
  return `${dir}/report.html`;
}

async function timeMs(fn: () => Promise<void>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

async function must(cmd: string, args: string[], env: Record<string, string> = {}): Promise<void> {
  const out = await new Deno.Command(cmd, { args, env, stdout: "null", stderr: "piped" }).output();
  if (!out.success) throw new Error(`${cmd} ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
}

async function wrapperOverhead(rounds: number): Promise<void> {
  await using stack = await startStack();
  const env = { ARCH_CONFIG: stack.archConfig };
  const id = `bench-${crypto.randomUUID().slice(0, 8)}`;
  await stack.ctr(["run", "-d", CTR_IMAGE, id, "workload"]);
  // runc state needs no mount namespace: the host path of the node's root is the same directory.
  const stateArgs = runcArgv.state({
    runc: RUNC,
    global: { root: stack.hostPath("/run/containerd/runc/default") },
    id,
  });
  const bare: number[] = [], wrapped: number[] = [];
  for (let i = 0; i < rounds; i++) {
    bare.push(await timeMs(() => must(RUNC, stateArgs)));
    wrapped.push(await timeMs(() => must(ARCH_RUNC, stateArgs, env)));
  }
  emit("runc state per call", median(wrapped), "ms", median(bare), { rounds });
  emit("runc state overhead per call", median(wrapped) - median(bare), "ms", 25, {
    note: "baseline is the 25 ms target",
  });
  await stack.ctr(["tasks", "kill", "--signal", "SIGKILL", id]);

  const cycle = async (extra: string[]) => {
    const cid = `cyc-${crypto.randomUUID().slice(0, 8)}`;
    return await timeMs(async () => {
      await stack.ctr(["run", "--rm", ...extra, CTR_IMAGE, cid, "true"]);
    });
  };
  const cycles = Math.max(5, Math.floor(rounds / 3));
  const plain: number[] = [], arch: number[] = [], enabled: number[] = [];
  for (let i = 0; i < cycles; i++) {
    plain.push(await cycle([]));
    arch.push(await cycle(["--runc-binary", ARCH_RUNC]));
    enabled.push(await cycle(["--runc-binary", ARCH_RUNC, "--env", "ARCH_ENABLE=1"]));
  }
  emit("ctr run --rm cycle (create/start/delete), plain container", median(arch), "ms", median(plain), {
    rounds: cycles,
  });
  emit("ctr run --rm cycle, ARCH_ENABLE=1 container", median(enabled), "ms", median(plain), { rounds: cycles });
}

async function checkpointRestore(rounds: number): Promise<void> {
  const lab = await makeLab();
  try {
    for (const mib of sizes) {
      const raw = { checkpoint: [] as number[], restore: [] as number[] };
      const arch = { checkpoint: [] as number[], restore: [] as number[] };
      for (let n = 0; n < rounds; n++) {
        const r = await rawRound(lab, mib, n);
        const a = await archRound(lab, mib, n);
        raw.checkpoint.push(r.checkpoint), raw.restore.push(r.restore);
        arch.checkpoint.push(a.checkpoint), arch.restore.push(a.restore);
      }
      emit(
        `checkpoint ${mib} MiB (arch checkpoint vs runc checkpoint)`,
        median(arch.checkpoint),
        "s",
        median(raw.checkpoint),
        { rounds, chart: "checkpoint", x: mib, target: 1.2 },
      );
      emit(`restore ${mib} MiB (create through ARCH vs runc restore)`, median(arch.restore), "s", median(raw.restore), {
        rounds,
        chart: "restore",
        x: mib,
        target: 1.3,
      });
    }

    // finalize of N containers: all at once versus one at a time
    const n = 4, mib = 256;
    const results: Record<string, number> = {};
    for (const concurrency of [1, n]) {
      const bundles: string[] = [];
      for (let i = 0; i < n; i++) {
        const id = `fin-${concurrency}-${i}`;
        const bundle = await makeBundle(lab, id, mib, id);
        await startWorkload(lab, ARCH_RUNC, bundle, id);
        bundles.push(bundle);
      }
      results[concurrency] = await timed(() =>
        mustRun({ cmd: ARCH, args: ["finalize", "--concurrency", String(concurrency)], env: lab.env })
      );
      await mustRun({ cmd: ARCH, args: ["finalize", "--undo"], env: lab.env });
      for (let i = 0; i < n; i++) {
        await removeContainer(lab, `fin-${concurrency}-${i}`);
        await unmountBundle(bundles[i]!);
      }
    }
    emit(`finalize ${n} x ${mib} MiB, parallel vs serial`, results[n]!, "s", results[1]!, { concurrency: n });
  } finally {
    await new Deno.Command("sh", {
      args: ["-c", `grep -o '${lab.dir}[^ ]*' /proc/self/mountinfo | xargs -r -n1 umount -l`],
    })
      .output();
    if (Deno.env.get("ARCH_BENCH_KEEP") !== "1") await Deno.remove(lab.dir, { recursive: true }).catch(() => {});
  }
}

if (import.meta.main) {
  const rounds = Number(Deno.env.get("ARCH_BENCH_ROUNDS") ?? "3");
  // One part, or several separated by commas (one report for all of them).
  const parts = Deno.args[0]?.split(",");
  const wanted = (part: string) => parts === undefined || parts.includes(part);
  if (wanted("overhead")) await wrapperOverhead(rounds * 10);
  if (wanted("checkpoint")) await checkpointRestore(rounds);
  if (wanted("exit-watcher")) {
    await exitWatcherBench(Number(Deno.env.get("ARCH_BENCH_WATCHED") ?? "200"), emit);
  }
  if (wanted("sharedfs")) {
    await sharedFsBench(Number(Deno.env.get("ARCH_BENCH_SHAREDFS_ROUNDS") ?? "2"), emit);
  }
  if (wanted("finalize")) {
    await finalizeBench((Deno.env.get("ARCH_BENCH_FINALIZE_COUNTS") ?? "50,100,200").split(",").map(Number), emit);
  }
  if (wanted("downtime")) await downtimeBench(sizes, rounds, emit);
  console.error(`bench: report written to ${await writeReport()}`);
}
