/**
 * A shared-FS job's work directory: `<shared>/work/<scope>/<key>/` on the shared file
 * system, bind-mounted into the container (see `spec.ts`), and its checkpoint images beside
 * it in `<shared>/checkpoint/<scope>/<key>/`.
 *
 * Guarantees:
 * - Nothing is created or removed unless the shared file system is mounted at that moment
 *   (an unmounted mount point is a directory of the node's own disk).
 * - `work/` and `work/<scope>/` are root's (0700), entered component by component without
 *   following symlinks (`store/safe_dir.ts`); the key's directory belongs to the container's
 *   user (0700) and is the only thing the tenant can change.
 * - A work directory belongs to the image of the job that made it (`engine/image_identity.ts`,
 *   recorded root-owned in `<shared>/work-image/<scope>/<key>`, outside the tenant's reach):
 *   a container of another image asking for the same key is refused before anything is
 *   mounted, as a checkpoint of another image is refused at restore. So a reused or guessed
 *   key does not hand one job's files to another job's image.
 * - The work directory is never deleted except by {@link removeWorkdir}, which the poststop
 *   hook calls only after the job ended by itself with exit code 0 and only when the host
 *   configuration asks for it (`removeWorkdirOnSuccess`). It is renamed away first, so it
 *   vanishes at once, then removed without following any symlink the tenant left in it.
 * Requires root.
 */

import type { SharedFsConfig } from "../config/container_config.ts";
import { beneath } from "../store/safe_dir.ts";
import { mountAt } from "../util/mounts.ts";
import { isSafeSegment } from "../util/paths.ts";
import { fsyncPath } from "../util/fsync.ts";

function lstatOrUndefined(path: string): Deno.FileInfo | undefined {
  try {
    return Deno.lstatSync(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw error;
  }
}

/** Where a key's work directory is. */
export function workdirPath(sharedRoot: string, scope: string, key: string): string {
  if (!isSafeSegment(scope) || !isSafeSegment(key)) throw new Error(`unsafe scope or key "${scope}/${key}"`);
  return `${sharedRoot}/work/${scope}/${key}`;
}

/** Why the shared file system at `mountPoint` cannot be written now, or `undefined` when it is mounted. */
export function notMounted(mountPoint: string, mountinfo?: string): string | undefined {
  return mountAt(mountPoint.replace(/\/+$/, "") || "/", mountinfo) === undefined
    ? `the shared file system "${mountPoint}" is not mounted on this node`
    : undefined;
}

/** Where the image a key's work directory belongs to is recorded (root's, beside the work tree). */
function imageRecordPath(sharedRoot: string, scope: string, key: string): string {
  return `${sharedRoot}/work-image/${scope}/${key}`;
}

/**
 * Binds the key's work directory to `image` on first use; throws with one sentence when it
 * belongs to another image.
 */
function claimForImage(shared: SharedFsConfig, scope: string, key: string, image: string): void {
  beneath(shared.root, ["work-image", scope], true);
  const path = imageRecordPath(shared.root, scope, key);
  try {
    Deno.writeTextFileSync(path, image, { createNew: true, mode: 0o600 }); // O_EXCL: never through a symlink
    fsyncPath(path);
    return;
  } catch (error) {
    if (!(error instanceof Deno.errors.AlreadyExists)) throw error;
  }
  const info = Deno.lstatSync(path);
  const recorded = info.isFile && info.size < 4096 ? Deno.readTextFileSync(path) : "";
  if (recorded !== image) {
    throw new Error(
      `the work directory of key "${key}" belongs to a job of another image: start this container with its own ` +
        `image or another ARCH_CHECKPOINT_ID, or have the admin remove ${workdirPath(shared.root, scope, key)} ` +
        `and ${path}`,
    );
  }
}

/**
 * Creates (or checks) the key's work directory and the checkpoint root beside it, owned by
 * `owner`, for a container of image `image`. Returns the work directory's host path. Throws
 * with one sentence.
 */
export function ensureWorkdir(
  shared: SharedFsConfig,
  scope: string,
  key: string,
  owner: { uid: number; gid: number },
  image: string,
): string {
  const down = notMounted(shared.mountPoint);
  if (down !== undefined) throw new Error(`${down}: mount it, then start the container again`);
  const parent = beneath(shared.root, ["work", scope], true)!;
  const path = workdirPath(shared.root, scope, key);
  const existing = lstatOrUndefined(path);
  if (existing !== undefined && !existing.isDirectory) {
    throw new Error(`the work directory "${path}" is not a directory`);
  }
  claimForImage(shared, scope, key, image);
  beneath(shared.root, ["checkpoint"], true);
  let info = existing;
  if (info === undefined) {
    try {
      Deno.mkdirSync(path, { mode: 0o700 });
    } catch (e) {
      if (!(e instanceof Deno.errors.AlreadyExists)) throw e;
    }
    info = Deno.lstatSync(path);
    fsyncPath(parent);
    if (!info.isDirectory) throw new Error(`the work directory "${path}" is not a directory`);
  }
  if (info.uid !== owner.uid || info.gid !== owner.gid) Deno.chownSync(path, owner.uid, owner.gid);
  return path;
}

/** Why the work directory `path` cannot be handed to the container now, or `undefined`. */
export function workdirProblem(path: string, mountPoint: string): string | undefined {
  const down = notMounted(mountPoint);
  if (down !== undefined) return down;
  try {
    const info = Deno.lstatSync(path);
    if (!info.isDirectory) return `the work directory "${path}" is not a directory`;
  } catch (error) {
    return `the work directory "${path}" cannot be found: ${(error as Error).message}`;
  }
  return undefined;
}

/** Removes a finished job's work directory and its image record (see the module doc for when). */
export function removeWorkdir(shared: Pick<SharedFsConfig, "root" | "mountPoint">, scope: string, key: string): void {
  const path = workdirPath(shared.root, scope, key);
  const down = notMounted(shared.mountPoint);
  if (down !== undefined) throw new Error(`${down}: the work directory "${path}" is kept`);
  const parent = path.slice(0, path.lastIndexOf("/"));
  const aside = `${parent}/.removed-${key}-${Date.now()}-${Deno.pid}`;
  try {
    Deno.renameSync(path, aside);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return;
    throw error;
  }
  fsyncPath(parent);
  Deno.removeSync(aside, { recursive: true });
  try {
    Deno.removeSync(imageRecordPath(shared.root, scope, key));
  } catch { /* absent: a work directory of an older ARCH */ }
}
