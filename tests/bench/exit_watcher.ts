/**
 * Exit watcher benchmark: the memory the node's exit watcher costs with 1 and with N
 * watched processes (N = ARCH_BENCH_WATCHED, default 200; target ≤ 100 MB for 200), the
 * hand-off's latency, and a check that every status is recorded right.
 *
 * The watched processes are long-lived shells (`sh -c 'read -r code; exit "$code"'`), not
 * containers: the watcher holds a pidfd whatever the process is, so its memory does not
 * depend on it. They are registered through the wrapper's own code path (`spawnExitWatcher`,
 * which starts the watcher from `dist/arch`), then ended with exit codes and signals.
 * RSS is VmRSS from /proc of the watcher and of its shell supervisor.
 * Requires root, Linux ≥ 6.15 and dist/ built.
 */

import { ARCH } from "../integration/_env.ts";
import { spawnExitWatcher } from "../../src/exitwatch/client.ts";
import { watcherPaths } from "../../src/exitwatch/protocol.ts";
import { Registry } from "../../src/registry/registry.ts";

type Emit = (name: string, value: number, unit: string, baseline: number, extra?: Record<string, unknown>) => void;

const NAMESPACE = "bench";
const CREATED_AT = "2025-01-01T00:00:00.000Z";

/** How each watched process ends, in turn, and the status that must be recorded. */
const ENDINGS: { how: number | Deno.Signal; code: number; signal?: number }[] = [
  { how: 0, code: 0 },
  { how: 1, code: 1 },
  { how: 42, code: 42 },
  { how: 255, code: 255 },
  { how: "SIGTERM", code: 143, signal: 15 },
  { how: "SIGKILL", code: 137, signal: 9 },
];

function vmRssKiB(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(Deno.readTextFileSync(`/proc/${pid}/status`));
  return m === null ? 0 : Number(m[1]);
}

/** The watcher (pid from its lock file) and its supervisor (the watcher's parent). */
function watcherProcesses(stateDir: string): { watcher: number; supervisor: number | undefined } {
  const watcher = Number(Deno.readTextFileSync(watcherPaths(stateDir).lock).trim());
  const stat = Deno.readTextFileSync(`/proc/${watcher}/stat`);
  const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
  const parent = Deno.readTextFileSync(`/proc/${ppid}/cmdline`).split("\0").slice(0, -1);
  return { watcher, supervisor: parent[0] === "sh" && parent.at(-1) === stateDir ? ppid : undefined };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;

export async function exitWatcherBench(n: number, emit: Emit): Promise<void> {
  const dir = Deno.makeTempDirSync({ prefix: "arch-bench-exit-" });
  const config = `${dir}/config.json`;
  Deno.writeTextFileSync(config, JSON.stringify({ stateDir: `${dir}/run`, logFile: `${dir}/arch.log` }), {
    mode: 0o600,
  });
  const previousConfig = Deno.env.get("ARCH_CONFIG");
  Deno.env.set("ARCH_CONFIG", config); // the watcher inherits it: its log goes to the lab
  const stateDir = `${dir}/run`;
  const registry = new Registry(stateDir);
  const children: Deno.ChildProcess[] = [];
  let watcher: { watcher: number; supervisor: number | undefined } | undefined;
  try {
    const latencies: number[] = [];
    let rssOne = 0;
    for (let i = 0; i < n; i++) {
      const child = new Deno.Command("sh", { args: ["-c", 'read -r code; exit "$code"'], stdin: "piped" }).spawn();
      children.push(child);
      const id = `w${i}`;
      registry.put({ namespace: NAMESPACE, id, root: "/run/bench", bundle: "/bench", key: id, createdAt: CREATED_AT });
      const t0 = performance.now();
      if (!await spawnExitWatcher(stateDir, NAMESPACE, id, CREATED_AT, child.pid, { arch: ARCH })) {
        throw new Error(`process ${child.pid} gone before its registration`);
      }
      latencies.push(performance.now() - t0);
      if (i === 0) {
        watcher = watcherProcesses(stateDir);
        rssOne = vmRssKiB(watcher.watcher) + (watcher.supervisor ? vmRssKiB(watcher.supervisor) : 0);
      }
    }
    watcher = watcherProcesses(stateDir);
    const rssWatcher = vmRssKiB(watcher.watcher);
    const rssSupervisor = watcher.supervisor ? vmRssKiB(watcher.supervisor) : 0;
    const rssAll = rssWatcher + rssSupervisor;
    const note = `${n} long-lived sh processes, not containers (the watcher holds one pidfd each either way)`;
    emit(`exit watcher RSS, ${n} watched processes (watcher + supervisor)`, rssAll / 1024, "MB", 100, {
      note: `baseline is the 100 MB target; ${note}`,
      watcherMB: Math.round(rssWatcher / 102.4) / 10,
      supervisorMB: Math.round(rssSupervisor / 102.4) / 10,
      processes: watcher.supervisor ? 2 : 1,
    });
    emit("exit watcher RSS, 1 watched process (watcher + supervisor)", rssOne / 1024, "MB", 100, {
      note: "baseline is the 100 MB target",
    });
    emit("exit watcher hand-off per container start (median)", median(latencies.slice(1)), "ms", latencies[0]!, {
      note: "baseline is the first hand-off, which starts the watcher",
      registrations: n,
    });

    // End them all with various codes and signals; every status must be recorded right.
    const t0 = performance.now();
    await Promise.all(children.map(async (child, i) => {
      const { how } = ENDINGS[i % ENDINGS.length]!;
      if (typeof how === "number") {
        const writer = child.stdin.getWriter();
        await writer.write(new TextEncoder().encode(`${how}\n`));
        await writer.close();
      } else {
        child.kill(how);
      }
      await child.status;
    }));
    const wrong: string[] = [];
    const deadline = Date.now() + 30_000;
    for (let i = 0; i < n; i++) {
      const { code, signal } = ENDINGS[i % ENDINGS.length]!;
      let exit: Record<string, unknown> | undefined;
      while ((exit = registry.get(NAMESPACE, `w${i}`)?.exit as Record<string, unknown>) === undefined) {
        if (Date.now() > deadline) break;
        await new Promise((r) => setTimeout(r, 20));
      }
      if (exit?.code !== code || exit?.signal !== signal) wrong.push(`w${i}: ${JSON.stringify(exit)}`);
    }
    emit(`exit watcher: ${n} exits recorded`, performance.now() - t0, "ms", n, {
      note: "baseline is the number of processes",
      wrong: wrong.length,
      ...(wrong.length > 0 ? { examples: wrong.slice(0, 5) } : {}),
    });
    if (wrong.length > 0) throw new Error(`exit watcher recorded ${wrong.length} wrong statuses: ${wrong[0]}`);
  } finally {
    for (const pid of [watcher?.supervisor, watcher?.watcher]) {
      try {
        if (pid !== undefined) Deno.kill(pid, "SIGKILL");
      } catch { /* gone */ }
    }
    for (const child of children) {
      try {
        child.kill("SIGKILL");
      } catch { /* exited */ }
      await child.status;
    }
    if (previousConfig === undefined) Deno.env.delete("ARCH_CONFIG");
    else Deno.env.set("ARCH_CONFIG", previousConfig);
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}
