/**
 * Output helpers of the CLI: plain aligned tables and JSON on stdout, a live progress line
 * on a terminal, human units (sizes, ages), and stripping control characters from text a
 * tenant could set before it reaches a terminal. Nothing here reads or changes ARCH's state.
 * Text that can come from a tenant reaches the terminal only through {@link terminalSafe},
 * {@link terminalLine} or {@link terminalLines}: no escape sequence, C1 control, `\r` or `\b`.
 */

/**
 * Prints `rows` under `header` on stdout, each column padded to its widest cell, two spaces
 * apart; cells pass through {@link terminalSafe}.
 */
export function printTable(header: readonly string[], rawRows: readonly (readonly string[])[]): void {
  const rows = rawRows.map((r) => r.map(terminalSafe));
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: readonly string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join("  ").trimEnd();
  console.log([header, ...rows].map(line).join("\n"));
}

/** Prints `value` as indented JSON on stdout (see {@link safeJson}). */
export function printJson(value: unknown): void {
  console.log(safeJson(value, 2));
}

/**
 * `JSON.stringify(value)`, with DEL and the C1 controls (which JSON leaves raw, and some
 * terminals obey) escaped as `\uXXXX` too: still the same JSON value.
 *
 * @example
 * ```ts
 * import { safeJson } from "./output.ts";
 * if (safeJson("a\u009bb") !== '"a\\u009bb"') throw new Error();
 * ```
 */
export function safeJson(value: unknown, indent?: number): string {
  return JSON.stringify(value, null, indent).replace(
    /[\u007f-\u009f]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
}

/**
 * `text` without control characters (C0 including tab and newline, DEL, C1), for printing
 * strings a container or tenant could set (process names, paths, ids, log messages) to a
 * terminal: they cannot move the cursor, retitle the window or fake lines.
 *
 * @example
 * ```ts
 * import { terminalSafe } from "./output.ts";
 * if (terminalSafe("ok\x1b]0;pwned\x07\n\u009b2J") !== "ok]0;pwned2J") throw new Error();
 * ```
 */
export function terminalSafe(text: string): string {
  // deno-lint-ignore no-control-regex
  return text.replace(/[\u0000-\u001f\u007f-\u009f]/g, "");
}

/**
 * `text` as one terminal line: line breaks and tabs become one space, then every other
 * control character goes ({@link terminalSafe}). For messages (errors, results) that embed
 * text a tenant could set: they cannot fake a line of their own.
 *
 * @example
 * ```ts
 * import { terminalLine } from "./output.ts";
 * if (terminalLine("bad\x1b[2J\r\nline\x1b]0;pwned\x07") !== "bad[2J line]0;pwned") throw new Error();
 * ```
 */
export function terminalLine(text: string): string {
  return terminalSafe(text.replace(/[\t\n\r]+/g, " "));
}

/**
 * `text` with its lines kept and each line through {@link terminalSafe} (`\r` included): for
 * multi-line text ARCH writes itself around values that are already safe (a usage error and
 * its hint).
 *
 * @example
 * ```ts
 * import { terminalLines } from "./output.ts";
 * if (terminalLines("a\x1b[2J\r\nb\u009b") !== "a[2J\nb") throw new Error();
 * ```
 */
export function terminalLines(text: string): string {
  return text.split("\n").map(terminalSafe).join("\n");
}

/**
 * A size for people: bytes in B, KiB, MiB, GiB or TiB with one decimal.
 *
 * @example
 * ```ts
 * import { humanBytes } from "./output.ts";
 * if (humanBytes(1536) !== "1.5 KiB" || humanBytes(12) !== "12 B") throw new Error();
 * ```
 */
export function humanBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${v.toFixed(1)} ${units[i]}`;
}

/**
 * A duration for people, coarse: `45s`, `12m`, `3h`, `2d`.
 *
 * @example
 * ```ts
 * import { humanAge } from "./output.ts";
 * if (humanAge(90_000) !== "1m" || humanAge(3 * 86_400_000) !== "3d") throw new Error();
 * ```
 */
export function humanAge(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86_400) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86_400)}d`;
}

const UNIT_MS: Readonly<Record<string, number>> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 };

/**
 * Parses a duration such as `30s`, `15m`, `12h`, `7d`, `2w` (a bare number is days) into ms;
 * `undefined` if it is not one.
 *
 * @example
 * ```ts
 * import { parseDuration } from "./output.ts";
 * if (parseDuration("7d") !== 604_800_000 || parseDuration("x") !== undefined) throw new Error();
 * ```
 */
export function parseDuration(text: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)([smhdw]?)$/.exec(text.trim());
  if (m === null) return undefined;
  const ms = Number(m[1]) * UNIT_MS[m[2] || "d"]!;
  return Number.isFinite(ms) ? ms : undefined;
}

/**
 * The live line of `arch finalize` on a terminal: done/total, failed, elapsed and time left
 * to the deadline, redrawn in place; per-container lines are printed above it.
 */
export class Progress {
  #done = 0;
  #failed = 0;
  #timer: ReturnType<typeof setInterval>;
  readonly #encoder = new TextEncoder();

  constructor(readonly total: number, readonly started: number, readonly deadline: number | undefined) {
    this.#timer = setInterval(() => this.#draw(), 250);
    this.#draw();
  }

  /** Prints a finished container's line (through {@link terminalLine}) above the progress line and counts it. */
  line(text: string, failed: boolean): void {
    this.#done++;
    if (failed) this.#failed++;
    this.#write(`\r\x1b[2K${terminalLine(text)}\n`);
    this.#draw();
  }

  /** Removes the progress line (the per-container lines stay; the caller prints the summary). */
  stop(): void {
    clearInterval(this.#timer);
    this.#write("\r\x1b[2K");
  }

  #draw(): void {
    const now = Date.now();
    const left = this.deadline === undefined ? "" : `, ${Math.max(0, (this.deadline - now) / 1000).toFixed(0)} s left`;
    const elapsed = ((now - this.started) / 1000).toFixed(1);
    this.#write(`\r\x1b[2Kfinalize: ${this.#done}/${this.total} done, ${this.#failed} failed, ${elapsed} s${left}`);
  }

  #write(s: string): void {
    try {
      Deno.stdout.writeSync(this.#encoder.encode(s));
    } catch { /* terminal gone */ }
  }
}
