/**
 * The exit watcher: a small detached process per running ARCH container that records how
 * its init process ended in the node registry (see `exit_watch.ts` for the mechanism and
 * its limits). The runc wrapper opens the pidfd itself, before the container can run, and
 * hands it to the watcher as an inherited file descriptor, so a container that exits at
 * once is not missed.
 */

import { type ExitStatus, watchExit } from "./exit_watch.ts";
import { Registry } from "../registry/registry.ts";
import { runCommand } from "../process/exec.ts";

const fcntlSymbols = {
  fcntl: { parameters: ["i32", "i32", "i32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
} as const;
const F_SETFD = 2;
const FD_CLOEXEC = 1;

/** Records `status` on the container's record if it still describes the same container. */
export function recordExit(
  registry: Registry,
  namespace: string,
  id: string,
  createdAt: string,
  status: ExitStatus | undefined,
): void {
  const record = registry.get(namespace, id);
  if (record === undefined || record.createdAt !== createdAt) return;
  registry.put({
    ...record,
    exit: status === undefined ? { unknown: true } : { ...status, at: new Date().toISOString() },
  });
}

/** Entry of `arch exit-watcher <stateDir> <namespace> <id> <createdAt> <pidfd> <pid>`. */
export async function runExitWatcher(args: readonly string[]): Promise<number> {
  const [stateDir, namespace, id, createdAt, fd, pid] = args;
  if (stateDir === undefined || namespace === undefined || id === undefined || createdAt === undefined) return 2;
  const status = await watchExit(Number(pid), fd === undefined ? undefined : Number(fd));
  recordExit(new Registry(stateDir), namespace, id, createdAt, status);
  return 0;
}

/**
 * Starts a detached watcher (own session, stdio on /dev/null) for `pid`. The pidfd is opened
 * here and passed down; this process keeps no copy. Returns false if the process is gone.
 */
export async function spawnExitWatcher(
  stateDir: string,
  namespace: string,
  id: string,
  createdAt: string,
  pid: number,
): Promise<boolean> {
  const { openPidfd } = await import("./exit_watch.ts");
  const pidfd = openPidfd(pid);
  if (pidfd === undefined) return false;
  const libc = Deno.dlopen("libc.so.6", fcntlSymbols).symbols;
  try {
    libc.fcntl(pidfd, F_SETFD, 0); // let the watcher inherit it
    const arch = Deno.env.get("ARCH_LAUNCHER_ARCH") ?? Deno.execPath();
    await runCommand({
      cmd: "setsid",
      args: ["-f", arch, "exit-watcher", stateDir, namespace, id, createdAt, String(pidfd), String(pid)],
      stdio: "null",
    });
  } finally {
    libc.fcntl(pidfd, F_SETFD, FD_CLOEXEC);
    libc.close(pidfd);
  }
  return true;
}
