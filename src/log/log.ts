/**
 * ARCH's own log: one JSON object per line, appended with a single `write(2)` per record so
 * that short-lived wrapper processes running at the same time never interleave or lose
 * lines. Never writes to stdout or stderr. Logging never throws: a log that cannot be
 * written must not break a container.
 */

/** Severity of a log record, written as its `level` field. */
export type Level = "debug" | "info" | "warn" | "error";

const encoder = new TextEncoder();

/** Appends one JSON line to `path` (created 0600). Best effort, silent on failure. */
export function appendJsonLine(path: string, record: object): void {
  try {
    const file = Deno.openSync(path, { append: true, create: true, mode: 0o600 });
    try {
      file.writeSync(encoder.encode(JSON.stringify(record) + "\n"));
    } finally {
      file.close();
    }
  } catch {
    // best effort: see module comment
  }
}

/** Rank of each level: a logger keeps records at or above its minimum (host config `logLevel`). */
export const LEVEL_RANK: Readonly<Record<Level, number>> = { debug: 10, info: 20, warn: 30, error: 40 };

/** A logger bound to one file, a set of context fields (component, container id...) and a minimum level. */
export class Logger {
  constructor(
    readonly path: string | undefined,
    readonly context: Readonly<{ [k: string]: unknown }> = {},
    readonly minLevel: Level = "info",
  ) {}

  /** The same logger with more context fields. */
  with(fields: { [k: string]: unknown }): Logger {
    return new Logger(this.path, { ...this.context, ...fields }, this.minLevel);
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
    });
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

/**
 * Writes an error where the engine looks for runc's errors: runc's `--log` file, in the
 * format chosen by `--log-format` (containerd reads the last `"level":"error"` line of
 * `log.json` and puts its `msg` into the error `ctr`/`docker` print).
 */
export function writeRuncLogError(logPath: string | undefined, format: string | undefined, msg: string): void {
  if (logPath === undefined || logPath === "/dev/stderr" || logPath === "/dev/stdout") return;
  const time = new Date().toISOString();
  if (format === "json") {
    appendJsonLine(logPath, { level: "error", msg, time });
    return;
  }
  try {
    const file = Deno.openSync(logPath, { append: true, create: true, mode: 0o600 });
    try {
      file.writeSync(encoder.encode(`time="${time}" level=error msg=${JSON.stringify(msg)}\n`));
    } finally {
      file.close();
    }
  } catch {
    // best effort
  }
}
