/**
 * The node's exit watcher, end to end without container engines: real processes (shells
 * that exit with the code written to their stdin, or die by a signal), the real wrapper-side
 * hand-off (`spawnExitWatcher`), the real watcher started from `dist/arch`, real pidfds, and
 * a temporary state directory. Needs root (pidfd_getfd) and Linux ≥ 6.15 (PIDFD_INFO_EXIT).
 */

import { deepEqual as assertEquals, ok, rejects } from "node:assert/strict";
import { ARCH, eventually } from "./_env.ts";
import { handOverPidfd, spawnExitWatcher } from "../../src/exitwatch/client.ts";
import { closeFd, exitStatus, openPidfd } from "../../src/exitwatch/pidfd.ts";
import { watcherPaths } from "../../src/exitwatch/protocol.ts";
import { Registry } from "../../src/registry/registry.ts";

const NAMESPACE = "test";

/** A process that exits with the code written to its stdin. */
class Target {
  readonly child = new Deno.Command("sh", { args: ["-c", 'read -r code; exit "$code"'], stdin: "piped" }).spawn();
  get pid(): number {
    return this.child.pid;
  }
  /** Makes it exit with `code` and waits until it is reaped. */
  async exit(code: number): Promise<void> {
    const writer = this.child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(`${code}\n`));
    await writer.close();
    await this.child.status;
  }
  async kill(signal: Deno.Signal): Promise<void> {
    this.child.kill(signal);
    await this.child.status;
  }
}

/** Pids of processes whose argv (NUL-separated in /proc) passes `match`. */
function processes(match: (argv: string[]) => boolean): number[] {
  const pids: number[] = [];
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      if (match(Deno.readTextFileSync(`/proc/${entry.name}/cmdline`).split("\0").slice(0, -1))) {
        pids.push(Number(entry.name));
      }
    } catch { /* gone */ }
  }
  return pids;
}

/** The watcher daemons of `dir` (`... exit-watcher <dir>`). */
const watchers = (dir: string) => processes((argv) => argv.at(-2) === "exit-watcher" && argv.at(-1) === dir);
/** Their shell supervisors (`sh -c <script> <arch> <dir>`). */
const supervisors = (dir: string) => processes((argv) => argv[0] === "sh" && argv[1] === "-c" && argv.at(-1) === dir);

/** Whether `pid` has ended (gone, or a zombie: its descriptors are closed then). */
function dead(pid: number): boolean {
  try {
    return / Z /.test(Deno.readTextFileSync(`/proc/${pid}/stat`).replace(/^.*\)/s, ")"));
  } catch {
    return true;
  }
}

/**
 * A temporary state directory; on dispose its watcher and supervisor are killed. The
 * watcher inherits ARCH_CONFIG: its log goes to `<dir>/arch.log`.
 */
class Lab {
  readonly dir = Deno.makeTempDirSync({ prefix: "arch-exit-watcher-" });
  readonly registry = new Registry(this.dir);
  readonly targets: Target[] = [];
  #n = 0;

  constructor() {
    const config = `${this.dir}/config.json`;
    Deno.writeTextFileSync(config, JSON.stringify({ logFile: `${this.dir}/arch.log` }), { mode: 0o600 });
    Deno.env.set("ARCH_CONFIG", config);
  }

  /** The watcher's log records with message `msg`. */
  logged(msg: string): Record<string, unknown>[] {
    const lines = Deno.readTextFileSync(`${this.dir}/arch.log`).split("\n").filter((l) => l !== "");
    return lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((r) => r.msg === msg);
  }

  /** Starts a target process, records it as an ARCH container and registers it. */
  async watched(): Promise<{ target: Target; id: string }> {
    const { target, id } = this.recorded();
    ok(await spawnExitWatcher(this.dir, NAMESPACE, id, "2025-01-01T00:00:00.000Z", target.pid, { arch: ARCH }));
    return { target, id };
  }

  /** A target process with a registry record, not yet registered with the watcher. */
  recorded(): { target: Target; id: string } {
    const target = new Target();
    this.targets.push(target);
    const id = `c${this.#n++}`;
    this.registry.put({
      namespace: NAMESPACE,
      id,
      root: "/run/test",
      bundle: "/bundle",
      key: id,
      createdAt: "2025-01-01T00:00:00.000Z",
    });
    return { target, id };
  }

  exitOf(id: string): Promise<Record<string, unknown>> {
    return eventually(`exit status of ${id}`, () => {
      const exit = this.registry.get(NAMESPACE, id)?.exit as Record<string, unknown> | undefined;
      return Promise.resolve(exit);
    }, 10_000);
  }

  /** The watcher's pid, from its lock file, once one is running. */
  watcher(): Promise<number> {
    return eventually("a running watcher", () => {
      const pids = watchers(this.dir);
      return Promise.resolve(pids.length === 1 ? pids[0] : undefined);
    });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    for (const pid of supervisors(this.dir)) Deno.kill(pid, "SIGKILL");
    for (const pid of watchers(this.dir)) Deno.kill(pid, "SIGKILL");
    for (const t of this.targets) {
      try {
        t.child.kill("SIGKILL");
      } catch { /* exited */ }
      await t.child.status;
    }
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }
}

const status = (exit: Record<string, unknown>) => ({ code: exit.code, signal: exit.signal });

/** Why the test cannot run here, or `undefined`. */
async function missing(): Promise<string | undefined> {
  if (Deno.uid() !== 0) return "not root";
  try {
    Deno.statSync(ARCH);
  } catch {
    return `${ARCH} is missing (deno task build)`;
  }
  const probe = new Target();
  const fd = openPidfd(probe.pid);
  if (fd === undefined) return "pidfd_open failed";
  await probe.exit(7);
  const kept = exitStatus(fd);
  closeFd(fd);
  return kept?.code === 7 ? undefined : "the kernel keeps no exit status for pidfds (PIDFD_INFO_EXIT, Linux >= 6.15)";
}

const why = await missing();
if (why !== undefined && Deno.env.get("CI") === "true") throw new Error(`exit watcher tests cannot run in CI: ${why}`);
if (why !== undefined) console.error(`skipping exit watcher tests: ${why}`);

const test = (name: string, fn: (t: Deno.TestContext) => Promise<void>) =>
  Deno.test({ name, ignore: why !== undefined, sanitizeResources: false, sanitizeOps: false }, fn);

test("exit watcher: one process watches many and records codes and signals", async () => {
  await using lab = new Lab();
  const cases: [string, (t: Target) => Promise<void>, { code: unknown; signal: unknown }][] = [
    ["exit 0", (t) => t.exit(0), { code: 0, signal: undefined }],
    ["exit 1", (t) => t.exit(1), { code: 1, signal: undefined }],
    ["exit 3", (t) => t.exit(3), { code: 3, signal: undefined }],
    ["exit 255", (t) => t.exit(255), { code: 255, signal: undefined }],
    ["SIGTERM", (t) => t.kill("SIGTERM"), { code: 143, signal: 15 }],
    ["SIGKILL", (t) => t.kill("SIGKILL"), { code: 137, signal: 9 }],
    ["SIGUSR1", (t) => t.kill("SIGUSR1"), { code: 138, signal: 10 }],
  ];
  const rounds = 3; // 21 processes
  const runs = [];
  for (let r = 0; r < rounds; r++) {
    for (const [name, end, expected] of cases) runs.push({ name, end, expected, ...(await lab.watched()) });
  }
  assertEquals(watchers(lab.dir).length, 1);
  const pid = await lab.watcher();
  assertEquals(Number(Deno.readTextFileSync(watcherPaths(lab.dir).lock).trim()), pid);
  await Promise.all(runs.map((r) => r.end(r.target)));
  for (const r of runs) assertEquals(status(await lab.exitOf(r.id)), r.expected, r.name);
  assertEquals(watchers(lab.dir), [pid]);
  // root-only files
  const paths = watcherPaths(lab.dir);
  assertEquals(Deno.statSync(paths.dir).mode! & 0o777, 0o700);
  for (const file of [paths.socket, paths.lock, paths.state]) assertEquals(Deno.statSync(file).mode! & 0o777, 0o600);
});

test("exit watcher: a process that ends at once is not missed", async (t) => {
  await using lab = new Lab();
  await t.step("exit right after the registration", async () => {
    const { target, id } = await lab.watched();
    await target.exit(4);
    assertEquals(status(await lab.exitOf(id)), { code: 4, signal: undefined });
  });
  await t.step("exited and reaped before the watcher copied the pidfd", async () => {
    const { target, id } = lab.recorded();
    const pidfd = openPidfd(target.pid)!;
    try {
      await target.exit(5); // reaped by this process: only the open pidfd keeps its status
      await handOverPidfd(
        lab.dir,
        { namespace: NAMESPACE, id, createdAt: "2025-01-01T00:00:00.000Z", pid: target.pid },
        pidfd,
        { arch: ARCH },
      );
    } finally {
      closeFd(pidfd);
    }
    assertEquals(status(await lab.exitOf(id)), { code: 5, signal: undefined });
  });
  await t.step("a process already gone is reported to the caller", async () => {
    const target = new Target();
    await target.exit(0);
    assertEquals(await spawnExitWatcher(lab.dir, NAMESPACE, "gone", "2025-01-01T00:00:00.000Z", target.pid), false);
  });
});

test("exit watcher: after kill -9 a new registration restarts it and old processes are still watched", async () => {
  await using lab = new Lab();
  const before = [await lab.watched(), await lab.watched(), await lab.watched()];
  const first = await lab.watcher();
  for (const pid of supervisors(lab.dir)) Deno.kill(pid, "SIGKILL"); // no automatic restart
  Deno.kill(first, "SIGKILL");
  await eventually("the watcher gone", () => Promise.resolve(dead(first) ? true : undefined));
  // one process ends while no watcher runs: its status is lost, and said to be unknown
  await before[2]!.target.exit(0);

  const after = await lab.watched();
  const second = await lab.watcher();
  ok(second !== first);
  assertEquals(lab.registry.get(NAMESPACE, before[2]!.id)?.exit, { unknown: true });
  await before[0]!.target.exit(6);
  await before[1]!.target.kill("SIGKILL");
  await after.target.exit(0);
  assertEquals(status(await lab.exitOf(before[0]!.id)), { code: 6, signal: undefined });
  assertEquals(status(await lab.exitOf(before[1]!.id)), { code: 137, signal: 9 });
  assertEquals(status(await lab.exitOf(after.id)), { code: 0, signal: undefined });
  assertEquals(watchers(lab.dir), [second]);
});

test("exit watcher: its supervisor restarts it after a crash", async () => {
  await using lab = new Lab();
  const { target, id } = await lab.watched();
  const first = await lab.watcher();
  Deno.kill(first, "SIGKILL");
  const second = await eventually("a restarted watcher", () => {
    const pids = watchers(lab.dir);
    return Promise.resolve(pids.length === 1 && pids[0] !== first ? pids[0] : undefined);
  });
  ok(second !== first);
  // the new watcher has re-opened the pidfd once it saved its (re-read) state and listens again
  await eventually("the restarted watcher listening", async () => {
    try {
      (await Deno.connect({ transport: "unix", path: watcherPaths(lab.dir).socket })).close();
      return true;
    } catch {
      return undefined;
    }
  });
  await target.exit(9);
  assertEquals(status(await lab.exitOf(id)), { code: 9, signal: undefined });
});

test("exit watcher: concurrent registrations start a single watcher", async () => {
  await using lab = new Lab();
  const runs = await Promise.all([1, 2, 3, 4].map(() => lab.watched()));
  const pid = await lab.watcher();
  await eventually("one supervisor left", () => Promise.resolve(supervisors(lab.dir).length === 1 ? true : undefined));
  assertEquals(watchers(lab.dir), [pid]);
  assertEquals(lab.logged("exit watcher started").map((r) => r.pid), [pid]);
  await Promise.all(runs.map((r, i) => r.target.exit(10 + i)));
  for (const [i, r] of runs.entries()) {
    assertEquals(status(await lab.exitOf(r.id)), { code: 10 + i, signal: undefined });
  }
});

test("exit watcher: it stops when its directory is removed", async () => {
  await using lab = new Lab();
  await lab.watched();
  const pid = await lab.watcher();
  const [supervisor] = supervisors(lab.dir);
  Deno.removeSync(lab.dir, { recursive: true });
  await eventually("the watcher stopped", () => Promise.resolve(dead(pid) ? true : undefined));
  // it stopped by itself (status 0): its supervisor does not start it again
  if (supervisor !== undefined) {
    await eventually("the supervisor ended", () => Promise.resolve(dead(supervisor) ? true : undefined));
  }
});

test("exit watcher: the wrapper side never hangs", async (t) => {
  await using lab = new Lab();
  await t.step("a watcher that cannot start", async () => {
    const target = new Target();
    lab.targets.push(target);
    const t0 = Date.now();
    await rejects(
      spawnExitWatcher(lab.dir, NAMESPACE, "x", "t", target.pid, { arch: "/nonexistent/arch", timeoutMs: 500 }),
    );
    ok(Date.now() - t0 < 3_000);
  });
  await t.step("a socket that never answers", async () => {
    const paths = watcherPaths(lab.dir);
    Deno.mkdirSync(paths.dir, { recursive: true, mode: 0o700 });
    const listener = Deno.listen({ transport: "unix", path: paths.socket });
    const held: Deno.Conn[] = [];
    const accepting = (async () => {
      for await (const conn of listener) held.push(conn);
    })();
    try {
      const target = new Target();
      lab.targets.push(target);
      const t0 = Date.now();
      await rejects(spawnExitWatcher(lab.dir, NAMESPACE, "y", "t", target.pid, { arch: ARCH, timeoutMs: 500 }));
      ok(Date.now() - t0 < 3_000);
    } finally {
      listener.close();
      await accepting.catch(() => {});
      for (const conn of held) conn.close();
    }
  });
});
