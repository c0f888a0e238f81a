/**
 * The watch loop: polls a {@link NoticeSource}, and on a notice runs finalize once with a
 * deadline derived from the notice's time, then keeps watching (a later, different notice
 * runs finalize again). Guarantees:
 * - never ends on an error: a failed poll is recorded (`lastError`), logged when it changes,
 *   and retried with exponential backoff (1 s doubling up to `maxBackoffMs`, ±20% jitter);
 * - one poll never outlives its budget (each request is bounded), so a slow metadata server
 *   cannot stall the loop past the next poll;
 * - finalize runs at most once per notice identity, including across restarts when seeded
 *   with {@link handledFromStatus} (the status keeps the ids of the last
 *   {@link FINALIZED_KEPT} notices finalized); it runs to its end even when {@link Watcher.stop} is
 *   called meanwhile, and the acknowledgement (Azure) is sent only after it ended, retried on
 *   later polls while it fails;
 * - a notice's deadline is capped by its cloud's longest notice and every timer by 2^31-1 ms;
 * - a poll that failed in part (AWS: the rebalance request) still acts on the notices it saw
 *   and keeps the normal interval; its error is recorded and logged like a failed poll's;
 * - the status file is rewritten after every poll and around every finalize.
 * Every state change goes to ARCH's log and as one line to `say` (stdout: journald), control
 * characters escaped.
 */

import { errorMessage } from "../util/errors.ts";
import type { Logger } from "../log/log.ts";
import {
  clampTimerMs,
  deadlineSeconds,
  type Notice,
  type NoticeSource,
  type PollContext,
  printable,
} from "./notice.ts";
import { type StatusNotice, type WatchStatus, writeStatus } from "./status.ts";

/** How many finalized notice ids the status keeps (the most recent ones). */
export const FINALIZED_KEPT = 32;

/**
 * The status the watcher writes: {@link WatchStatus} plus `finalized`, the ids of the last
 * {@link FINALIZED_KEPT} notices whose finalize ended (oldest first), so that a restarted
 * watcher never finalizes one of them again even when a later notice (e.g. a logged rebalance
 * recommendation) became the latest.
 */
export interface WatcherStatus extends WatchStatus {
  readonly finalized?: readonly string[];
}

/** Runs finalize with a deadline in seconds; resolves with its exit status. */
export type FinalizeAction = (deadlineSeconds: number, notice: Notice) => Promise<number>;

/** What to do on an AWS rebalance recommendation. */
export type RebalancePolicy = "log" | "finalize";

/** Options of {@link Watcher}. */
export interface WatchOptions {
  readonly source: NoticeSource;
  readonly finalize: FinalizeAction;
  /** Between two polls of a polling protocol, milliseconds (AWS documents 5 s). */
  readonly intervalMs: number;
  /** Seconds kept between finalize's end and the notice time. */
  readonly marginSeconds: number;
  /** Deadline when the notice has no time or too little is left, seconds. */
  readonly floorSeconds?: number;
  readonly onRebalance: RebalancePolicy;
  /** Deadline of a finalize run for a rebalance recommendation (which has no time), seconds. */
  readonly rebalanceDeadlineSeconds: number;
  /** Where the status is written (none: not written). */
  readonly statusFile?: string;
  readonly logger?: Logger;
  /** Prints one line for people (stdout). */
  readonly say?: (line: string) => void;
  /** Longest wait between retries after errors, milliseconds (default 15 s). */
  readonly maxBackoffMs?: number;
  /** Notice ids already finalized (by an earlier run of the watcher). */
  readonly handled?: Iterable<string>;
  /** Status fields carried over from an earlier run (its latest notice and finalize). */
  readonly previous?: Pick<WatcherStatus, "notice" | "finalize" | "finalized">;
  /** Called after every poll (tests). */
  readonly onPoll?: (status: WatcherStatus) => void;
}

/**
 * The notice ids an earlier run finalized, from its status file: its `finalized` list, plus
 * the latest notice if its finalize ended (a status written before the list existed).
 */
export function handledFromStatus(previous: WatcherStatus | undefined): string[] {
  const ids = Array.isArray(previous?.finalized)
    ? previous.finalized.filter((id): id is string => typeof id === "string")
    : [];
  const n = previous?.notice;
  const f = previous?.finalize;
  if (n == null || n.action !== "finalize" || f == null || f.endedAt === null) return ids;
  return f.startedAt >= n.seenAt && !ids.includes(n.id) ? [...ids, n.id] : ids;
}

/** The watcher (see the module doc). */
export class Watcher {
  #status: WatcherStatus;
  readonly #handled = new Set<string>();
  readonly #pendingAck = new Map<string, Notice>();
  readonly #stop = new AbortController();
  #errors = 0;
  #polls = 0;

  constructor(readonly options: WatchOptions) {
    for (const id of options.handled ?? []) this.#handled.add(id);
    this.#status = {
      pid: Deno.pid,
      provider: options.source.provider,
      startedAt: new Date().toISOString(),
      lastPollAt: null,
      lastError: null,
      notice: options.previous?.notice ?? null,
      finalize: options.previous?.finalize ?? null,
      finalized: handledFromStatus(options.previous as WatcherStatus | undefined).slice(-FINALIZED_KEPT),
    };
  }

  /** The current status (what `watch.json` holds). */
  get status(): WatcherStatus {
    return this.#status;
  }

  /** Successful and failed polls so far. */
  get polls(): number {
    return this.#polls;
  }

  /** Ends the loop: at once when it waits or polls, after the end of a running finalize otherwise. */
  stop(): void {
    this.#stop.abort();
  }

  get #stopped(): boolean {
    return this.#stop.signal.aborted;
  }

  #event(level: "info" | "warn" | "error", msg: string, fields: Record<string, unknown> = {}): void {
    const line = printable(msg);
    this.options.logger?.log(level, line, { component: "watch", provider: this.options.source.provider, ...fields });
    this.options.say?.(line);
  }

  #save(patch: Partial<WatcherStatus>): void {
    this.#status = { ...this.#status, ...patch };
    if (this.options.statusFile === undefined) return;
    try {
      writeStatus(this.options.statusFile, this.#status);
    } catch (error) {
      this.options.logger?.error("cannot write the watch status", {
        component: "watch",
        path: this.options.statusFile,
        error: errorMessage(error),
      });
    }
  }

  #context(budgetMs: number): PollContext {
    return { signal: this.#stop.signal, deadline: Date.now() + budgetMs };
  }

  /** Polls until {@link stop}; with `once`, returns after one poll (and what it triggered). */
  async run(once = false): Promise<void> {
    const { source } = this.options;
    this.#event("info", `watching ${source.provider} spot notices at ${source.endpoint}`, {
      intervalMs: this.options.intervalMs,
      marginSeconds: this.options.marginSeconds,
      onRebalance: this.options.onRebalance,
    });
    this.#save({});
    while (!this.#stopped) {
      const ok = await this.pollOnce();
      if (once || this.#stopped) break;
      const delay = !ok ? this.#backoff() : source.hanging ? 0 : this.options.intervalMs;
      if (delay > 0) await this.#sleep(delay);
    }
    this.#event("info", "watcher stopped");
  }

  /**
   * One poll and what it triggers; returns whether the next poll comes after the normal
   * interval: `false` after a failed poll (backoff), `true` after a partly failed one (its
   * error is recorded, but the part that works keeps being polled at the normal pace).
   */
  async pollOnce(): Promise<boolean> {
    const { source } = this.options;
    let notices: readonly Notice[] = [];
    let error: string | null = null;
    let partial = false;
    try {
      const seen = await source.poll(this.#context(source.pollBudgetMs));
      notices = seen.notices;
      if (seen.error !== undefined) {
        error = printable(seen.error);
        partial = true;
      }
    } catch (e) {
      error = printable(errorMessage(e));
    }
    this.#polls++;
    if (this.#stopped && error !== null && notices.length === 0) return false; // aborted by stop()
    if (error !== null) {
      if (!partial) this.#errors++;
      if (error !== this.#status.lastError) this.#event("warn", `poll failed, retrying: ${error}`, { error });
      this.#save({ lastPollAt: new Date().toISOString(), lastError: error });
    } else {
      if (this.#status.lastError !== null) this.#event("info", "polls succeed again");
      this.#errors = 0;
      this.#save({ lastPollAt: new Date().toISOString(), lastError: null });
    }
    // Rebalance recommendations first: a reclaim seen in the same poll is the latest notice.
    const ordered = [...notices].sort((a, b) => Number(b.kind === "rebalance") - Number(a.kind === "rebalance"));
    for (const notice of ordered) {
      if (!this.#handled.has(notice.id)) await this.#handle(notice);
    }
    await this.#acknowledgePending(notices);
    this.options.onPoll?.(this.#status);
    return error === null || partial;
  }

  async #handle(notice: Notice): Promise<void> {
    this.#handled.add(notice.id);
    const seenAt = new Date().toISOString();
    const logOnly = notice.kind === "rebalance" && this.options.onRebalance === "log";
    const deadline = notice.kind === "rebalance" ? this.options.rebalanceDeadlineSeconds : deadlineSeconds(
      notice.time,
      Date.now(),
      this.options.marginSeconds,
      this.options.floorSeconds,
      this.options.source.maxNoticeSeconds,
    );
    const recorded: StatusNotice = {
      id: notice.id,
      kind: notice.kind,
      time: notice.time,
      seenAt,
      action: logOnly ? "log" : "finalize",
      deadlineSeconds: logOnly ? null : deadline,
      detail: notice.detail,
    };
    const fields = { notice: recorded };
    if (logOnly) {
      this.#event("warn", `${notice.kind} recommendation (${notice.id}): logged only (--on-rebalance log)`, fields);
      this.#save({ notice: recorded });
      return;
    }
    const when = notice.time === null ? "no time given" : `at ${notice.time}`;
    this.#event(
      "warn",
      `${notice.kind} notice ${notice.id} (${when}): running arch finalize --deadline ${deadline}`,
      fields,
    );
    const startedAt = new Date().toISOString();
    this.#save({ notice: recorded, finalize: { startedAt, endedAt: null, exitCode: null } });
    let exitCode: number | null = null;
    try {
      exitCode = await this.options.finalize(deadline, notice);
    } catch (error) {
      this.#event("error", `arch finalize could not run: ${errorMessage(error)}`, { error: String(error) });
    }
    const endedAt = new Date().toISOString();
    const secs = ((Date.parse(endedAt) - Date.parse(startedAt)) / 1000).toFixed(1);
    if (exitCode !== null) {
      this.#event(exitCode === 0 ? "info" : "error", `arch finalize ended with exit code ${exitCode} after ${secs} s`, {
        exitCode,
        seconds: Number(secs),
      });
    }
    const finalized = [...(this.#status.finalized ?? []).filter((id) => id !== notice.id), notice.id];
    this.#save({ finalize: { startedAt, endedAt, exitCode }, finalized: finalized.slice(-FINALIZED_KEPT) });
    if (this.options.source.acknowledge !== undefined) this.#pendingAck.set(notice.id, notice);
  }

  /** Acknowledges notices whose finalize ended and that the cloud still lists. */
  async #acknowledgePending(current: readonly Notice[]): Promise<void> {
    const ack = this.options.source.acknowledge?.bind(this.options.source);
    if (ack === undefined) return;
    const listed = new Set(current.map((n) => n.id));
    for (const [id, notice] of this.#pendingAck) {
      if (!listed.has(id)) {
        this.#pendingAck.delete(id);
        continue;
      }
      try {
        // Own bound: also sent while stopping (finalize ended; the cloud may proceed).
        await ack(notice, {
          signal: new AbortController().signal,
          deadline: Date.now() + this.options.source.pollBudgetMs,
        });
        this.#pendingAck.delete(id);
        this.#event("info", `acknowledged ${id}: the cloud may proceed`, { notice: id });
      } catch (error) {
        this.#event("warn", `acknowledging ${id} failed, retrying: ${errorMessage(error)}`, { notice: id });
      }
    }
  }

  #backoff(): number {
    const cap = this.options.maxBackoffMs ?? 15_000;
    const base = Math.min(1_000, this.options.intervalMs);
    const ms = Math.min(cap, base * 2 ** Math.min(this.#errors - 1, 20));
    return Math.round(ms * (0.8 + Math.random() * 0.4));
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      if (this.#stopped) return resolve();
      const done = () => {
        clearTimeout(timer);
        this.#stop.signal.removeEventListener("abort", done);
        resolve();
      };
      const timer = setTimeout(done, clampTimerMs(ms));
      this.#stop.signal.addEventListener("abort", done, { once: true });
    });
  }
}
