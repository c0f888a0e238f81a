/**
 * CRIU's logs, kept with ARCH's own logs so that they outlive the container: the engine
 * deletes the bundle directory, and the checkpoint's work directory, with the container.
 *
 *     <log dir>/criu/<scope>/<key>/      (the key scope, e.g. `moby` or `pool1+k8s.io+team-a`)
 *         <stamp>-dump-failed.log    one per failed dump or restore (the newest 5 kept)
 *         <stamp>-restore-failed.log
 *         last-dump.log              the last successful dump and restore
 *         last-restore.log
 *
 * Guarantees: bounded: each file holds at most the last 1 MiB of CRIU's log (where the
 * error is), at most 5 failure logs per key, at most 256 keys (the least recently written go
 * first). Directories 0700, files 0600 (a CRIU log names files and sockets of the
 * container). Keeping a log never throws: a log that cannot be kept must not turn a
 * successful checkpoint into a failure.
 */

import { readTail } from "../util/dirfd.ts";
import { isSafeSegment } from "../util/paths.ts";

/** Most bytes of a CRIU log kept per file: its tail, where CRIU writes the error. */
export const MAX_LOG_BYTES = 1 << 20;
/** Failure logs kept per key; older ones are removed. */
export const MAX_FAILED_PER_KEY = 5;
/** Key directories kept in all; the least recently written are removed first. */
export const MAX_KEYS = 256;

/** The CRIU operation a log comes from; it names the kept file (`last-dump.log`, `<stamp>-restore-failed.log`). */
export type CriuAction = "dump" | "restore";

/** `<log dir>/criu` for ARCH's log file `logFile`. */
export function criuLogDir(logFile: string): string {
  return `${logFile.slice(0, logFile.lastIndexOf("/")) || "/"}/criu`;
}

function stamp(): string {
  return new Date().toISOString().replace(/[-:.]/g, "");
}

/** The last `max` bytes of the log `source` (a regular file, never followed through a link or read from a FIFO). */
export function logTail(source: string, max = MAX_LOG_BYTES): Uint8Array {
  return readTail(source, max);
}

/** Copies the last `max` bytes of `source` to `dest` (0600). */
function copyTail(source: string, dest: string, max: number): void {
  const tail = logTail(source, max);
  const tmp = `${dest}.${Deno.pid}.tmp`;
  Deno.writeFileSync(tmp, tail, { mode: 0o600 });
  Deno.renameSync(tmp, dest);
}

function entries(dir: string): Deno.DirEntry[] {
  try {
    return [...Deno.readDirSync(dir)];
  } catch {
    return [];
  }
}

const mtime = (path: string) => {
  try {
    return Deno.statSync(path).mtime?.getTime() ?? 0;
  } catch {
    return 0;
  }
};

/**
 * Keeps CRIU's log `source` of a `action` on `scope/key`. Returns where it is kept, or
 * `undefined` if it could not be (no source, unsafe names, I/O error).
 */
export function keepCriuLog(
  root: string,
  namespace: string,
  key: string,
  action: CriuAction,
  succeeded: boolean,
  source: string,
): string | undefined {
  if (!isSafeSegment(namespace) || !isSafeSegment(key)) return undefined;
  try {
    const dir = `${root}/${namespace}/${key}`;
    Deno.mkdirSync(dir, { recursive: true, mode: 0o700 });
    for (const d of [root, `${root}/${namespace}`, dir]) Deno.chmodSync(d, 0o700);
    const dest = succeeded ? `${dir}/last-${action}.log` : `${dir}/${stamp()}-${action}-failed.log`;
    copyTail(source, dest, MAX_LOG_BYTES);
    const failed = entries(dir).map((e) => e.name).filter((n) => n.endsWith("-failed.log")).sort();
    for (const old of failed.slice(0, Math.max(0, failed.length - MAX_FAILED_PER_KEY))) {
      Deno.removeSync(`${dir}/${old}`);
    }
    pruneKeys(root);
    return dest;
  } catch {
    return undefined;
  }
}

/** Removes the least recently written key directories beyond {@link MAX_KEYS}. */
function pruneKeys(root: string): void {
  const keys = entries(root).filter((e) => e.isDirectory).flatMap((ns) =>
    entries(`${root}/${ns.name}`).filter((e) => e.isDirectory).map((k) => `${root}/${ns.name}/${k.name}`)
  );
  if (keys.length <= MAX_KEYS) return;
  const byAge = keys.map((path) => ({ path, time: mtime(path) })).sort((a, b) => a.time - b.time);
  for (const { path } of byAge.slice(0, keys.length - MAX_KEYS)) Deno.removeSync(path, { recursive: true });
}
