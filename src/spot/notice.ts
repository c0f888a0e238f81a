/**
 * What every provider reports to the watch loop: notices, each with a stable identity (the
 * loop finalizes once per identity), and the deadline rule that turns a notice's time into
 * `arch finalize --deadline`. Pure; no I/O.
 */

/** The clouds the watcher speaks to. */
export type ProviderName = "aws" | "gcp" | "azure";

/** Every provider name, in detection order. */
export const PROVIDERS: readonly ProviderName[] = ["aws", "gcp", "azure"];

/**
 * The kind of a notice: a reclaim (`terminate`, `stop`, `hibernate` from AWS, `preempt` from
 * GCP and Azure) or an AWS rebalance recommendation (`rebalance`: the instance is at
 * elevated risk, nothing is scheduled yet).
 */
export type NoticeKind = "terminate" | "stop" | "hibernate" | "preempt" | "rebalance";

/** One notice as a provider reports it. */
export interface Notice {
  /** Stable for as long as the cloud reports the same notice; a new notice gets a new id. */
  readonly id: string;
  readonly kind: NoticeKind;
  /** When the node goes away (ISO 8601), if the cloud says; `null` when it does not. */
  readonly time: string | null;
  /** The cloud's own fields (event id, raw answer), for the log and the status file. */
  readonly detail: Readonly<Record<string, unknown>>;
}

/**
 * What one poll of a provider saw: every notice currently reported (none: an empty list).
 * `error` says that part of the poll failed (e.g. AWS's rebalance request): the notices seen
 * are still acted on, and the poll counts as failed (recorded, retried with backoff).
 */
export interface Observation {
  readonly notices: readonly Notice[];
  readonly error?: string;
}

/** Deadline used when a notice has no time or its time leaves less than this: seconds. */
export const DEADLINE_FLOOR_SECONDS = 10;

/** Default safety margin between the end of finalize and the notice time: seconds. */
export const DEFAULT_MARGIN_SECONDS = 5;

/**
 * The longest notice each cloud documents, seconds: a notice time further ahead (clock skew,
 * a bogus answer) counts as this far ahead. AWS gives 2 minutes, GCP 30 s; Azure Spot's
 * `Preempt` gives at least 30 s, and Scheduled Events' longest `NotBefore` lead (any event
 * type) is 15 minutes, which is the cap taken for Azure.
 */
export const MAX_NOTICE_SECONDS: Readonly<Record<ProviderName, number>> = { aws: 120, gcp: 30, azure: 900 };

/** The longest delay a timer takes (2^31-1 ms, about 24.8 days); longer ones fire at once. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * `ms` as a safe timer delay: a whole number in `[0, MAX_TIMER_MS]` (NaN: 0). A delay beyond
 * 2^31-1 ms would make `setTimeout` fire at once.
 *
 * @example
 * ```ts
 * import { clampTimerMs, MAX_TIMER_MS } from "./notice.ts";
 * if (clampTimerMs(2 ** 40) !== MAX_TIMER_MS || clampTimerMs(-5) !== 0 || clampTimerMs(1.6) !== 2) throw new Error();
 * ```
 */
export function clampTimerMs(ms: number): number {
  if (Number.isNaN(ms)) return 0;
  return Math.min(MAX_TIMER_MS, Math.max(0, Math.round(ms)));
}

/**
 * `s` with every control character but tab (C0, DEL, C1, and the Unicode line/paragraph
 * separators and bidi overrides) written as an escape (`\x1b`, `\u202e`): strings from a metadata server
 * (event ids, bodies in error messages) may then go to a terminal or journald as one line.
 *
 * @example
 * ```ts
 * import { printable } from "./notice.ts";
 * if (printable("a\r\nb\x1b[2J") !== "a\\x0d\\x0ab\\x1b[2J") throw new Error();
 * ```
 */
export function printable(s: string): string {
  // deno-lint-ignore no-control-regex
  return s.replace(/[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g, (c) => {
    const code = c.charCodeAt(0);
    return code <= 0xff ? `\\x${code.toString(16).padStart(2, "0")}` : `\\u${code.toString(16).padStart(4, "0")}`;
  });
}

/**
 * `arch finalize --deadline` for a notice: the seconds left until the notice's time (at most
 * `maxNoticeS`, the cloud's longest notice: see {@link MAX_NOTICE_SECONDS}), minus `marginS`,
 * never below `floorS` (a notice without a time, or one already past, still gets a short
 * finalize: checkpointing something beats checkpointing nothing). Whole-millisecond
 * precision, rounded down to 0.1 s.
 *
 * @example
 * ```ts
 * import { deadlineSeconds } from "./notice.ts";
 * const now = Date.parse("2026-01-01T00:00:00Z");
 * if (deadlineSeconds("2026-01-01T00:02:00Z", now, 5) !== 115) throw new Error();
 * if (deadlineSeconds(null, now, 5) !== 10) throw new Error();
 * if (deadlineSeconds("2025-12-31T23:00:00Z", now, 5) !== 10) throw new Error();
 * if (deadlineSeconds("2026-01-31T00:00:00Z", now, 5, 10, 120) !== 115) throw new Error();
 * ```
 */
export function deadlineSeconds(
  time: string | null,
  nowMs: number,
  marginS: number,
  floorS: number = DEADLINE_FLOOR_SECONDS,
  maxNoticeS: number = Math.max(...Object.values(MAX_NOTICE_SECONDS)),
): number {
  const at = time === null ? NaN : Date.parse(time);
  if (!Number.isFinite(at)) return floorS;
  const left = Math.min(Math.floor((at - nowMs) / 100) / 10, maxNoticeS) - marginS;
  return Math.max(floorS, Math.round(left * 10) / 10);
}

/** Bounds of one poll: requests end by `deadline` (epoch ms) at the latest, or when `signal` aborts. */
export interface PollContext {
  readonly signal: AbortSignal;
  readonly deadline: number;
}

/** A cloud's notice protocol, as the watch loop drives it. */
export interface NoticeSource {
  readonly provider: ProviderName;
  /** The metadata server's base URL (for messages). */
  readonly endpoint: string;
  /**
   * How long one poll may take at most, in milliseconds: a polling protocol's request
   * timeout, a hanging GET's wait plus a grace.
   */
  readonly pollBudgetMs: number;
  /** `true` when a poll itself waits for a change (GCP's hanging GET): the loop polls again at once. */
  readonly hanging: boolean;
  /** The longest notice this cloud gives, seconds: caps the deadline ({@link MAX_NOTICE_SECONDS}). */
  readonly maxNoticeSeconds: number;
  /** One observation; throws on any failure (the loop retries with backoff). */
  poll(ctx: PollContext): Promise<Observation>;
  /** Tells the cloud that finalize for `notice` ended (Azure: lets the eviction proceed at once). */
  acknowledge?(notice: Notice, ctx: PollContext): Promise<void>;
}

/** Milliseconds left until `deadline`, capped at `capMs`, at least 1. */
export function remaining(ctx: PollContext, capMs: number): number {
  return Math.max(1, Math.min(capMs, ctx.deadline - Date.now()));
}
