/**
 * `arch log`: ARCH's own log (host config `logFile`, one JSON object per line) for people
 * (`time level component msg key=value...`) or as JSON lines, filtered by minimum level,
 * container, key and time, optionally following the file as it grows. Read-only. Says so
 * (on stderr) when the file is not root-owned with mode 0600: it names containers, keys and
 * paths. Lines that are not JSON objects are skipped. Printed records carry no control
 * characters (a message or field a container could set cannot drive the terminal).
 */

import { loadHostConfig } from "../config/host_schema.ts";
import { type Level, LEVEL_RANK } from "../log/log.ts";
import { errorMessage, UsageError } from "../util/errors.ts";
import { parseDuration, safeJson, terminalSafe } from "./output.ts";

/** `arch log`'s options as commander gives them. */
export interface LogOptions {
  readonly level?: string;
  readonly file?: string;
  readonly container?: string;
  readonly key?: string;
  readonly since?: string;
  readonly follow?: boolean;
  readonly json?: boolean;
}

/** Which records to show. */
export interface LogFilter {
  readonly minLevel: Level;
  /** Container id or prefix (field `id`). */
  readonly container?: string;
  /** Checkpoint key (field `key`). */
  readonly key?: string;
  /** Epoch ms; older records are skipped. */
  readonly since?: number;
}

/** A parsed log record. */
export type LogRecord = { readonly [k: string]: unknown };

/**
 * The filter the options ask for; {@link UsageError} on a bad value.
 *
 * @example
 * ```ts
 * import { logFilter } from "./log.ts";
 * if (logFilter({ level: "warn" }, 0).minLevel !== "warn") throw new Error();
 * ```
 */
export function logFilter(opts: LogOptions, now: number): LogFilter {
  const level = opts.level ?? "debug";
  if (!Object.hasOwn(LEVEL_RANK, level)) {
    throw new UsageError(`--level "${level}" is not one of debug, info, warn, error`);
  }
  let since: number | undefined;
  if (opts.since !== undefined) {
    const ms = parseDuration(opts.since);
    since = ms !== undefined ? now - ms : Date.parse(opts.since);
    if (!Number.isFinite(since)) {
      throw new UsageError(
        `--since "${opts.since}" is neither a duration (30m, 2h, 1d) nor a date (2026-11-29T10:00Z)`,
      );
    }
  }
  return {
    minLevel: level as Level,
    ...(opts.container !== undefined ? { container: opts.container } : {}),
    ...(opts.key !== undefined ? { key: opts.key } : {}),
    ...(since !== undefined ? { since } : {}),
  };
}

/** The record of one line, or `undefined` if the line is not a JSON object. */
export function parseLogLine(line: string): LogRecord | undefined {
  if (!line.startsWith("{")) return undefined;
  try {
    const v = JSON.parse(line);
    return v !== null && typeof v === "object" && !Array.isArray(v) ? v : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Whether `record` passes `filter`.
 *
 * @example
 * ```ts
 * import { matches } from "./log.ts";
 * if (!matches({ level: "error", id: "abc123" }, { minLevel: "warn", container: "abc" })) throw new Error();
 * if (matches({ level: "info" }, { minLevel: "warn" })) throw new Error();
 * ```
 */
export function matches(record: LogRecord, filter: LogFilter): boolean {
  const level = typeof record.level === "string" && Object.hasOwn(LEVEL_RANK, record.level) ? record.level : "info";
  const rank = LEVEL_RANK[level as Level];
  if (rank < LEVEL_RANK[filter.minLevel]) return false;
  if (filter.container !== undefined) {
    const id = typeof record.id === "string" ? record.id : typeof record.container === "string" ? record.container : "";
    if (!id.startsWith(filter.container)) return false;
  }
  if (filter.key !== undefined && record.key !== filter.key) return false;
  if (filter.since !== undefined) {
    const t = typeof record.time === "string" ? Date.parse(record.time) : NaN;
    if (!(t >= filter.since)) return false;
  }
  return true;
}

const SHOWN = new Set(["time", "level", "component", "msg"]);

/**
 * One record for people: `time level component msg key=value...` (values JSON-quoted when
 * they are not plain words).
 *
 * @example
 * ```ts
 * import { formatRecord } from "./log.ts";
 * const line = formatRecord({ time: "T", level: "warn", component: "hook", msg: "m", id: "c1", n: 2 });
 * if (line !== "T warn  hook m id=c1 n=2") throw new Error(line);
 * ```
 */
export function formatRecord(record: LogRecord): string {
  const fields = Object.entries(record).filter(([k]) => !SHOWN.has(k)).map(([k, v]) => {
    const text = typeof v === "string" && /^[\w.:/@+-]+$/.test(v) ? v : safeJson(v);
    return `${terminalSafe(k)}=${text}`;
  });
  const head = [String(record.time ?? "-"), String(record.level ?? "-").padEnd(5), String(record.component ?? "-")];
  return terminalSafe([...head, String(record.msg ?? ""), ...fields].join(" "));
}

/** Why `path` is not a root-owned 0600 file, or `undefined`. */
export function logFileProblem(path: string, info: Pick<Deno.FileInfo, "uid" | "mode" | "isFile">): string | undefined {
  if (!info.isFile) return `log file "${path}" is not a regular file`;
  if (info.uid !== 0) return `log file "${path}" is owned by uid ${info.uid}, not root: chown root "${path}"`;
  if (info.mode !== null && (info.mode & 0o077) !== 0) {
    return `log file "${path}" has mode ${(info.mode & 0o777).toString(8)}, not 0600 (it names containers and keys): ` +
      `chmod 600 "${path}"`;
  }
  return undefined;
}

/** `arch log`: see the module doc. Returns 0 (1 if the file cannot be read). Requires root to read the default log. */
export async function log(opts: LogOptions): Promise<number> {
  const filter = logFilter(opts, Date.now());
  const path = opts.file ?? loadHostConfig().logFile;
  let info: Deno.FileInfo;
  try {
    info = Deno.statSync(path);
  } catch {
    if (!opts.follow) {
      console.error(`arch: log file "${path}" does not exist yet (nothing logged)`);
      return 0;
    }
    info = await waitForFile(path);
  }
  const problem = logFileProblem(path, info);
  if (problem !== undefined) console.error(`arch: ${problem}`);
  const emit = (line: string) => {
    const record = parseLogLine(line);
    if (record !== undefined && matches(record, filter)) {
      console.log(opts.json ? safeJson(record) : formatRecord(record));
    }
  };
  let offset = 0;
  let rest = "";
  const decoder = new TextDecoder();
  const readMore = () => {
    const file = Deno.openSync(path, { read: true });
    try {
      const size = file.statSync().size;
      if (size < offset) offset = 0; // rotated or truncated: start over
      file.seekSync(offset, Deno.SeekMode.Start);
      const buf = new Uint8Array(1 << 20);
      for (;;) {
        const n = file.readSync(buf);
        if (n === null || n === 0) break;
        offset += n;
        const text = rest + decoder.decode(buf.subarray(0, n), { stream: true });
        const lines = text.split("\n");
        rest = lines.pop() ?? "";
        for (const line of lines) emit(line);
      }
    } finally {
      file.close();
    }
  };
  try {
    readMore();
  } catch (error) {
    console.error(`arch: cannot read log file "${path}": ${errorMessage(error)}`);
    return 1;
  }
  if (!opts.follow) {
    if (rest !== "") emit(rest);
    return 0;
  }
  for (;;) {
    await new Promise((r) => setTimeout(r, 500));
    try {
      readMore();
    } catch { /* the file is being rotated: try again */ }
  }
}

async function waitForFile(path: string): Promise<Deno.FileInfo> {
  for (;;) {
    try {
      return Deno.statSync(path);
    } catch {
      await new Promise((r) => setTimeout(r, 500));
    }
  }
}
