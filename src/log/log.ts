/**
 * ARCH's own log: one JSON object per line, appended with a single `write(2)` per record so
 * that short-lived wrapper processes running at the same time never interleave or lose
 * lines. Never writes to stdout or stderr. Logging never throws: a log that cannot be
 * written must not break a container.
 *
 * Bounded, whatever a tenant puts in the values logged: every string of a record is cut to
 * {@link MAX_FIELD_CHARS} (with a `…(+N chars)` marker), a line to {@link MAX_LINE_BYTES},
 * and a file that reached {@link MAX_LOG_BYTES} is renamed to `<file>.1` (the older `.1`
 * goes) by exactly one of the processes that see it full; no record is lost to a rotation.
 */

/** Severity of a log record, written as its `level` field. */
export type Level = "debug" | "info" | "warn" | "error";

/** Longest string value (message, field, nested string) a record keeps, characters. */
export const MAX_FIELD_CHARS = 1024;
/** Longest line of the log, bytes: a longer record is written with its message cut and its fields dropped. */
export const MAX_LINE_BYTES = 8192;
/** Size at which the log file is rotated to `<file>.1`, bytes (see {@link AppendOptions}). */
export const MAX_LOG_BYTES = 16 << 20;
/** Longest message {@link writeRuncLogError} writes, characters (the sentence the engine shows). */
export const MAX_RUNC_MSG_CHARS = 4096;

/** Nesting a record keeps (deeper values are replaced by a marker), and items kept per array or object. */
const MAX_DEPTH = 8;
const MAX_ITEMS = 64;
/** Characters of the message kept by a record that was over {@link MAX_LINE_BYTES}. */
const FALLBACK_MSG_CHARS = 1024;

const encoder = new TextEncoder();

/**
 * `text` cut to its first `max` characters followed by `…(+N chars)` (N: the characters
 * dropped); unchanged when not longer than `max`. A surrogate pair is never split.
 *
 * @example
 * ```ts
 * import { truncate } from "./log.ts";
 * if (truncate("abcdef", 4) !== "abcd…(+2 chars)" || truncate("abc", 4) !== "abc") throw new Error();
 * ```
 */
export function truncate(text: string, max: number): string {
  if (text.length <= max) return text;
  let end = Math.max(0, Math.floor(max));
  const last = text.charCodeAt(end - 1);
  if (last >= 0xd800 && last <= 0xdbff) end--;
  return `${text.slice(0, end)}…(+${text.length - end} chars)`;
}

/**
 * `value` as a JSON string for a sentence (`VAR=<quoted>`), cut to `max` characters (see
 * {@link truncate}), with every control character escaped: JSON's C0 escapes, and DEL, C1,
 * line/paragraph separators and bidirectional overrides as `\uXXXX`.
 *
 * @example
 * ```ts
 * import { quoteValue } from "./log.ts";
 * if (quoteValue("a\x1b[2J\u009b") !== '"a\\u001b[2J\\u009b"') throw new Error();
 * if (quoteValue("x".repeat(300), 3) !== '"xxx…(+297 chars)"') throw new Error();
 * ```
 */
export function quoteValue(value: string, max = 200): string {
  return JSON.stringify(truncate(value, max)).replace(
    /[\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
}

/** `value` with every string cut to `max` characters, arrays and objects to {@link MAX_ITEMS} items and {@link MAX_DEPTH} levels. */
function bounded(value: unknown, max: number, depth = 0): unknown {
  if (typeof value === "string") return truncate(value, max);
  if (typeof value === "bigint") return String(value);
  if (value === null || typeof value !== "object") return value;
  if (depth >= MAX_DEPTH) return "…(nested too deep)";
  if (value instanceof Error) return truncate(`${value.name}: ${value.message}`, max);
  const toJSON = (value as { toJSON?: unknown }).toJSON;
  if (typeof toJSON === "function") return bounded(toJSON.call(value), max, depth + 1);
  if (Array.isArray(value)) {
    const items = value.slice(0, MAX_ITEMS).map((v) => bounded(v, max, depth + 1));
    if (value.length > MAX_ITEMS) items.push(`…(+${value.length - MAX_ITEMS} items)`);
    return items;
  }
  const out: Record<string, unknown> = {};
  let kept = 0, dropped = 0;
  for (const key in value) {
    if (!Object.hasOwn(value, key)) continue;
    if (kept++ >= MAX_ITEMS) dropped++;
    else out[truncate(key, max)] = bounded((value as Record<string, unknown>)[key], max, depth + 1);
  }
  if (dropped > 0) out["…"] = `+${dropped} fields`;
  return out;
}

/** How {@link appendJsonLine} bounds a record and its file. */
export interface AppendOptions {
  /** Rotate the file to `<file>.1` once it holds this many bytes (default {@link MAX_LOG_BYTES}; `Infinity`: never). */
  readonly rotateBytes?: number;
  /** Longest string value, characters (default {@link MAX_FIELD_CHARS}). */
  readonly maxFieldChars?: number;
  /** Longest line, bytes (default {@link MAX_LINE_BYTES}). */
  readonly maxLineBytes?: number;
}

/**
 * The line of `record` (see the module doc): strings cut to `maxFieldChars`; a line still
 * over `maxLineBytes` keeps `time`, `level`, `pid` and the message cut, and says its fields
 * were dropped.
 *
 * @example
 * ```ts
 * import { jsonLine } from "./log.ts";
 * const line = new TextDecoder().decode(jsonLine({ msg: "m", env: "x".repeat(5000) }));
 * if (JSON.parse(line).env !== "x".repeat(1024) + "…(+3976 chars)") throw new Error();
 * const many = Object.fromEntries([...Array(40).keys()].map((i) => [`f${i}`, "y".repeat(1000)]));
 * const short = JSON.parse(new TextDecoder().decode(jsonLine({ msg: "m", ...many })));
 * if (short.msg !== "m" || short.f0 !== undefined || !/fields were dropped/.test(short.truncated)) throw new Error();
 * ```
 */
export function jsonLine(record: object, options: AppendOptions = {}): Uint8Array {
  const maxChars = options.maxFieldChars ?? MAX_FIELD_CHARS;
  const maxBytes = options.maxLineBytes ?? MAX_LINE_BYTES;
  const whole = encoder.encode(JSON.stringify(bounded(record, maxChars)) + "\n");
  if (whole.length <= maxBytes) return whole;
  const r = record as Record<string, unknown>;
  const msg = typeof r.msg === "string" ? r.msg : String(r.msg ?? "");
  const rest = bounded({ time: r.time, level: r.level, pid: r.pid }, 64) as Record<string, unknown>;
  const truncated = `record of ${whole.length} bytes, over ${maxBytes}: its fields were dropped`;
  for (let keep = Math.min(maxChars, FALLBACK_MSG_CHARS);; keep = Math.floor(keep / 2)) {
    const line = encoder.encode(JSON.stringify({ ...rest, msg: truncate(msg, keep), truncated }) + "\n");
    if (line.length <= maxBytes || keep === 0) return line;
  }
}

function openAppend(path: string): Deno.FsFile {
  return Deno.openSync(path, { append: true, create: true, mode: 0o600 });
}

/** Whether `path` still names the file `info` describes (same device and inode). */
function isAt(path: string, info: Deno.FileInfo): boolean {
  try {
    const now = Deno.statSync(path);
    return now.ino === info.ino && now.dev === info.dev;
  } catch {
    return false;
  }
}

/**
 * Rotates a full log: if `file` (just opened on `path`) holds `rotateBytes` or more, renames
 * `path` to `<path>.1`, unless another process did already. The check and the rename happen
 * under `flock` of that file, so of all the processes that opened it only the first renames
 * (the others then see `path` name another file). Returns whether the caller must reopen
 * `path`; false too when the rotation failed (the record then goes to the file as it is).
 */
function rotated(path: string, file: Deno.FsFile, rotateBytes: number): boolean {
  try {
    const info = file.statSync();
    if (info.size < rotateBytes) return false;
    file.lockSync(true);
    try {
      if (isAt(path, info)) Deno.renameSync(path, `${path}.1`);
      return true;
    } finally {
      file.unlockSync();
    }
  } catch {
    return false;
  }
}

/**
 * Appends `bytes` to `path` (created 0600) in one write, rotating a full file first (see
 * {@link rotated}); if the new file cannot be opened, the record goes to the old one.
 */
function appendBytes(path: string, bytes: Uint8Array, rotateBytes: number): void {
  using first = openAppend(path);
  let fresh: Deno.FsFile | undefined;
  try {
    if (rotated(path, first, rotateBytes)) fresh = openAppend(path);
  } catch { /* keep the record in the file already open */ }
  using _fresh = fresh;
  (fresh ?? first).writeSync(bytes);
}

/**
 * Appends one JSON line to `path` (created 0600), bounded and rotated as the module doc says
 * (limits in `options`). Best effort, silent on failure.
 *
 * @example
 * ```ts
 * import { appendJsonLine } from "./log.ts";
 * const dir = Deno.makeTempDirSync();
 * appendJsonLine(`${dir}/a.log`, { msg: "one" }, { rotateBytes: 1 });
 * appendJsonLine(`${dir}/a.log`, { msg: "two" }, { rotateBytes: 1 }); // a.log was full: it becomes a.log.1
 * if (JSON.parse(Deno.readTextFileSync(`${dir}/a.log.1`)).msg !== "one") throw new Error();
 * if (JSON.parse(Deno.readTextFileSync(`${dir}/a.log`)).msg !== "two") throw new Error();
 * Deno.removeSync(dir, { recursive: true });
 * ```
 */
export function appendJsonLine(path: string, record: object, options: AppendOptions = {}): void {
  try {
    appendBytes(path, jsonLine(record, options), options.rotateBytes ?? MAX_LOG_BYTES);
  } catch {
    // best effort: see module comment
  }
}

/** Rank of each level: a logger keeps records at or above its minimum (host config `logLevel`). */
export const LEVEL_RANK: Readonly<Record<Level, number>> = { debug: 10, info: 20, warn: 30, error: 40 };

/**
 * A logger bound to one file, a set of context fields (component, container id...), a minimum
 * level, and the size at which its file is rotated (default {@link MAX_LOG_BYTES}).
 */
export class Logger {
  constructor(
    readonly path: string | undefined,
    readonly context: Readonly<{ [k: string]: unknown }> = {},
    readonly minLevel: Level = "info",
    readonly rotateBytes: number = MAX_LOG_BYTES,
  ) {}

  /** The same logger with more context fields. */
  with(fields: { [k: string]: unknown }): Logger {
    return new Logger(this.path, { ...this.context, ...fields }, this.minLevel, this.rotateBytes);
  }

  /** Appends one record unless `level` is below the logger's minimum. */
  log(level: Level, msg: string, fields: { [k: string]: unknown } = {}): void {
    if (this.path === undefined || LEVEL_RANK[level] < LEVEL_RANK[this.minLevel]) return;
    appendJsonLine(this.path, {
      time: new Date().toISOString(),
      level,
      msg,
      pid: Deno.pid,
      ...this.context,
      ...fields,
    }, { rotateBytes: this.rotateBytes });
  }

  /** Logs at `debug`. */
  debug(msg: string, fields?: { [k: string]: unknown }): void {
    this.log("debug", msg, fields);
  }
  /** Logs at `info`. */
  info(msg: string, fields?: { [k: string]: unknown }): void {
    this.log("info", msg, fields);
  }
  /** Logs at `warn`. */
  warn(msg: string, fields?: { [k: string]: unknown }): void {
    this.log("warn", msg, fields);
  }
  /** Logs at `error`. */
  error(msg: string, fields?: { [k: string]: unknown }): void {
    this.log("error", msg, fields);
  }
}

/** Longest line {@link writeRuncLogError} writes, bytes: room for {@link MAX_RUNC_MSG_CHARS} escaped characters. */
const RUNC_LINE_BYTES = 8 * MAX_RUNC_MSG_CHARS;

/**
 * Writes an error where the engine looks for runc's errors: runc's `--log` file, in the
 * format chosen by `--log-format` (containerd reads the last `"level":"error"` line of
 * `log.json` and puts its `msg` into the error `ctr`/`docker` print). The message is kept
 * whole up to {@link MAX_RUNC_MSG_CHARS} characters, cut with the `…(+N chars)` marker
 * beyond; that file is the engine's and is never rotated.
 *
 * @example
 * ```ts
 * import { writeRuncLogError } from "./log.ts";
 * const dir = Deno.makeTempDirSync();
 * writeRuncLogError(`${dir}/log.json`, "json", "refused: " + "x".repeat(10_000));
 * const { msg } = JSON.parse(Deno.readTextFileSync(`${dir}/log.json`));
 * if (msg !== "refused: " + "x".repeat(4096 - 9) + "…(+5913 chars)") throw new Error(msg);
 * Deno.removeSync(dir, { recursive: true });
 * ```
 */
export function writeRuncLogError(logPath: string | undefined, format: string | undefined, msg: string): void {
  if (logPath === undefined || logPath === "/dev/stderr" || logPath === "/dev/stdout") return;
  const time = new Date().toISOString();
  if (format === "json") {
    appendJsonLine(logPath, { level: "error", msg, time }, {
      rotateBytes: Infinity,
      maxFieldChars: MAX_RUNC_MSG_CHARS,
      maxLineBytes: RUNC_LINE_BYTES,
    });
    return;
  }
  try {
    const line = `time="${time}" level=error msg=${JSON.stringify(truncate(msg, MAX_RUNC_MSG_CHARS))}\n`;
    appendBytes(logPath, encoder.encode(line), Infinity);
  } catch {
    // best effort
  }
}
