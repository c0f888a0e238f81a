/**
 * Checkpoints one running ARCH container without ever losing it or leaving it frozen:
 *
 *     claim the key → runc pause → capture the writable layer → runc checkpoint
 *     --leave-running (into a temporary directory beside the final one; its page images are
 *     hashed as CRIU writes them, `store/follow_hash.ts`) → the other hashes + signed
 *     manifest → fsync → atomic commit → runc kill (→ runc resume if still paused)
 *
 * Guarantees:
 * - Everything that can fail without pausing (image identity, rootfs kind, size limit, the
 *   key's claim) is done before the pause. The runc/CRIU versions for the manifest are asked
 *   beside the pause and read after the dump (an error there is one before the commit).
 * - From the pause on, the container is released on every path: resumed after any failure
 *   before the commit, stopped after it (resumed with `leaveRunning`). The release is
 *   checked (`runc state`); a pause marker (`pause_guard.ts`) lets the next `arch` command
 *   finish the job if this process dies, whatever kills it.
 * - A failure before the commit leaves the key's previous checkpoint current and removes the
 *   temporary directory; the error names the step and, for a failed dump, CRIU's log (kept
 *   with ARCH's logs, see `criu/logs.ts`: the bundle goes with the container).
 * - Every runc call is bounded: the dump by the caller's deadline (`arch finalize`), the
 *   others by a fixed bound. Requires root, runc and CRIU.
 */

import {
  CRIU_DIR,
  CRIU_WORK_DIR,
  MANIFEST_FILE,
  MANIFEST_VERSION,
  PAGES_IMAGE,
  ROOTFS_ARCHIVE,
  SIGNATURE_FILE,
} from "../store/layout.ts";
import { deletedOpenBytes, memoryToDump } from "./memory.ts";
import { DEFAULT_CRIU_SETTINGS } from "../criu/config.ts";
import { prepareInotifyPaths } from "./inotify_paths.ts";
import { ArchError, errorMessage } from "../util/errors.ts";
import { type ContainerRecord, initPid, type Registry } from "../registry/registry.ts";
import { flushWhile, KeyStore, makeDurable, newCheckpointName } from "../store/store.ts";
import { checkpointOrigin, hashFiles, listFiles, type Manifest, writeManifest } from "../store/manifest.ts";
import { HashFollower } from "../store/follow_hash.ts";
import { findUpperdir } from "../rootfs/upperdir.ts";
import { captureUpperdir, SizeLimitError } from "../rootfs/layer_archive.ts";
import { SpaceBudget } from "./space_budget.ts";
import { Runc, RuncError, type RuncTarget, targetOf } from "../runc/client.ts";
import { toolVersions } from "../criu/versions.ts";
import { readBundleSpec, rootfsPath } from "../config/container.ts";
import { fsyncPath } from "../util/fsync.ts";
import { keepCriuLog, logTail } from "../criu/logs.ts";
import { criuCause } from "../criu/diagnose.ts";
import { rearmTimerfdsIn } from "../criu/timerfd_rearm.ts";
import { DEFAULT_PAUSE_BUDGET_MS, PauseGuard } from "./pause_guard.ts";
import { faultPoint } from "../util/faults.ts";
import { imageIdentity } from "../rootfs/image_identity.ts";
import { ClaimTimeout } from "../store/claim.ts";
import { recordedTask } from "../task/options.ts";
import { notifyJob, type NotifyResult } from "../task/notify.ts";

const DEFAULT_GHOST_LIMIT = DEFAULT_CRIU_SETTINGS.ghostLimitBytes;

/** A failed checkpoint: the step that failed (code `checkpoint-<step>`) and, for a failed dump, CRIU's kept log. */
export class CheckpointError extends ArchError {
  /** How the job's notice went, when it was told before the failure. */
  notify?: NotifyResult;
  constructor(message: string, readonly step: string, readonly criuLog?: string) {
    super(message, `checkpoint-${step}`, 1);
  }
}

/** A committed checkpoint: container id, key, directory, size in bytes, and each step's duration (ms). */
export interface CheckpointResult {
  readonly id: string;
  readonly key: string;
  readonly dir: string;
  readonly bytes: number;
  readonly timings: Record<string, number>;
  /** A dry run: nothing was committed (`dir` is empty) and the container runs on; `timings.paused` is what it cost. */
  readonly dryRun?: boolean;
  /** How the job's notice went (`ARCH_NOTIFY_SIGNAL`; `timings.notify` is the wait). */
  readonly notify?: NotifyResult;
  /** A task checkpoint: the dump failed for this reason, and the job saved itself (`task/fallback.ts`). */
  readonly task?: { readonly after: string };
}

/** What a checkpoint needs from the node. */
export interface CheckpointOptions {
  readonly stateDir: string;
  readonly secret: Uint8Array;
  /** Keep the container running after the commit (`arch checkpoint --leave-running`). */
  readonly leaveRunning?: boolean;
  /** Where CRIU's logs are kept (`criu/logs.ts`). */
  readonly criuLogs?: string;
  /** Epoch ms after which no runc call may still be waited for (finalize). */
  readonly deadline?: number;
  /** How long to wait for another operation on the key. */
  readonly lockWaitMs?: number;
  /** Largest checkpoint allowed (memory + writable layer), bytes; enforced while it is written. */
  readonly maxBytes?: number;
  /** Free space of the checkpoint root no checkpoint may take (`space_budget.ts`), bytes. */
  readonly reserveBytes?: number;
  /** Longest the container may stay paused (`pause_guard.ts`); a deadline shortens it. */
  readonly maxPauseMs?: number;
  /** CRIU's ghost-file limit (host config `ghostFileLimitBytes`): deleted-but-open files up to it count in the size checks. */
  readonly ghostLimitBytes?: number;
  /**
   * Dump as a checkpoint would, then discard it and resume the container: whether the job can
   * be checkpointed, how long it takes and how big it is (`arch checkpoint --dry-run`).
   */
  readonly dryRun?: boolean;
  /** Send no notice (`ARCH_NOTIFY_SIGNAL`): the job asked for this checkpoint at its safe point. */
  readonly skipNotice?: boolean;
}

/** The rootfs path of a bundle (config.json `root.path`, relative to the bundle). */
export function bundleRootfs(bundle: string): string {
  return rootfsPath(readBundleSpec(bundle), bundle);
}

function treeBytes(dir: string): number {
  return listFiles(dir, new Set()).reduce((n, f) => n + Deno.statSync(`${dir}/${f}`).size, 0);
}

const gib = (n: number) => `${(n / 2 ** 30).toFixed(2)} GiB`;

/**
 * Checkpoints the container of `record` and commits it as its key's current checkpoint, then stops it (resumes
 * it with `leaveRunning`); see the module doc. Requires root, runc and CRIU.
 */
export async function checkpointContainer(
  record: ContainerRecord,
  runcPath: string,
  registry: Registry,
  options: CheckpointOptions,
): Promise<CheckpointResult> {
  const { checkpointRoot: root, scope } = record;
  if (typeof root !== "string" || typeof scope !== "string") {
    throw new CheckpointError(`container "${record.id}" has no checkpoint root or key scope`, "config");
  }
  const target: RuncTarget = targetOf(runcPath, record);
  const store = new KeyStore(root, scope, record.key);
  const timings: Record<string, number> = {};
  const t0 = performance.now();
  const lap = (name: string, since: number) => (timings[name] = Math.round(performance.now() - since));
  const remaining = () => options.deadline === undefined ? undefined : Math.max(0, options.deadline - Date.now());

  // Before the pause: everything that can fail on its own.
  let rootfs: string, upperdir: string | undefined;
  try {
    rootfs = bundleRootfs(record.bundle);
    upperdir = findUpperdir(rootfs);
  } catch (error) {
    throw new CheckpointError(
      `cannot find the writable layer of "${record.id}": ${errorMessage(error)}`,
      "config",
    );
  }
  if (upperdir === undefined) {
    throw new CheckpointError(
      `container "${record.id}" has no overlay rootfs: ARCH cannot save its files, so it does not checkpoint it`,
      "config",
    );
  }
  // The tool versions are only written into the manifest: asked now, read after the dump.
  const versions = toolVersions(runcPath);
  versions.catch(() => {}); // awaited below; a failure before then must not leave it unhandled
  let image;
  try {
    image = await imageIdentity(rootfs, options.stateDir);
  } catch (error) {
    throw new CheckpointError(
      `cannot prepare the checkpoint of "${record.id}": ${errorMessage(error)}`,
      "prepare",
    );
  }
  if (image === undefined) throw new CheckpointError(`cannot identify the image of "${record.id}"`, "prepare");
  const pid = initPid(record);
  if (pid === undefined && typeof record.pidFile === "string") {
    // Without it, the memory CRIU will write cannot be checked against the limit and the reserve.
    throw new CheckpointError(`cannot read the pid of "${record.id}" from "${record.pidFile}"`, "prepare");
  }
  // What CRIU will write (anonymous + shared memory), not the page cache a v1 usage counts.
  const memory = pid !== undefined ? memoryToDump(pid) : undefined;
  const space = new SpaceBudget(root, options.maxBytes ?? Infinity, options.reserveBytes ?? 0);
  const wontFit = space.cannotFit(memory ?? 0);
  if (wontFit !== undefined) throw new CheckpointError(`cannot checkpoint "${record.id}": ${wontFit}`, "size");
  let claim;
  try {
    claim = await store.claim("checkpoint", {
      create: true,
      waitMs: Math.min(options.lockWaitMs ?? 30_000, remaining() ?? Infinity),
    });
  } catch (error) {
    if (error instanceof ClaimTimeout) throw new CheckpointError(error.message, "claim");
    throw new CheckpointError(`cannot claim checkpoint key "${record.key}": ${errorMessage(error)}`, "claim");
  }
  using _claim = claim;

  // A task-aware job is told first, and given until its timeout (at most half the time left
  // before a deadline) to reach a safe point (`task/notify.ts`).
  const notice = recordedTask(record)?.notify;
  let notified: NotifyResult | undefined;
  if (notice !== undefined && pid !== undefined && options.skipNotice !== true) {
    const left = remaining();
    const wait = left === undefined ? notice.timeoutMs : Math.min(notice.timeoutMs, Math.floor(left / 2));
    notified = await notifyJob(target, pid, notice.signal, "checkpoint", wait);
    timings.notify = notified.waitedMs;
  }
  const withNotice = (error: CheckpointError) =>
    notified === undefined ? error : Object.assign(error, { notify: notified });

  // The dump is bounded by the deadline; what follows it (hash, fsync, commit) gets a margin.
  const beforeDeadline = remaining();
  const budget = Math.min(
    options.maxPauseMs ?? DEFAULT_PAUSE_BUDGET_MS,
    beforeDeadline === undefined ? Infinity : beforeDeadline + 30_000,
  );
  const guard = new PauseGuard(options.stateDir, record.namespace, target, options.leaveRunning ?? false, budget);
  try {
    await guard.pause();
  } catch (error) {
    throw withNotice(new CheckpointError(errorMessage(error), "pause"));
  }
  lap("pause", t0);
  const pausedAt = performance.now();
  faultPoint(options.stateDir, "checkpoint-after-pause");
  let tmp: string | undefined;
  let committed: string;
  try {
    // Measured again now that the container is frozen (it cannot grow any more): what CRIU
    // will write is checked against the limit and the reserve before CRIU starts.
    // CRIU also copies in the files the job holds open after deleting them (up to the ghost limit each).
    const memoryNow = pid !== undefined ? memoryToDump(pid) ?? memory : memory;
    const ghosts = pid !== undefined ? deletedOpenBytes(pid, options.ghostLimitBytes ?? DEFAULT_GHOST_LIMIT) : 0;
    const frozen = memoryNow === undefined && ghosts === 0 ? undefined : (memoryNow ?? 0) + ghosts;
    const grown = frozen !== undefined && frozen !== memory ? space.cannotFit(frozen) : undefined;
    if (grown !== undefined) throw new CheckpointError(`cannot checkpoint "${record.id}": ${grown}`, "size");
    tmp = store.beginCheckpoint();
    guard.working(tmp);
    let t = performance.now();
    const capturing = captureUpperdir(upperdir, `${tmp}/${ROOTFS_ARCHIVE}`, space.layerCap(frozen ?? 0));
    faultPoint(options.stateDir, "checkpoint-during-capture");
    try {
      await capturing;
    } catch (error) {
      if (!(error instanceof SizeLimitError)) throw error;
      throw new CheckpointError(
        `checkpoint of "${record.id}" stopped: ${error.message}, within the limit of ` +
          `${gib(options.maxBytes ?? Infinity)} (host config "maxCheckpointBytes") and the ` +
          `${gib(options.reserveBytes ?? 0)} kept free on its root (host config "checkpointReserveBytes")`,
        "size",
      );
    }
    lap("rootfs", t);
    const layerBytes = Deno.statSync(`${tmp}/${ROOTFS_ARCHIVE}`).size;
    if (options.maxBytes !== undefined && layerBytes + (memory ?? 0) > options.maxBytes) {
      throw new CheckpointError(
        `container "${record.id}" would need ${gib(layerBytes + (memory ?? 0))}, more than the checkpoint limit of ` +
          `${gib(options.maxBytes)} (host config "maxCheckpointBytes")`,
        "size",
      );
    }

    // The page images are hashed while CRIU writes them (`store/follow_hash.ts`: CRIU only
    // appends to them); after the dump only their tail and the small files are left to hash.
    t = performance.now();
    const left = remaining();
    const follower = new HashFollower(tmp, CRIU_DIR, PAGES_IMAGE);
    let files: Manifest["files"];
    let settling: Promise<unknown> | undefined; // the hash and fsync, once started
    try {
      if (pid !== undefined) {
        try {
          await prepareInotifyPaths(pid, `${tmp}/${CRIU_WORK_DIR}`); // watches on the overlay rootfs (`inotify_paths.ts`)
        } catch { /* best effort: without it CRIU fails such a dump with its own cause */ }
      }
      const dumping = new Runc(target).checkpoint(
        `${tmp}/${CRIU_DIR}`,
        `${tmp}/${CRIU_WORK_DIR}`,
        left === undefined ? {} : { timeoutMs: left },
      ).then(() => undefined, (error: unknown) => {
        if (error instanceof RuncError) return error;
        throw error; // runc could not be started: a failure of this step, not a dump CRIU refused
      });
      faultPoint(options.stateDir, "checkpoint-during-dump");
      const flushing = flushWhile(tmp, dumping);
      flushing.catch(() => {}); // awaited below, unless the dump's spawn fails first
      const failed = await dumping;
      await flushing;
      lap("dump", t);
      const criuLog = options.criuLogs === undefined ? undefined : keepCriuLog(
        options.criuLogs,
        scope,
        record.key,
        "dump",
        failed === undefined,
        `${tmp}/${CRIU_WORK_DIR}/dump.log`,
      );
      if (failed !== undefined) {
        const why = failed.signal === "SIGKILL" && left !== undefined
          ? "the finalize deadline passed"
          : dumpCause(`${tmp}/${CRIU_WORK_DIR}/dump.log`) ?? lastLine(failed.stderrTail);
        throw new CheckpointError(
          `runc checkpoint of "${record.id}" failed: ${why}; the job keeps running, nothing was saved` +
            (criuLog !== undefined ? ` (CRIU log: ${criuLog})` : ""),
          "dump",
          criuLog,
        );
      }
      Deno.removeSync(`${tmp}/${CRIU_WORK_DIR}`, { recursive: true });
      // Before anything is hashed: CRIU saves a periodic timerfd that fired as disarmed (`criu/timerfd_rearm.ts`).
      try {
        rearmTimerfdsIn(`${tmp}/${CRIU_DIR}`);
      } catch { /* an image this fix cannot read is kept as CRIU wrote it: a workaround never fails a checkpoint */ }
      if (options.maxBytes !== undefined && treeBytes(tmp) > options.maxBytes) {
        throw new CheckpointError(
          `the checkpoint of "${record.id}" is ${gib(treeBytes(tmp))}, more than the limit of ` +
            `${gib(options.maxBytes)} (host config "maxCheckpointBytes")`,
          "size",
        );
      }
      if (options.dryRun === true) {
        // Everything a checkpoint writes was written; nothing is committed, the job runs on.
        const bytes = treeBytes(tmp);
        await follower.abort();
        store.abort(tmp);
        tmp = undefined;
        const why = await guard.release();
        timings.paused = Math.round(performance.now() - pausedAt);
        if (why !== undefined) {
          throw new CheckpointError(
            `dry run of "${record.id}": the container could not be resumed (${why}): ARCH retries at its next command`,
            "release",
          );
        }
        lap("total", t0);
        return {
          id: record.id,
          key: record.key,
          dir: "",
          bytes,
          timings,
          dryRun: true,
          ...(notified !== undefined ? { notify: notified } : {}),
        };
      }

      t = performance.now();
      const dir = tmp;
      const hashing = (async () => {
        const followed = await follower.finish();
        const paths = listFiles(dir, new Set());
        const rest = new Map((await hashFiles(dir, paths.filter((p) => !followed.has(p)))).map((f) => [f.path, f]));
        lap("hash", t);
        return paths.map((path) => rest.get(path) ?? { path, ...followed.get(path)! });
      })();
      const durable = makeDurable(tmp).then(() => lap("fsync", t));
      const syncing = Promise.all([hashing, durable]);
      syncing.catch(() => {}); // awaited below, unless the fault point throws first
      settling = Promise.allSettled([hashing, durable]);
      faultPoint(options.stateDir, "checkpoint-during-fsync");
      [files] = await syncing;
      lap("hash+fsync", t);
    } catch (error) {
      await settling; // nothing of this step runs on while the directory is removed
      await follower.abort();
      throw error;
    }
    const manifest: Manifest = {
      version: MANIFEST_VERSION,
      ...checkpointOrigin(record, scope, image),
      ...(await versions.catch((error) => {
        throw new CheckpointError(`cannot read the runc/CRIU versions: ${errorMessage(error)}`, "prepare");
      })),
      rootfs: { archive: ROOTFS_ARCHIVE, upperdir },
      timings,
      files,
    };
    await writeManifest(tmp, manifest, options.secret);
    fsyncPath(`${tmp}/${MANIFEST_FILE}`);
    fsyncPath(`${tmp}/${SIGNATURE_FILE}`);
    faultPoint(options.stateDir, "checkpoint-before-commit");
    t = performance.now();
    const name = newCheckpointName();
    guard.committing(`${store.dir}/${name}`);
    committed = store.commit(tmp, name);
    guard.committed();
    lap("commit", t);
    faultPoint(options.stateDir, "checkpoint-after-commit");
  } catch (error) {
    if (tmp !== undefined && guard.action() === "resume") {
      try {
        store.abort(tmp);
      } catch { /* best effort: the next checkpoint of the key removes it */ }
    }
    const why = await guard.release();
    const stuck = why === undefined
      ? ""
      : `; the container could not be released (${why}): ARCH retries at its next command`;
    if (error instanceof CheckpointError) {
      throw withNotice(new CheckpointError(error.message + stuck, error.step, error.criuLog));
    }
    throw withNotice(
      new CheckpointError(`checkpoint of "${record.id}" failed: ${errorMessage(error)}${stuck}`, "capture"),
    );
  }
  try {
    const current = registry.get(record.namespace, record.id)?.createdAt === record.createdAt;
    if (options.leaveRunning && current) {
      registry.put({ ...record, checkpointedAt: new Date().toISOString(), checkpointDir: committed });
    } else if (!options.leaveRunning && current) {
      // Stopped by its checkpoint: the engine's delete has nothing left to decide (the data is
      // kept), so the record goes before the kill, and that delete and the shim's cleanup reach
      // runc without starting ARCH (`wrapper/fast_path.ts`).
      registry.remove(record.namespace, record.id);
    }
  } catch { /* the record is a convenience; the marker and the key hold the truth */ }
  faultPoint(options.stateDir, "checkpoint-before-kill");
  const why = await guard.release();
  if (why !== undefined) {
    if (!options.leaveRunning) {
      try {
        // Not stopped after all: the record comes back, so finalize and the exit watcher still see it.
        registry.put({ ...record, checkpointedAt: new Date().toISOString(), checkpointDir: committed });
      } catch { /* as above */ }
    }
    throw new CheckpointError(
      `the checkpoint of "${record.id}" is committed (${committed}) but the container could not be ` +
        `${options.leaveRunning ? "resumed" : "stopped"}: ${why}; ARCH retries at its next command`,
      "release",
    );
  }
  lap("total", t0);
  return {
    id: record.id,
    key: record.key,
    dir: committed,
    bytes: treeBytes(committed),
    timings,
    ...(notified !== undefined ? { notify: notified } : {}),
  };
}

/** CRIU's cause of a failed dump, from its log (`criu/diagnose.ts`), if the log says one. */
function dumpCause(log: string): string | undefined {
  try {
    return criuCause(new TextDecoder().decode(logTail(log)));
  } catch {
    return undefined; // no log: runc's own words
  }
}

/** The last of the stderr lines a {@link RuncError} keeps. */
function lastLine(tail: string): string {
  return tail.split(" | ").pop() ?? "";
}
