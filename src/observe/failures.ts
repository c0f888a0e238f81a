/**
 * The last failed checkpoint or restore of each key on this node, read back from the events
 * file (`events.ts`): what `arch inspect` and `arch ls --checkpoints` show beside a key's
 * checkpoints, so a job that cannot be saved is visible before the spot notice.
 *
 * Guarantees: read-only; reads at most the file's last {@link TAIL_BYTES} (older failures are
 * not shown); a line that is not an ARCH event is skipped; never follows a link or blocks on a
 * FIFO (`util/dirfd.ts`).
 */

import { readTail } from "../util/dirfd.ts";

/** How much of the events file's end is read. */
export const TAIL_BYTES = 4 << 20;

/** One failure, as the event recorded it. */
export interface KeyFailure {
  readonly time: string;
  /** `checkpoint` or `restore`. */
  readonly kind: string;
  /** `failed` or (restore) `refused`, `foreign`. */
  readonly result: string;
  readonly code?: string;
  readonly error: string;
  readonly namespace?: string;
  readonly id?: string;
}

/** `<scope>/<key>` → its last failure, from the events file's text (pure). */
export function lastFailures(events: string): Map<string, KeyFailure> {
  const out = new Map<string, KeyFailure>();
  for (const line of events.split("\n")) {
    if (!line.startsWith("{")) continue;
    let e: Record<string, unknown>;
    try {
      e = JSON.parse(line);
    } catch {
      continue; // the first line of a tail, cut in the middle
    }
    const failed = e.result !== "ok" && (e.kind === "checkpoint" || e.kind === "restore");
    if (!failed || typeof e.key !== "string" || typeof e.scope !== "string" || typeof e.error !== "string") continue;
    out.set(`${e.scope}/${e.key}`, {
      time: String(e.time),
      kind: e.kind as string,
      result: String(e.result),
      ...(typeof e.code === "string" ? { code: e.code } : {}),
      error: e.error,
      ...(typeof e.namespace === "string" ? { namespace: e.namespace } : {}),
      ...(typeof e.id === "string" ? { id: e.id } : {}),
    });
  }
  return out;
}

/** {@link lastFailures} of the events file `path` (its last {@link TAIL_BYTES}); empty when it cannot be read. */
export function readLastFailures(path: string): Map<string, KeyFailure> {
  if (path === "") return new Map();
  try {
    return lastFailures(new TextDecoder().decode(readTail(path, TAIL_BYTES)));
  } catch {
    return new Map();
  }
}
