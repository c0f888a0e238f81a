/**
 * `deno task bench`: what ARCH costs, measured against bare runc in the same run.
 * Prints one JSON object per figure: {"name","value","unit","baseline","ratio"}, where
 * baseline is bare runc's value for the same operation. Never asserts times.
 *
 * Figures: per-call cost of `runc state` on a running container, and a full
 * create/start/delete cycle (`ctr run --rm`) through containerd. Runs are interleaved
 * (runc, arch, runc, arch...) so that machine noise hits both alike; medians are reported.
 * Requires root and the built dist/ (scripts/run bench does both).
 */

import { startStack } from "../integration/_env.ts";
import { ARCH_RUNC, RUNC } from "../integration/_env.ts";

const CTR_IMAGE = "docker.io/library/arch-test:latest";

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

const round = (x: number) => Math.round(x * 100) / 100;

export function emit(name: string, value: number, unit: string, baseline: number, extra: Record<string, unknown> = {}) {
  console.log(
    JSON.stringify({
      name,
      value: round(value),
      unit,
      baseline: round(baseline),
      ratio: round(value / baseline),
      ...extra,
    }),
  );
}

async function timeIt(fn: () => Promise<void>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

async function must(cmd: string, args: string[], env: Record<string, string> = {}): Promise<void> {
  const out = await new Deno.Command(cmd, { args, env, stdout: "null", stderr: "piped" }).output();
  if (!out.success) throw new Error(`${cmd} ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
}

if (import.meta.main) {
  const rounds = Number(Deno.env.get("ARCH_BENCH_ROUNDS") ?? "30");
  await using stack = await startStack();
  const env = { ARCH_CONFIG: stack.archConfig };

  // runc state on a running container
  const id = `bench-${crypto.randomUUID().slice(0, 8)}`;
  await stack.ctr(["run", "-d", CTR_IMAGE, id, "workload"]);
  const stateArgs = ["--root", "/run/containerd/runc/default", "state", id];
  const bare: number[] = [], wrapped: number[] = [];
  for (let i = 0; i < rounds; i++) {
    bare.push(await timeIt(() => must(RUNC, stateArgs)));
    wrapped.push(await timeIt(() => must(ARCH_RUNC, stateArgs, env)));
  }
  emit("runc state per call", median(wrapped), "ms", median(bare), { rounds });
  emit("runc state overhead per call", median(wrapped) - median(bare), "ms", 25, {
    note: "baseline is the 25 ms target",
  });
  await stack.ctr(["tasks", "kill", "--signal", "SIGKILL", id]);
  await new Promise((r) => setTimeout(r, 300));
  await stack.ctr(["tasks", "delete", "--force", id], { check: false });
  await stack.ctr(["containers", "delete", id], { check: false });

  // create/start/delete cycle through containerd, for a plain and an ARCH-enabled container
  const cycle = async (extra: string[]) => {
    const cid = `cyc-${crypto.randomUUID().slice(0, 8)}`;
    return await timeIt(async () => {
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
