/**
 * Process identity that survives pid reuse: a pid plus the process's start time (field 22
 * of `/proc/<pid>/stat`, clock ticks since boot). Markers and claims that name their owner
 * this way are never mistaken for a live owner once that process died and the pid came back.
 */

/** A process named by its pid and start time, so that a reused pid is not taken for it. */
export interface ProcessIdentity {
  readonly pid: number;
  /** Start time in clock ticks since boot; `undefined` if it could not be read. */
  readonly start: number | undefined;
}

/** Start time of `pid` (clock ticks since boot), or `undefined` if the process does not exist. */
export function processStartTime(pid: number): number | undefined {
  let stat: string;
  try {
    stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  } catch {
    return undefined;
  }
  return parseStartTime(stat);
}

/**
 * Field 22 (`starttime`) of a `/proc/<pid>/stat` line, `undefined` unless it is a whole
 * number. The command name (field 2) may hold spaces, parentheses and newlines, so fields
 * are counted after its last `)`.
 *
 * @example
 * ```ts
 * import { parseStartTime } from "./liveness.ts";
 * const line = "42 (a b) c) S 1 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 987654 1000 10";
 * if (parseStartTime(line) !== 987654) throw new Error();
 * ```
 */
export function parseStartTime(stat: string): number | undefined {
  const close = stat.lastIndexOf(")");
  if (close < 0) return undefined;
  const field = stat.slice(close + 1).trim().split(/\s+/)[19]; // rest[0] is field 3 (state), so field 22 is [19]
  if (field === undefined || !/^\d{1,19}$/.test(field)) return undefined;
  const value = Number(field);
  return Number.isSafeInteger(value) ? value : undefined;
}

/** This process. */
export function selfIdentity(): ProcessIdentity {
  return { pid: Deno.pid, start: processStartTime(Deno.pid) };
}

/** Whether the process `id` names is still alive (same pid, same start time). */
export function isAlive(id: ProcessIdentity): boolean {
  const start = processStartTime(id.pid);
  return start !== undefined && (id.start === undefined || start === id.start);
}
