/**
 * The watcher's status file, `<stateDir>/watch.json`, read by `arch doctor`. Its contract:
 * `{"pid","provider","startedAt","lastPollAt","lastError","notice","finalize"}` where
 * `provider` is `aws|gcp|azure`, times are ISO 8601, `lastError` is the last poll's error
 * (`null` once a poll succeeded), `notice` the latest notice seen (`null` before any) and
 * `finalize` the latest finalize run (`null` before any; `endedAt`/`exitCode` `null` while it
 * runs). The watcher adds `finalized`, the ids of the last 32 notices whose finalize ended
 * (`loop.ts`), so a restarted watcher never finalizes one of them again. Written atomically (`util/atomic.ts`: random O_EXCL temporary file, fsync, rename;
 * 0600, root's) after every poll.
 */

import { writeFileAtomic } from "../util/atomic.ts";
import type { NoticeKind, ProviderName } from "./notice.ts";

/** The latest notice, as the status file records it. */
export interface StatusNotice {
  readonly id: string;
  readonly kind: NoticeKind;
  /** The notice's time (when the node goes away), `null` if the cloud gave none. */
  readonly time: string | null;
  readonly seenAt: string;
  /** What the watcher did: ran finalize, or logged it only (rebalance under `--on-rebalance log`). */
  readonly action: "finalize" | "log";
  /** The `--deadline` finalize got, seconds (`null` when logged only). */
  readonly deadlineSeconds: number | null;
  readonly detail: Readonly<Record<string, unknown>>;
}

/** The latest finalize run. */
export interface StatusFinalize {
  readonly startedAt: string;
  readonly endedAt: string | null;
  readonly exitCode: number | null;
}

/** The content of `watch.json`. */
export interface WatchStatus {
  readonly pid: number;
  readonly provider: ProviderName;
  readonly startedAt: string;
  readonly lastPollAt: string | null;
  readonly lastError: string | null;
  readonly notice: StatusNotice | null;
  readonly finalize: StatusFinalize | null;
}

/** The status file's path in `stateDir`. */
export function statusPath(stateDir: string): string {
  return `${stateDir}/watch.json`;
}

/** Writes `status` to `path` atomically (0600; the directory is created 0700 if missing). */
export function writeStatus(path: string, status: WatchStatus): void {
  const dir = path.slice(0, path.lastIndexOf("/")) || "/";
  Deno.mkdirSync(dir, { recursive: true, mode: 0o700 });
  writeFileAtomic(path, JSON.stringify(status, null, 2) + "\n", { mode: 0o600 });
}

/** Reads a status file; `undefined` if absent or unreadable as one. */
export function readStatus(path: string): WatchStatus | undefined {
  try {
    const raw = JSON.parse(Deno.readTextFileSync(path));
    if (raw === null || typeof raw !== "object" || typeof raw.pid !== "number") return undefined;
    return raw as WatchStatus;
  } catch {
    return undefined;
  }
}
