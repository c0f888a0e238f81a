/**
 * Checkpoint retention (`arch gc`): which checkpoint directories may go, and removing them
 * safely.
 *
 * What goes: temporary directories whose writer died, quarantined checkpoints quarantined
 * longer than `quarantineMinAgeMs` ago (host config `gc.quarantineDays`, 0 with
 * `--quarantined`: one may be a job's only state), consumed ones (when the host never
 * restores a checkpoint twice), superseded ones, and committed ones past `--keep N` per key or
 * older than `--older-than`. What stays: anything of a key whose claim a live process holds
 * (a checkpoint, restore or delete is running) or whose claim is not one ARCH makes (never
 * broken), and the key's current checkpoint unless `includeCurrent` (it is what the next
 * container of the key resumes).
 *
 * Guarantees: {@link selectGarbage} is pure. {@link collectGarbage} removes a key's
 * directories only under that key's own claim (`KeyStore.claim`, the lock every checkpoint,
 * restore and delete of the key takes), decides again from what it finds under the claim, never waits
 * for a busy key (it is skipped and said so), removes the `current` link before the
 * directory it names, and removes with `Deno.remove` (which never follows a symlink).
 */

import { CURRENT_LINK, QUARANTINE_PREFIX } from "./layout.ts";
import { errorMessage } from "../util/errors.ts";
import { Dir } from "../util/dirfd.ts";
import { ClaimTimeout, KeyGone } from "./claim.ts";
import { KeyStore } from "./store.ts";
import { fsyncPath } from "../util/fsync.ts";
import { type CheckpointEntry, type KeyEntry, readKeyDir } from "./listing.ts";

/** What {@link selectGarbage} keeps and removes. */
export interface GcPolicy {
  /** Now, epoch ms. */
  readonly now: number;
  /** Committed checkpoints older than this go (the current one only with `includeCurrent`). */
  readonly maxAgeMs?: number;
  /** Committed checkpoints kept per key, newest first. */
  readonly keepPerKey: number;
  /** Also remove a key's current checkpoint when age or count say so. */
  readonly includeCurrent: boolean;
  /** Consumed checkpoints go (the host never restores a checkpoint twice). */
  readonly consumedIsGarbage: boolean;
  /** Quarantined checkpoints go once quarantined longer than this (0: all). */
  readonly quarantineMinAgeMs: number;
}

/**
 * When a quarantined checkpoint was quarantined: the stamp of its name (`quarantine-<UTC
 * stamp>-…`, see `store/store.ts`), else when it was made. Epoch ms.
 *
 * @example
 * ```ts
 * import { quarantinedAt } from "./gc.ts";
 * const t = quarantinedAt({ name: "quarantine-20261129T120000123Z-7-0", createdAt: "2026-01-01T00:00:00Z" });
 * if (t !== Date.parse("2026-11-29T12:00:00.123Z")) throw new Error();
 * ```
 */
export function quarantinedAt(entry: Pick<CheckpointEntry, "name" | "createdAt">): number {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})(\d{3})Z/.exec(entry.name.slice(QUARANTINE_PREFIX.length));
  const t = m === null ? NaN : Date.parse(`${m[1]}-${m[2]}-${m[3]}T${m[4]}:${m[5]}:${m[6]}.${m[7]}Z`);
  return Number.isNaN(t) ? Date.parse(entry.createdAt) : t;
}

/** The verdict on one checkpoint directory. */
export interface GcDecision {
  readonly entry: CheckpointEntry;
  readonly remove: boolean;
  readonly reason: string;
}

/**
 * The verdicts on one key's checkpoints. `claimHeld`: the caller holds the key's claim, so
 * temporary directories are a dead writer's.
 *
 * @example
 * ```ts
 * import { selectKey } from "./gc.ts";
 * const e = { root: "/r", scope: "s", key: "k", keyDir: "/r/s/k", path: "/r/s/k/quarantine-1", name: "quarantine-1",
 *   status: "quarantined" as const, createdAt: "2026-01-01T00:00:00Z", bytes: 10, files: 1 };
 * const [d] = selectKey({ ...e, checkpoints: [e] }, { now: Date.parse("2026-02-01T00:00:00Z"), keepPerKey: 1, includeCurrent: false,
 *   consumedIsGarbage: true, quarantineMinAgeMs: 0 });
 * if (!d!.remove) throw new Error();
 * ```
 */
export function selectKey(key: KeyEntry, policy: GcPolicy, claimHeld = false): GcDecision[] {
  if (!claimHeld && key.claim !== undefined && !key.claim.understood) {
    return key.checkpoints.map((entry) => ({
      entry,
      remove: false,
      reason: `key has a claim ARCH does not recognise (${key.keyDir}/.claim): left alone`,
    }));
  }
  if (!claimHeld && key.claim?.live) {
    const c = key.claim;
    return key.checkpoints.map((entry) => ({
      entry,
      remove: false,
      reason: `key busy: "${c.op}" by pid ${c.pid} on ${c.host}`,
    }));
  }
  const out: GcDecision[] = [];
  const committed: CheckpointEntry[] = [];
  for (const entry of key.checkpoints) {
    switch (entry.status) {
      case "in-progress":
        if (claimHeld) {
          out.push({
            entry: { ...entry, status: "stale" },
            remove: true,
            reason: "temporary left by a writer that died",
          });
        } else out.push({ entry, remove: false, reason: "being written" });
        break;
      case "stale":
        out.push({ entry, remove: true, reason: "temporary left by a writer that died" });
        break;
      case "quarantined": {
        const days = policy.quarantineMinAgeMs / 86_400_000;
        if (policy.now - quarantinedAt(entry) >= policy.quarantineMinAgeMs) {
          out.push({ entry, remove: true, reason: "quarantined after a failed restore" });
        } else {
          out.push({
            entry,
            remove: false,
            reason: `quarantined less than ${Number(days.toFixed(3))} days ago (remove with --quarantined)`,
          });
        }
        break;
      }
      case "consumed":
        if (policy.consumedIsGarbage) out.push({ entry, remove: true, reason: "restored once already" });
        else committed.push(entry);
        break;
      case "committed":
      case "superseded":
        committed.push(entry);
    }
  }
  const isCurrent = (e: CheckpointEntry) => e.status === "committed" || e.status === "consumed";
  committed.sort((a, b) =>
    Number(isCurrent(b)) - Number(isCurrent(a)) || b.createdAt.localeCompare(a.createdAt) ||
    b.name.localeCompare(a.name)
  );
  committed.forEach((entry, i) => {
    if (key.templateOf !== undefined && isCurrent(entry)) {
      // Published by the admin for any number of restores: only `arch unpublish` removes it.
      out.push({ entry, remove: false, reason: "a published template (remove it with arch unpublish)" });
      return;
    }
    const age = policy.now - Date.parse(entry.createdAt);
    const tooOld = policy.maxAgeMs !== undefined && age > policy.maxAgeMs;
    const tooMany = i >= policy.keepPerKey;
    if (!tooOld && !tooMany) out.push({ entry, remove: false, reason: "kept by the retention policy" });
    else if (isCurrent(entry) && !policy.includeCurrent) {
      out.push({ entry, remove: false, reason: "the key's current checkpoint (remove with --include-current)" });
    } else {
      out.push({
        entry,
        remove: true,
        reason: entry.status === "superseded"
          ? "superseded by a newer checkpoint of the key"
          : tooMany
          ? `beyond the ${policy.keepPerKey} kept per key`
          : "older than the age limit",
      });
    }
  });
  return out;
}

/** The verdicts on every checkpoint of `keys` (see {@link selectKey}). */
export function selectGarbage(keys: readonly KeyEntry[], policy: GcPolicy): GcDecision[] {
  return keys.flatMap((k) => selectKey(k, policy));
}

/** What {@link collectGarbage} did. */
export interface GcReport {
  readonly removed: readonly GcDecision[];
  readonly bytes: number;
  /** Keys left alone, with why (busy, gone, an error). */
  readonly skipped: readonly string[];
}

/**
 * Removes what `selectKey` says may go, key by key under that key's own claim (see the module
 * doc). Only keys in `keys` are touched; each is read again under its claim. A key whose claim
 * is not one ARCH makes is skipped, never broken. Requires root.
 */
export async function collectGarbage(keys: readonly KeyEntry[], policy: GcPolicy): Promise<GcReport> {
  const removed: GcDecision[] = [];
  const skipped: string[] = [];
  let bytes = 0;
  for (const key of keys) {
    if (key.claim !== undefined && !key.claim.understood) {
      skipped.push(`${key.scope}/${key.key}: has a claim ARCH does not recognise (${key.keyDir}/.claim): left alone`);
      continue;
    }
    if (!selectKey(key, policy).some((d) => d.remove) && !key.claim?.live) continue;
    let claim;
    try {
      // The key's own claim, as every checkpoint, restore and delete of this key takes it.
      claim = await new KeyStore(key.root, key.scope, key.key).claim("gc", { waitMs: 0 });
    } catch (error) {
      if (error instanceof ClaimTimeout) skipped.push(`${key.scope}/${key.key}: ${error.message}`);
      else if (!(error instanceof KeyGone) && !(error instanceof Deno.errors.NotFound)) {
        skipped.push(`${key.scope}/${key.key}: ${errorMessage(error)}`);
      }
      continue;
    }
    try {
      // Under the claim, from what is there now (a commit or restore may have happened since the scan).
      const fresh = readKeyDir(key.keyDir, policy.now);
      if (fresh === undefined) continue;
      if (fresh.claim?.understood !== true || fresh.claim.pid !== claim.owner.pid) {
        skipped.push(`${key.scope}/${key.key}: its claim changed under gc: left alone`);
        continue;
      }
      for (const d of selectKey(fresh, policy, true)) {
        if (!d.remove) continue;
        try {
          removeCheckpoint(fresh.keyDir, d.entry.name);
          removed.push(d);
          bytes += d.entry.bytes;
        } catch (error) {
          skipped.push(`${d.entry.path}: ${errorMessage(error)}`);
        }
      }
    } finally {
      claim.release();
    }
  }
  return { removed, bytes, skipped };
}

/** Removes `<keyDir>/<name>` (a real directory), from descriptors (`util/dirfd.ts`); the `current` link first when it names it. */
function removeCheckpoint(keyDir: string, name: string): void {
  using dir = Dir.open(keyDir, { rootOnly: true });
  if (!dir.lstat(name)?.isDirectory) throw new Error("not a directory any more");
  let current: string | undefined;
  try {
    current = Deno.readLinkSync(dir.at(CURRENT_LINK));
  } catch { /* none */ }
  if (current === name) {
    Deno.removeSync(dir.at(CURRENT_LINK)); // unpublished first: never a link to a half-removed checkpoint
    fsyncPath(dir.at());
  }
  dir.removeTree(name);
}
