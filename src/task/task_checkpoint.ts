/**
 * The exit-code protocol's commit: when a job exits with its `ARCH_CHECKPOINT_EXIT_CODE`,
 * its writable layer becomes a *task checkpoint* of its key (manifest version 3, `kind:
 * "task"`: the layer archive only, no CRIU image), signed, hashed and committed like any
 * other checkpoint; the next container of the key starts from its image with those files in
 * place and a fresh process (`restore/restore.ts`).
 *
 * Guarantees: runs under the key's claim; the layer is bounded while it is written (host
 * config `maxCheckpointBytes` and the reserve kept free on the root, `space_budget.ts`): a
 * job that exits with its code and a 10 GB layer gets one sentence, and the key's previous
 * checkpoint stays current; nothing is committed unless every step succeeded (the
 * temporary directory goes on every failure). Requires root.
 */

import { MANIFEST_FILE, ROOTFS_ARCHIVE, SIGNATURE_FILE, TASK_MANIFEST_VERSION } from "../store/layout.ts";
import { ArchError, errorMessage } from "../util/errors.ts";
import { KeyStore, makeDurable, newCheckpointName } from "../store/store.ts";
import { checkpointOrigin, hashFiles, listFiles, type Manifest, writeManifest } from "../store/manifest.ts";
import { captureUpperdir, SizeLimitError } from "../rootfs/layer_archive.ts";
import { SpaceBudget } from "../checkpoint/space_budget.ts";
import { imageIdentity } from "../rootfs/image_identity.ts";
import { toolVersions } from "../criu/versions.ts";
import { fsyncPath } from "../util/fsync.ts";
import type { ContainerRecord } from "../registry/registry.ts";
import { ClaimTimeout } from "../store/claim.ts";
import { newerCheckpoint } from "../store/retention.ts";

/** A task checkpoint that was not committed (code `task-checkpoint-<step>`); the key's previous checkpoint stays. */
export class TaskCheckpointError extends ArchError {
  constructor(message: string, readonly step: string) {
    super(message, `task-checkpoint-${step}`, 1);
  }
}

/** What a task checkpoint needs from the node. */
export interface TaskCheckpointOptions {
  readonly stateDir: string;
  readonly secret: Uint8Array;
  readonly runcPath: string;
  /** The container's mounted rootfs (to name its image). */
  readonly rootfs: string;
  readonly lockWaitMs: number;
  readonly maxBytes: number;
  readonly reserveBytes: number;
}

/** A committed task checkpoint: its directory, size and duration. */
export interface TaskCheckpointResult {
  readonly dir: string;
  readonly bytes: number;
  readonly ms: number;
}

/**
 * Commits the writable layer of `record`'s (exited) container as its key's task checkpoint;
 * see the module doc. Throws {@link TaskCheckpointError}.
 */
export async function commitTaskCheckpoint(
  record: ContainerRecord,
  options: TaskCheckpointOptions,
): Promise<TaskCheckpointResult> {
  const started = performance.now();
  const { checkpointRoot: root, scope, upperdir } = record;
  if (typeof root !== "string" || typeof scope !== "string" || typeof upperdir !== "string") {
    throw new TaskCheckpointError(`container "${record.id}" has no checkpoint root, scope or writable layer`, "config");
  }
  const versions = toolVersions(options.runcPath);
  versions.catch(() => {}); // awaited below
  let image;
  try {
    image = await imageIdentity(options.rootfs, options.stateDir);
  } catch (error) {
    throw new TaskCheckpointError(`cannot identify the image of "${record.id}": ${errorMessage(error)}`, "prepare");
  }
  if (image === undefined) throw new TaskCheckpointError(`cannot identify the image of "${record.id}"`, "prepare");
  const store = new KeyStore(root, scope, record.key);
  const space = new SpaceBudget(root, options.maxBytes, options.reserveBytes);
  let claim;
  try {
    claim = await store.claim("task-checkpoint", { create: true, waitMs: options.lockWaitMs });
  } catch (error) {
    const why = error instanceof ClaimTimeout ? error.message : `cannot claim it: ${errorMessage(error)}`;
    throw new TaskCheckpointError(`cannot save the files of key "${record.key}": ${why}`, "claim");
  }
  using _claim = claim;
  // Under the claim: a newer checkpoint of another container of the key is never replaced by this older job's files.
  const newer = newerCheckpoint(store, record);
  if (newer !== undefined) {
    throw new TaskCheckpointError(
      `the files of "${record.id}" were not saved: a checkpoint of container "${newer}" is current, made after ` +
        `this container started`,
      "superseded",
    );
  }
  const tmp = store.beginCheckpoint();
  try {
    try {
      await captureUpperdir(upperdir, `${tmp}/${ROOTFS_ARCHIVE}`, space.layerCap(0));
    } catch (error) {
      if (!(error instanceof SizeLimitError)) throw error;
      throw new TaskCheckpointError(
        `the files of "${record.id}" were not saved: ${error.message} (host config "maxCheckpointBytes" and ` +
          `"checkpointReserveBytes"); the key's previous checkpoint stays current`,
        "size",
      );
    }
    const files = await hashFiles(tmp, listFiles(tmp, new Set()));
    await makeDurable(tmp);
    const manifest: Manifest = {
      version: TASK_MANIFEST_VERSION,
      kind: "task",
      ...checkpointOrigin(record, scope, image),
      ...(await versions),
      rootfs: { archive: ROOTFS_ARCHIVE, upperdir },
      timings: { total: Math.round(performance.now() - started) },
      files,
    };
    await writeManifest(tmp, manifest, options.secret);
    fsyncPath(`${tmp}/${MANIFEST_FILE}`);
    fsyncPath(`${tmp}/${SIGNATURE_FILE}`);
    const dir = store.commit(tmp, newCheckpointName());
    const bytes = files.reduce((n, f) => n + f.size, 0);
    return { dir, bytes, ms: Math.round(performance.now() - started) };
  } catch (error) {
    try {
      store.abort(tmp);
    } catch { /* the next checkpoint of the key removes it */ }
    if (error instanceof TaskCheckpointError) throw error;
    throw new TaskCheckpointError(`the files of "${record.id}" were not saved: ${errorMessage(error)}`, "capture");
  }
}
