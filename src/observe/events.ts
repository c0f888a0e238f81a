/**
 * One JSON line per checkpoint, restore and finalize, appended to the events file (host
 * config `eventsFile`, default `events.jsonl` beside ARCH's log), and the node's metrics
 * updated with it (`metrics.ts`; that update is skipped, and counted, when another process
 * holds the metrics lock for more than ~100 ms: the event is written all the same).
 *
 * Guarantees: each record is one `write(2)` of one line (O_APPEND: concurrent writers never
 * interleave), the file is created 0600 in a 0700 directory (records name containers and
 * keys), and {@link recordEvent} never throws and loads no npm module: the runc wrapper's
 * restore path calls it, and a failure to report must never break or slow a container.
 */

import { appendJsonLine } from "../log/log.ts";
import { type MetricsEvent, recordMetrics } from "./metrics.ts";
import type { ObserveTargets } from "./targets.ts";

/** One record of the events file. */
export interface ArchEvent extends MetricsEvent {
  /** ISO time the operation ended. */
  readonly time: string;
  readonly namespace?: string;
  readonly id?: string;
  readonly key?: string;
  readonly scope?: string;
  /** Duration of each step, ms. */
  readonly timings?: Readonly<Record<string, number>>;
  /** The checkpoint directory written or restored. */
  readonly checkpoint?: string;
  readonly error?: string;
  /** The failure's stable code (`ArchError.code`, e.g. `checkpoint-dump`, `restore-verify`), for alerts and scripts. */
  readonly code?: string;
  /** A task checkpoint (the exit-code protocol, `task/task_checkpoint.ts`), or the restore of one. */
  readonly task?: boolean;
  /** How the job's notice went before the checkpoint (`task/notify.ts`): its answer and the wait, ms. */
  readonly notify?: { readonly answer: string; readonly waitedMs: number; readonly problem?: string };
  /** The restore of a container from this template (`ARCH_RESTORE_FROM`; `key` is the container's own). */
  readonly template?: string;
  /** A checkpoint the container asked for itself (`task/requests.ts`). */
  readonly requested?: boolean;
  /** Finalize: the concurrency it ran at, from when (ms since its start), with the measured rate. */
  readonly concurrency?: readonly { readonly atMs: number; readonly concurrency: number; readonly rate?: number }[];
}

/** Appends `event` to the events file and counts it in the metrics. Never throws. */
export function recordEvent(targets: ObserveTargets | undefined, event: Omit<ArchEvent, "time">): void {
  if (targets === undefined) return;
  const record: ArchEvent = { time: new Date().toISOString(), ...event };
  try {
    if (targets.eventsFile !== "") {
      const dir = targets.eventsFile.slice(0, targets.eventsFile.lastIndexOf("/")) || "/";
      try {
        Deno.mkdirSync(dir, { recursive: true, mode: 0o700 });
      } catch { /* appendJsonLine is best effort too */ }
      appendJsonLine(targets.eventsFile, record);
    }
    recordMetrics(targets.stateDir, targets.metricsFile, record);
  } catch {
    // best effort: see the module doc
  }
}
