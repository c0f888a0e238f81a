/**
 * What the runc wrapper and the node's exit watcher say to each other, and the watcher's
 * state file: paths, message validation, state parsing. Pure (no I/O), so it is unit-tested.
 *
 * Files, all under `<stateDir>/exit-watcher/` (directory 0700, files 0600, root-only):
 * - `sock`: the watcher's unix socket. One request per connection, one JSON line each way.
 * - `lock`: flock(2)ed by the running watcher for its lifetime (a second one exits); holds its pid.
 * - `watched.json`: the watched set, so that a restarted watcher re-opens the pidfds of
 *   processes still running (the start time tells a reused pid from the process first seen).
 *
 * Guarantees: every message and state entry is validated field by field (the socket is
 * reachable by root only, but its input is still treated as untrusted): names are safe path
 * segments, pids and fds are integers in range, unknown fields are refused, lines are bounded.
 */

import { isSafeSegment } from "../util/paths.ts";

/** Longest request or reply line accepted, newline included. */
export const MAX_LINE_BYTES = 4096;

/** The kernel's largest possible pid (PID_MAX_LIMIT on 64-bit). */
const PID_MAX = 4_194_304;
/** Far above any real descriptor number; a bound for validation only. */
const FD_MAX = 1 << 30;
/** `createdAt` is an ISO time written by the wrapper; accept that alphabet only. */
const CREATED_AT = /^[0-9A-Za-z:.+-]{1,64}$/;

/** The exit watcher's directory and its files: socket, lock and state file (see the module doc). */
export interface WatcherPaths {
  readonly dir: string;
  readonly socket: string;
  readonly lock: string;
  readonly state: string;
}

/**
 * Where the exit watcher of `stateDir` keeps its files.
 *
 * @example
 * ```ts
 * import { watcherPaths } from "./protocol.ts";
 * if (watcherPaths("/run/arch").socket !== "/run/arch/exit-watcher/sock") throw new Error();
 * ```
 */
export function watcherPaths(stateDir: string): WatcherPaths {
  const dir = `${stateDir.replace(/\/+$/, "")}/exit-watcher`;
  return { dir, socket: `${dir}/sock`, lock: `${dir}/lock`, state: `${dir}/watched.json` };
}

/** Which container's init process to watch. */
export interface WatchTarget {
  readonly namespace: string;
  readonly id: string;
  /** The registry record's `createdAt`: an exit is recorded only on that very record. */
  readonly createdAt: string;
  readonly pid: number;
}

/** The wrapper's request: copy my descriptor `fd` (a pidfd of `pid`) and watch it. */
export interface WatchRequest extends WatchTarget {
  readonly wrapperPid: number;
  readonly fd: number;
}

/** One watched process as the state file keeps it. */
export interface WatchedEntry extends WatchTarget {
  /** Field 22 of `/proc/<pid>/stat` when first seen; `null` if it had already exited. */
  readonly startTime: number | null;
}

/** A validated value, or why the input was refused. */
export type Parsed<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly error: string };

const isPid = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) > 0 && (v as number) <= PID_MAX;
const isFd = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0 && (v as number) < FD_MAX;
const isSegment = (v: unknown): v is string => typeof v === "string" && isSafeSegment(v);
const isCreatedAt = (v: unknown): v is string => typeof v === "string" && CREATED_AT.test(v);
const isStartTime = (v: unknown): v is number | null => v === null || (Number.isSafeInteger(v) && (v as number) >= 0);

function asObject(v: unknown): Record<string, unknown> | undefined {
  return v !== null && typeof v === "object" && !Array.isArray(v) ? v as Record<string, unknown> : undefined;
}

/** Why `o` is not a valid {@link WatchTarget}, or `undefined` if it is. */
function targetProblem(o: Record<string, unknown>): string | undefined {
  if (!isSegment(o.namespace)) return "namespace is not a safe name";
  if (!isSegment(o.id)) return "id is not a safe name";
  if (!isCreatedAt(o.createdAt)) return "createdAt is not a timestamp";
  if (!isPid(o.pid)) return "pid is not a process id";
  return undefined;
}

function onlyKeys(o: Record<string, unknown>, keys: readonly string[]): string | undefined {
  const extra = Object.keys(o).find((k) => !keys.includes(k));
  return extra === undefined ? undefined : `unexpected field "${extra.slice(0, 32)}"`;
}

const REQUEST_KEYS = ["wrapperPid", "fd", "namespace", "id", "createdAt", "pid"] as const;
const ENTRY_KEYS = ["namespace", "id", "createdAt", "pid", "startTime"] as const;

/**
 * Validates one request line from the socket.
 *
 * @example
 * ```ts
 * import { parseRequest } from "./protocol.ts";
 * const line = '{"wrapperPid":7,"fd":5,"namespace":"moby","id":"c1","createdAt":"2025-01-01T00:00:00.000Z","pid":9}';
 * if (!parseRequest(line).ok || parseRequest('{"fd":-1}').ok) throw new Error();
 * ```
 */
export function parseRequest(line: string): Parsed<WatchRequest> {
  if (new TextEncoder().encode(line).length > MAX_LINE_BYTES) return { ok: false, error: "request too long" };
  let raw: unknown;
  try {
    raw = JSON.parse(line);
  } catch {
    return { ok: false, error: "request is not JSON" };
  }
  const o = asObject(raw);
  if (o === undefined) return { ok: false, error: "request is not a JSON object" };
  const problem = onlyKeys(o, REQUEST_KEYS) ??
    (isPid(o.wrapperPid) ? undefined : "wrapperPid is not a process id") ??
    (isFd(o.fd) ? undefined : "fd is not a descriptor number") ??
    targetProblem(o);
  if (problem !== undefined) return { ok: false, error: problem };
  const { wrapperPid, fd, namespace, id, createdAt, pid } = o as unknown as WatchRequest;
  return { ok: true, value: { wrapperPid, fd, namespace, id, createdAt, pid } };
}

/** The request line for `request` (newline-terminated). */
export function encodeRequest(request: WatchRequest): string {
  const { wrapperPid, fd, namespace, id, createdAt, pid } = request;
  return JSON.stringify({ wrapperPid, fd, namespace, id, createdAt, pid }) + "\n";
}

/** The watcher's answer. */
export type Reply = { readonly ok: true } | { readonly ok: false; readonly error: string };

/** The reply line for `reply` (newline-terminated). */
export function encodeReply(reply: Reply): string {
  return JSON.stringify(reply) + "\n";
}

/**
 * Reads the watcher's reply line; anything but a well-formed reply is a failure.
 *
 * @example
 * ```ts
 * import { parseReply } from "./protocol.ts";
 * if (!parseReply('{"ok":true}').ok || parseReply("garbage").ok) throw new Error();
 * ```
 */
export function parseReply(line: string): Reply {
  try {
    const o = asObject(JSON.parse(line));
    if (o?.ok === true) return { ok: true };
    if (o?.ok === false && typeof o.error === "string") return { ok: false, error: o.error.slice(0, 512) };
  } catch {
    // fall through
  }
  return { ok: false, error: "malformed reply from the exit watcher" };
}

/** The key of a watched process: a container id may come back with a new `createdAt`. */
export function entryKey(t: WatchTarget): string {
  return `${t.namespace}/${t.id}/${t.createdAt}`;
}

/**
 * Parses the state file. Entries that do not validate are dropped and counted (a damaged
 * file costs those containers their exit status, never the watcher); a file that is not
 * the expected object yields no entries.
 *
 * @example
 * ```ts
 * import { parseWatchedState } from "./protocol.ts";
 * const text = '{"version":1,"watched":[{"namespace":"moby","id":"c1","createdAt":"t","pid":9,"startTime":5},{"pid":0}]}';
 * const { entries, skipped } = parseWatchedState(text);
 * if (entries.length !== 1 || skipped !== 1) throw new Error();
 * ```
 */
export function parseWatchedState(text: string): { entries: WatchedEntry[]; skipped: number } {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    return { entries: [], skipped: 1 };
  }
  const o = asObject(raw);
  if (o === undefined || o.version !== 1 || !Array.isArray(o.watched)) return { entries: [], skipped: 1 };
  const entries: WatchedEntry[] = [];
  const seen = new Set<string>();
  let skipped = 0;
  for (const item of o.watched as unknown[]) {
    const e = asObject(item);
    if (
      e === undefined || onlyKeys(e, ENTRY_KEYS) !== undefined || targetProblem(e) !== undefined ||
      !isStartTime(e.startTime)
    ) {
      skipped++;
      continue;
    }
    const { namespace, id, createdAt, pid, startTime } = e as unknown as WatchedEntry;
    const entry = { namespace, id, createdAt, pid, startTime };
    if (seen.has(entryKey(entry))) {
      skipped++;
      continue;
    }
    seen.add(entryKey(entry));
    entries.push(entry);
  }
  return { entries, skipped };
}

/** The state file's text for `entries`. */
export function encodeWatchedState(entries: readonly WatchedEntry[]): string {
  const watched = entries.map(({ namespace, id, createdAt, pid, startTime }) => ({
    namespace,
    id,
    createdAt,
    pid,
    startTime,
  }));
  return JSON.stringify({ version: 1, watched }) + "\n";
}
