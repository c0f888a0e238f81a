/**
 * The node's exit watcher: ONE detached process per state directory that holds a pidfd of
 * every running ARCH container's init process and records how each ended in the registry
 * (see `pidfd.ts` for the kernel mechanism, `protocol.ts` for its files).
 *
 * - Started on demand by the runc wrapper (`client.ts`), in its own session, stdio on
 *   /dev/null, under a tiny shell supervisor that restarts it after a crash. A single
 *   instance per node: it holds an exclusive flock on `lock` for its lifetime; a second one
 *   exits at once with status 0.
 * - Hand-off without race: the wrapper opens the pidfd while the process surely exists and
 *   keeps it open until this watcher has copied it with pidfd_getfd(2) and acknowledged.
 * - No thread per container: one poll(2) over every pidfd plus an eventfd that new
 *   registrations write to, so the poll restarts with them.
 * - Survives its own crash: the watched set is in `watched.json` with each process's start
 *   time; a new watcher re-opens the pidfds of processes still running and records
 *   `exit: {unknown: true}` for those gone (or replaced by a reused pid).
 *
 * Limits: a process that exited and was reaped while no watcher ran has an unknown status.
 * Requires root and `--allow-all` (FFI, /proc).
 */

import { processStartTime } from "../process/liveness.ts";
import { errorMessage } from "../util/errors.ts";
import {
  closeFd,
  copyFdOf,
  drainWake,
  type ExitStatus,
  exitStatus,
  openPidfd,
  openWakeFd,
  pidOfPidfd,
  pollReadable,
  tryLockFile,
  wake,
} from "./pidfd.ts";
import {
  encodeReply,
  encodeWatchedState,
  entryKey,
  MAX_LINE_BYTES,
  parseRequest,
  parseWatchedState,
  type Reply,
  type WatchedEntry,
  type WatcherPaths,
  watcherPaths,
} from "./protocol.ts";
import { Registry } from "../registry/registry.ts";
import { Logger } from "../log/log.ts";
import { DEFAULT_CONFIG_PATH, readHostBasics } from "../config/host.ts";

/** How long a client may take to send its request. */
const REQUEST_TIMEOUT_MS = 2_000;
/** After its pidfd became readable, how often the status is asked for until the process is reaped. */
const REAP_POLL_MS = 50;
const REAP_POLL_SLOW_MS = 1_000;
const REAP_FAST_WINDOW_MS = 5_000;
/** A process not reaped within this time gets an unknown status (its parent is stuck). */
const REAP_GIVE_UP_MS = 60_000;
/** How often the watcher checks that its directory still exists. */
const DIR_CHECK_MS = 5_000;

/**
 * Records `status` on the container's record if it still describes the same container. An
 * unknown status never replaces a known one (a watcher that died after recording but before
 * saving its set re-reads that entry and finds the process gone).
 */
export function recordExit(
  registry: Registry,
  namespace: string,
  id: string,
  createdAt: string,
  status: ExitStatus | undefined,
): void {
  const record = registry.get(namespace, id);
  if (record === undefined || record.createdAt !== createdAt) return;
  if (status === undefined && record.exit !== undefined) return;
  registry.put({
    ...record,
    exit: status === undefined ? { unknown: true } : { ...status, at: new Date().toISOString() },
  });
}

interface Watched {
  readonly entry: WatchedEntry;
  readonly fd: number;
  /** When poll(2) first saw the process gone (it may not be reaped yet). */
  exitedAt?: number;
}

/** The watcher's state. Every mutation runs on the JS thread; only poll(2) runs elsewhere. */
export class ExitWatchDaemon {
  readonly #watched = new Map<string, Watched>();
  /** Descriptors to close once the poll in flight (which may include them) has returned. */
  readonly #toClose: number[] = [];
  readonly #wakeFd = openWakeFd();
  readonly #registry: Registry;
  #stopped = false;

  constructor(readonly stateDir: string, readonly paths: WatcherPaths, readonly log: Logger) {
    this.#registry = new Registry(stateDir);
  }

  /** How many processes are watched. */
  get size(): number {
    return this.#watched.size;
  }

  /** The watched processes not seen exiting. */
  running(): WatchedEntry[] {
    return [...this.#watched.values()].filter((w) => w.exitedAt === undefined).map((w) => w.entry);
  }

  /** Re-opens the pidfds of a previous watcher's set; records an unknown status for the gone. */
  reopen(entries: readonly WatchedEntry[]): { reopened: number; gone: number } {
    let reopened = 0, gone = 0;
    for (const entry of entries) {
      const fd = openPidfd(entry.pid);
      // Read after the open: if the start time still matches, the pidfd is of that process.
      const same = fd !== undefined && entry.startTime !== null && processStartTime(entry.pid) === entry.startTime;
      if (same) {
        this.#watched.set(entryKey(entry), { entry, fd });
        reopened++;
        continue;
      }
      if (fd !== undefined) closeFd(fd);
      this.#record(entry, undefined);
      gone++;
    }
    this.#persist();
    return { reopened, gone };
  }

  /** Handles one validated-or-not request line; returns the reply. */
  register(line: string): Reply {
    const parsed = parseRequest(line);
    if (!parsed.ok) return { ok: false, error: parsed.error };
    const { wrapperPid, fd: remoteFd, ...target } = parsed.value;
    const fd = copyFdOf(wrapperPid, remoteFd);
    if (fd === undefined) return { ok: false, error: `cannot copy fd ${remoteFd} of process ${wrapperPid}` };
    const pid = pidOfPidfd(fd);
    if (pid === undefined || (pid !== target.pid && pid !== -1)) {
      closeFd(fd);
      return { ok: false, error: `fd ${remoteFd} of process ${wrapperPid} is not a pidfd of process ${target.pid}` };
    }
    // The start time belongs to the pidfd's process if that one was not reaped after the read.
    const startTime = pid === -1 ? undefined : processStartTime(target.pid);
    const entry = { ...target, startTime: startTime !== undefined && pidOfPidfd(fd) === pid ? startTime : null };
    const key = entryKey(entry);
    const previous = this.#watched.get(key);
    if (previous !== undefined) this.#toClose.push(previous.fd);
    this.#watched.set(key, { entry, fd });
    try {
      this.#persist();
    } catch (error) {
      this.log.error("cannot save the watched set", { error: String(error) });
    }
    wake(this.#wakeFd);
    return { ok: true };
  }

  /** Makes {@link run} return (at its next wake-up, which this causes). */
  stop(): void {
    this.#stopped = true;
    wake(this.#wakeFd);
  }

  /** Watches until stopped: one poll(2) over the wake-up fd and every pidfd not yet seen exiting. */
  async run(): Promise<void> {
    while (!this.#stopped) {
      const polled = [...this.#watched.values()].filter((w) => w.exitedAt === undefined);
      const ready = await pollReadable([this.#wakeFd, ...polled.map((w) => w.fd)], this.#timeout());
      const now = Date.now();
      for (const i of ready) {
        if (i === 0) drainWake(this.#wakeFd);
        else polled[i - 1]!.exitedAt ??= now;
      }
      for (const fd of this.#toClose.splice(0)) closeFd(fd);
      this.#collect(now);
    }
  }

  /** -1 (no limit) unless some exited process awaits its reaping. */
  #timeout(): number {
    let timeout = -1;
    const now = Date.now();
    for (const w of this.#watched.values()) {
      if (w.exitedAt === undefined) continue;
      const t = now - w.exitedAt < REAP_FAST_WINDOW_MS ? REAP_POLL_MS : REAP_POLL_SLOW_MS;
      timeout = timeout === -1 ? t : Math.min(timeout, t);
    }
    return timeout;
  }

  /** Records the status of every exited process the kernel has one for (or that waited too long). */
  #collect(now: number): void {
    let changed = false;
    for (const [key, w] of this.#watched) {
      if (w.exitedAt === undefined) continue;
      const status = exitStatus(w.fd);
      if (status === undefined && now - w.exitedAt < REAP_GIVE_UP_MS) continue;
      this.#watched.delete(key);
      closeFd(w.fd);
      this.#record(w.entry, status);
      changed = true;
    }
    if (changed) {
      try {
        this.#persist();
      } catch (error) {
        this.log.error("cannot save the watched set", { error: String(error) });
      }
    }
  }

  #record(entry: WatchedEntry, status: ExitStatus | undefined): void {
    try {
      recordExit(this.#registry, entry.namespace, entry.id, entry.createdAt, status);
      this.log.info(status === undefined ? "exit status unknown" : "container exited", {
        namespace: entry.namespace,
        id: entry.id,
        pid: entry.pid,
        ...(status ?? {}),
      });
    } catch (error) {
      this.log.error("cannot record the container's exit", { id: entry.id, error: String(error) });
    }
  }

  /** Writes the watched set atomically (temp file + rename, 0600). */
  #persist(): void {
    const tmp = `${this.paths.state}.tmp`;
    Deno.writeTextFileSync(tmp, encodeWatchedState([...this.#watched.values()].map((w) => w.entry)), { mode: 0o600 });
    Deno.renameSync(tmp, this.paths.state);
  }
}

/** Reads one newline-terminated line of at most {@link MAX_LINE_BYTES}, within `timeoutMs`. */
export async function readLine(conn: Deno.Conn, timeoutMs: number): Promise<string> {
  const timer = setTimeout(() => {
    try {
      conn.close();
    } catch { /* closed already */ }
  }, timeoutMs);
  try {
    const buf = new Uint8Array(MAX_LINE_BYTES);
    let used = 0;
    while (used < buf.length) {
      const n = await conn.read(buf.subarray(used));
      if (n === null) break;
      const nl = buf.subarray(used, used + n).indexOf(10);
      used += n;
      if (nl >= 0) return new TextDecoder().decode(buf.subarray(0, used - n + nl));
    }
    throw new Error(used >= buf.length ? "line too long" : "connection closed before a full line");
  } finally {
    clearTimeout(timer);
  }
}

async function serveOne(daemon: ExitWatchDaemon, conn: Deno.Conn): Promise<void> {
  try {
    let reply: Reply;
    try {
      reply = daemon.register(await readLine(conn, REQUEST_TIMEOUT_MS));
    } catch (error) {
      reply = { ok: false, error: errorMessage(error) };
    }
    if (!reply.ok) daemon.log.warn("watch request refused", { error: reply.error });
    await conn.write(new TextEncoder().encode(encodeReply(reply)));
  } catch {
    // the client gave up; it logs that the exit status will be unknown
  } finally {
    try {
      conn.close();
    } catch { /* closed by the timeout */ }
  }
}

/** Creates the watcher's directory root-only, whatever its previous mode. */
function ensurePrivateDir(dir: string): void {
  Deno.mkdirSync(dir, { recursive: true, mode: 0o700 });
  Deno.chmodSync(dir, 0o700);
}

/**
 * Entry of `arch exit-watcher <stateDir>`: runs the watcher until it is killed or its
 * directory is removed (a private engine stack torn down). Returns 0 then, or at once if
 * another watcher holds the lock; non-zero on a fatal error (its supervisor then starts it
 * again).
 */
export async function runDaemon(stateDir: string): Promise<number> {
  Deno.chdir("/"); // hold no bundle directory of the container that started it
  const paths = watcherPaths(stateDir);
  const log = new Logger(
    readHostBasics(Deno.env.get("ARCH_CONFIG") ?? DEFAULT_CONFIG_PATH, []).logFile,
    { component: "exit-watcher" },
  );
  ensurePrivateDir(paths.dir);
  const lockFd = tryLockFile(paths.lock);
  if (lockFd === undefined) return 0;
  Deno.writeTextFileSync(paths.lock, `${Deno.pid}\n`);

  const daemon = new ExitWatchDaemon(stateDir, paths, log);
  let previous: WatchedEntry[] = [];
  try {
    const { entries, skipped } = parseWatchedState(Deno.readTextFileSync(paths.state));
    if (skipped > 0) log.warn("ignoring damaged entries of the watched set", { skipped, file: paths.state });
    previous = entries;
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) log.warn("cannot read the watched set", { error: String(error) });
  }
  const { reopened, gone } = daemon.reopen(previous);

  // Bind beside the final path and rename over it: a client never finds no socket or a
  // socket with other permissions, and a stale one of a dead watcher is replaced atomically.
  const tmpSocket = `${paths.socket}.${Deno.pid}`;
  await Deno.remove(tmpSocket).catch(() => {});
  const listener = Deno.listen({ transport: "unix", path: tmpSocket });
  Deno.chmodSync(tmpSocket, 0o600);
  Deno.renameSync(tmpSocket, paths.socket);
  log.info("exit watcher started", { pid: Deno.pid, reopened, gone });

  const orphaned = setInterval(() => {
    try {
      Deno.statSync(paths.dir);
    } catch {
      daemon.stop();
    }
  }, DIR_CHECK_MS);
  // Checkpoints the containers ask for (`task/requests.ts`), looked for beside the poll.
  const { RequestWatcher, REQUEST_SCAN_MS } = await import("../task/requests.ts");
  const requests = new RequestWatcher(new Registry(stateDir), log, Deno.env.get("ARCH_CONFIG") ?? DEFAULT_CONFIG_PATH);
  const scanning = setInterval(() => {
    try {
      requests.scan(daemon.running());
    } catch (error) {
      log.warn("cannot look for checkpoint requests", { error: errorMessage(error) });
    }
  }, REQUEST_SCAN_MS);
  const watching = daemon.run();
  const accepting = (async () => {
    for await (const conn of listener) void serveOne(daemon, conn);
  })();
  try {
    if (await Promise.race([watching.then(() => true), accepting.then(() => false)])) {
      log.info("exit watcher stopped: its directory was removed", { dir: paths.dir });
      return 0;
    }
    log.error("exit watcher stopped: its listener closed");
  } catch (error) {
    log.error("exit watcher failed", { error: String(error) });
  } finally {
    clearInterval(orphaned);
    clearInterval(scanning);
  }
  return 1;
}
