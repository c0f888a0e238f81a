/**
 * The runc wrapper's side of the node's exit watcher (the watcher itself is
 * `daemon.ts`): at `start` of an ARCH container the wrapper opens a pidfd of its
 * init process, while that process surely exists, and hands it to the watcher, starting
 * the watcher first if it cannot reach it.
 *
 * Guarantees: the wrapper keeps its pidfd open until the watcher has acknowledged its own
 * copy, so a container that exits at once is not missed; every wait (start, connect, reply)
 * is bounded by one deadline (2 s by default), so a `runc start` never hangs on the watcher;
 * on failure the caller is told (it logs that the exit status will be unknown and the
 * checkpoint data is kept). Nothing is written to stdout or stderr.
 */

import { errorMessage } from "../util/errors.ts";
import { closeFd, openPidfd } from "./pidfd.ts";
import { encodeRequest, parseReply, parseRequest, type Reply, watcherPaths, type WatchTarget } from "./protocol.ts";
import { runCommand } from "../process/exec.ts";
import { selfArch } from "../config/host.ts";

/** Default bound of a whole hand-off. */
export const HANDOFF_TIMEOUT_MS = 2_000;

/**
 * The watcher's supervisor: a shell (≈1 MB) that starts `arch exit-watcher <stateDir>` and
 * starts it again a second after it died abnormally (a watcher that finds another one running
 * exits 0), at most 10 times, never if it cannot be executed at all (126, 127); after that
 * the next hand-off starts a new supervisor.
 */
const SUPERVISOR = 'n=0; until "$0" exit-watcher "$1"; do case $? in 126 | 127) exit 1 ;; esac; ' +
  'n=$((n + 1)); [ "$n" -ge 10 ] && exit 1; sleep 1; done';

/** Options of a hand-off: ARCH's executable (to start the watcher) and the bound of the whole hand-off. */
export interface HandOffOptions {
  /** ARCH's executable (`dist/arch`); default the launcher's, else this executable. */
  readonly arch?: string;
  readonly timeoutMs?: number;
}

/** Entry of `arch exit-watcher <stateDir>`: the node's exit watcher (see `daemon.ts`). */
export async function runExitWatcher(args: readonly string[]): Promise<number> {
  const [stateDir, ...rest] = args;
  if (stateDir === undefined || !stateDir.startsWith("/") || rest.length > 0) return 2;
  const { runDaemon } = await import("./daemon.ts");
  return await runDaemon(stateDir);
}

/**
 * Has the node's exit watcher watch `pid` (the init process of container `namespace/id`
 * whose registry record was created at `createdAt`). Returns false if the process is gone;
 * throws if the watcher could not take it (the exit status will then be unknown).
 * Requires root.
 */
export async function spawnExitWatcher(
  stateDir: string,
  namespace: string,
  id: string,
  createdAt: string,
  pid: number,
  options: HandOffOptions = {},
): Promise<boolean> {
  const pidfd = openPidfd(pid);
  if (pidfd === undefined) return false;
  try {
    await handOverPidfd(stateDir, { namespace, id, createdAt, pid }, pidfd, options);
  } finally {
    closeFd(pidfd);
  }
  return true;
}

/**
 * Sends `pidfd` (a pidfd of `target.pid`, kept open by the caller until this returns) to the
 * watcher of `stateDir` and waits for its acknowledgement, starting the watcher if needed.
 */
export async function handOverPidfd(
  stateDir: string,
  target: WatchTarget,
  pidfd: number,
  options: HandOffOptions = {},
): Promise<void> {
  const line = encodeRequest({ ...target, wrapperPid: Deno.pid, fd: pidfd });
  const valid = parseRequest(line.trimEnd());
  if (!valid.ok) throw new Error(`cannot watch the container: ${valid.error}`);
  const deadline = Date.now() + (options.timeoutMs ?? HANDOFF_TIMEOUT_MS);
  const socket = watcherPaths(stateDir).socket;
  const arch = options.arch ?? selfArch();
  let started = false;
  let lastError: unknown;
  // Any failure but a refusal is retried until the deadline: a watcher that dies between
  // connect and reply may or may not have taken the pidfd, and taking it twice is harmless.
  while (Date.now() < deadline) {
    const conn = await beforeDeadline(Deno.connect({ transport: "unix", path: socket }), deadline).catch((error) => {
      lastError = new Error(`cannot reach the exit watcher: ${errorMessage(error)}`);
      return undefined;
    });
    if (conn === undefined && !started && Date.now() < deadline) {
      started = true;
      await startWatcher(arch, stateDir, deadline).catch((error) => lastError = error);
    }
    const reply = conn === undefined ? undefined : await exchange(conn, line, deadline).catch((error) => {
      lastError = new Error(`no answer from the exit watcher: ${errorMessage(error)}`);
      return undefined;
    });
    if (reply?.ok === true) return;
    if (reply?.ok === false) throw new Error(`the exit watcher refused: ${reply.error}`);
    await new Promise((r) => setTimeout(r, Math.min(20, Math.max(0, deadline - Date.now()))));
  }
  throw lastError ?? new Error("the exit watcher did not answer in time");
}

/** Sends the request line and reads the reply; the connection is closed at `deadline` at the latest. */
async function exchange(conn: Deno.UnixConn, line: string, deadline: number): Promise<Reply> {
  const timer = setTimeout(() => conn.close(), Math.max(0, deadline - Date.now()));
  try {
    await writeAll(conn, new TextEncoder().encode(line));
    return parseReply(await readReply(conn));
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch { /* closed by the timer */ }
  }
}

/** `promise`, or a rejection at `deadline` (a connection that arrives later is closed). */
function beforeDeadline(promise: Promise<Deno.UnixConn>, deadline: number): Promise<Deno.UnixConn> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      promise.then((c) => c.close(), () => {});
      reject(new Error("timed out"));
    }, Math.max(0, deadline - Date.now()));
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

/** Starts the watcher's supervisor in a new session with stdio on /dev/null. */
async function startWatcher(arch: string, stateDir: string, deadline: number): Promise<void> {
  await runCommand({
    cmd: "setsid",
    args: ["-f", "sh", "-c", SUPERVISOR, arch, stateDir],
    stdio: "null",
    cwd: "/",
    timeoutMs: Math.max(1, deadline - Date.now()),
  });
}

async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  for (let done = 0; done < data.length;) done += await conn.write(data.subarray(done));
}

async function readReply(conn: Deno.Conn): Promise<string> {
  const buf = new Uint8Array(1024);
  let used = 0;
  while (used < buf.length) {
    const n = await conn.read(buf.subarray(used));
    if (n === null) break;
    used += n;
    const nl = buf.subarray(0, used).indexOf(10);
    if (nl >= 0) return new TextDecoder().decode(buf.subarray(0, nl));
  }
  throw new Error("the exit watcher closed the connection without an answer");
}
