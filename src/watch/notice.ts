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

/** What one poll of a provider saw: every notice currently reported (none: an empty list). */
export interface Observation {
  readonly notices: readonly Notice[];
}

/** Deadline used when a notice has no time or its time leaves less than this: seconds. */
export const DEADLINE_FLOOR_SECONDS = 10;

/** Default safety margin between the end of finalize and the notice time: seconds. */
export const DEFAULT_MARGIN_SECONDS = 5;

/**
 * `arch finalize --deadline` for a notice: the seconds left until the notice's time, minus
 * `marginS`, never below `floorS` (a notice without a time, or one already past, still gets
 * a short finalize: checkpointing something beats checkpointing nothing). Whole-millisecond
 * precision, rounded down to 0.1 s.
 *
 * @example
 * ```ts
 * import { deadlineSeconds } from "./notice.ts";
 * const now = Date.parse("2026-01-01T00:00:00Z");
 * if (deadlineSeconds("2026-01-01T00:02:00Z", now, 5) !== 115) throw new Error();
 * if (deadlineSeconds(null, now, 5) !== 10) throw new Error();
 * if (deadlineSeconds("2025-12-31T23:00:00Z", now, 5) !== 10) throw new Error();
 * ```
 */
export function deadlineSeconds(
  time: string | null,
  nowMs: number,
  marginS: number,
  floorS: number = DEADLINE_FLOOR_SECONDS,
): number {
  const at = time === null ? NaN : Date.parse(time);
  if (!Number.isFinite(at)) return floorS;
  const left = Math.floor((at - nowMs) / 100) / 10 - marginS;
  return Math.max(floorS, Math.round(left * 10) / 10);
}

/** Whether a notice means the node is going away (everything but a rebalance recommendation). */
export function isReclaim(notice: Notice): boolean {
  return notice.kind !== "rebalance";
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
  /** One observation; throws on any failure (the loop retries with backoff). */
  poll(ctx: PollContext): Promise<Observation>;
  /** Tells the cloud that finalize for `notice` ended (Azure: lets the eviction proceed at once). */
  acknowledge?(notice: Notice, ctx: PollContext): Promise<void>;
}

/** Milliseconds left until `deadline`, capped at `capMs`, at least 1. */
export function remaining(ctx: PollContext, capMs: number): number {
  return Math.max(1, Math.min(capMs, ctx.deadline - Date.now()));
}
