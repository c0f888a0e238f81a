/**
 * A shared-FS job's work directory: `<shared>/work/<scope>/<key>/` on the shared file
 * system, bind-mounted into the container (see `config_json.ts`), and its checkpoint images beside
 * it in `<shared>/checkpoint/<scope>/<key>/`.
 *
 * Guarantees:
 * - Nothing is created or removed unless the shared file system is mounted at that moment
 *   (an unmounted mount point is a directory of the node's own disk).
 * - `work/` and `work/<scope>/` are root's (0700), entered component by component without
 *   following symlinks (`store/safe_dir.ts`); the key's directory belongs to the container's
 *   user (0700) and is the only thing the tenant can change.
 * - A work directory belongs to the image of the job that made it (`rootfs/image_identity.ts`,
 *   recorded root-owned in `<shared>/work-image/<scope>/<key>`, outside the tenant's reach):
 *   a container of another image asking for the same key is refused before anything is
 *   mounted, as a checkpoint of another image is refused at restore. So a reused or guessed
 *   key does not hand one job's files to another job's image.
 * - The work directory is never deleted except by {@link removeWorkdir}, which the poststop
 *   hook calls only after the job ended by itself with exit code 0 and only when the host
 *   configuration asks for it (`removeWorkdirOnSuccess`). It is renamed away first, so it
 *   vanishes at once, then removed from directory descriptors (`util/dirfd.ts`): never through
 *   a link, never outside `work/<scope>/`, whatever the tenant renames meanwhile.
 * Requires root.
 */

import { errorMessage } from "../util/errors.ts";
import { beneath } from "../store/safe_dir.ts";
import { mountAt } from "../util/mounts.ts";
import { isSafeSegment, lstatIfExists } from "../util/paths.ts";
import { fsyncPath } from "../util/fsync.ts";
import { Dir } from "../util/dirfd.ts";

/** Shared-FS mode: where the job's files and checkpoints live on the shared file system. */
export interface SharedFsConfig {
  /** The real path of `ARCH_SHAREDFS_HOST_PATH`. */
  readonly root: string;
  /** The allowed shared file system (a mount point, host config `sharedFsRoots`) that holds it. */
  readonly mountPoint: string;
  /** `ARCH_WORKDIR_CONTAINER_PATH`: where the work directory appears in the container. */
  readonly containerPath: string;
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
  const existing = lstatIfExists(path);
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
  if (info.uid !== owner.uid || info.gid !== owner.gid) {
    // through the directory's own descriptor: never a link planted in its place meanwhile
    using workParent = Dir.open(parent, { rootOnly: true });
    using dir = workParent.child(key);
    Deno.chownSync(dir.at(), owner.uid, owner.gid);
  }
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
    return `the work directory "${path}" cannot be found: ${errorMessage(error)}`;
  }
  return undefined;
}

/**
 * Why the directory the container sees at its work path is not the key's work directory, or
 * `undefined` when it is the same directory (device and inode). Read by the createRuntime
 * hook once runc made its mounts: `rootfs` is the container's root as the hook sees it
 * (`/proc/<pid>/root/<rootfs>`), and `containerPath` is resolved inside it as runc resolves a
 * mount destination (`openat2` `RESOLVE_IN_ROOT`: the image's links stay inside the rootfs).
 * The expected directory is reached from descriptors (`util/dirfd.ts`). So whatever was
 * renamed or linked between the wrapper's check and runc's mount, the container starts only
 * with the directory ARCH checked.
 */
export function mountedWorkdirProblem(
  shared: Pick<SharedFsConfig, "root">,
  scope: string,
  key: string,
  rootfs: string,
  containerPath: string,
): string | undefined {
  let want: Deno.FileInfo;
  try {
    using root = Dir.open(shared.root, { rootOnly: true });
    using parent = root.descend(["work", scope], { rootOnly: true, sameDevice: true });
    if (parent === undefined) return `the work directory "${workdirPath(shared.root, scope, key)}" is gone`;
    using dir = parent.child(key, { sameDevice: true });
    want = Deno.statSync(dir.at());
  } catch (error) {
    return `the work directory "${workdirPath(shared.root, scope, key)}" cannot be opened safely: ` +
      errorMessage(error);
  }
  let got: Deno.FileInfo;
  try {
    using container = Dir.open(rootfs);
    using mounted = container.openInRoot(containerPath);
    got = Deno.statSync(mounted.at());
  } catch (error) {
    return `the container's work path "${containerPath}" cannot be checked: ${errorMessage(error)}`;
  }
  if (got.dev !== want.dev || got.ino !== want.ino) {
    return `the directory mounted at "${containerPath}" is not "${
      workdirPath(shared.root, scope, key)
    }" (a path element was replaced after ARCH checked it)`;
  }
  return undefined;
}

/** Removes a finished job's work directory and its image record (see the module doc for when). */
export function removeWorkdir(shared: Pick<SharedFsConfig, "root" | "mountPoint">, scope: string, key: string): void {
  const path = workdirPath(shared.root, scope, key);
  const down = notMounted(shared.mountPoint);
  if (down !== undefined) throw new Error(`${down}: the work directory "${path}" is kept`);
  // From descriptors: `work/<scope>` is entered without following a link and checked root-only,
  // then the key's directory is renamed and removed relative to it (`util/dirfd.ts`).
  using root = Dir.open(shared.root, { rootOnly: true });
  using parent = root.descend(["work", scope], { rootOnly: true, sameDevice: true });
  if (parent === undefined || parent.lstat(key) === undefined) return;
  const aside = `.removed-${key}-${Date.now()}-${Deno.pid}`;
  parent.rename(key, aside);
  fsyncPath(parent.at());
  parent.removeTree(aside);
  using images = root.descend(["work-image", scope], { rootOnly: true, sameDevice: true });
  if (images?.lstat(key)?.isFile) Deno.removeSync(images.at(key));
}
