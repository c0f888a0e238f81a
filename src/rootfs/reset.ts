/**
 * Puts a new container's rootfs back to the image's files after a restore failed once the
 * saved writable layer had been (partly) applied, so that a fresh start never runs on a mix
 * of the image and a half-applied layer.
 *
 * The rootfs is an overlay mount (containerd: the bundle's `rootfs`; Docker:
 * `/var/lib/docker/overlay2/<id>/merged`) of a container that was just created, so its
 * upperdir held nothing of value before the apply. The overlay is found in
 * /proc/self/mountinfo, unmounted (umount2(2) without MNT_DETACH: a mount still in use is
 * refused, never detached), its upperdir and workdir are emptied, and the same overlay is
 * mounted again with mount(2): same source, lower/upper/work layers as given (relative
 * layer paths, see `upperdir.ts`, from the same working directory the engine used: Docker
 * and containerd do that when the absolute option string exceeds a page), same overlay
 * options and per-mount flags. No fork; FFI to libc.
 *
 * Guarantees: every refusal that can be decided up front (not an overlay, a bind mount of a
 * subtree, escaped characters or flags ARCH cannot reproduce, an unknown relative layout,
 * layers that are not directories, the same overlay mounted anywhere else: at another
 * mount point or in another mount namespace, as a container still running from it would
 * have it, and an unmount refused because it is in use) is made before anything changes,
 * leaving the rootfs as it was. Any failure throws an Error with one sentence; the caller then refuses the container
 * instead of starting it. Not guaranteed: the mount's propagation type and peer group are
 * the kernel's defaults for a new mount at that point, not necessarily the old ones; the
 * upperdir's own mode, owner and xattrs (the rootfs root's) stay as the apply left them.
 * The process's working directory is changed for the duration of one mount(2) call when
 * layer paths are relative. Requires root and `--allow-ffi`.
 */

import { errorMessage } from "../util/errors.ts";
import { mount, umount } from "./_libc.ts";
import { overlayFromMountinfo, type OverlayMount, type OverlayPaths, resolveOverlayPaths } from "./upperdir.ts";

/** mount(2) flags by the per-mount option mountinfo shows for them. */
const MOUNT_FLAGS: Readonly<Record<string, bigint>> = {
  ro: 1n,
  rw: 0n,
  nosuid: 2n,
  nodev: 4n,
  noexec: 8n,
  nosymfollow: 256n,
  noatime: 1024n,
  nodiratime: 2048n,
  relatime: 1n << 21n,
};
const MS_STRICTATIME = 1n << 24n;
/** mount(2) flags by the superblock option mountinfo shows for them; other superblock options are overlay's. */
const SUPER_FLAGS: Readonly<Record<string, bigint>> = {
  ro: 1n,
  rw: 0n,
  sync: 16n,
  mand: 64n,
  dirsync: 128n,
  lazytime: 1n << 25n,
};

/**
 * The mount(2) flags and option string that mount `overlay` again as it was (pure).
 * Throws an Error with one sentence if it cannot be reproduced.
 *
 * @example
 * ```ts
 * import { remountArguments } from "./reset.ts";
 * import { overlayFromMountinfo } from "./upperdir.ts";
 * const line = "99 1 0:50 / /m rw,nodev,relatime - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w,uuid=on";
 * const { flags, data } = remountArguments(overlayFromMountinfo(line, "/m")!);
 * if (flags !== 4n + (1n << 21n) || data !== "lowerdir=/l,upperdir=/u,workdir=/w,uuid=on") throw new Error();
 * ```
 */
export function remountArguments(overlay: OverlayMount): { flags: bigint; data: string } {
  const where = `the overlay at "${overlay.mountPoint}"`;
  if (overlay.root !== "/") throw new Error(`${where} is a bind mount of "${overlay.root}", not the overlay itself`);
  if (overlay.upperdir === undefined || overlay.workdir === undefined) {
    throw new Error(`${where} has no upperdir or workdir: it has no writable layer to reset`);
  }
  let flags = 0n;
  for (const o of overlay.mountOptions) {
    const flag = MOUNT_FLAGS[o];
    if (flag === undefined) {
      throw new Error(`${where} has the mount option "${o}", which ARCH cannot reproduce`);
    }
    flags |= flag;
  }
  if (!overlay.mountOptions.some((o) => o === "noatime" || o === "relatime")) flags |= MS_STRICTATIME;
  const data: string[] = [];
  for (const o of overlay.superOptions) {
    if (o.includes("\\")) throw new Error(`${where} has an escaped character in its option "${o}"`);
    const flag = SUPER_FLAGS[o];
    if (flag !== undefined) flags |= flag;
    else if (o !== "") data.push(o);
  }
  return { flags, data: data.join(",") };
}

/**
 * Where else the file system `dev` (`major:minor` of mountinfo) is mounted, in this mount
 * namespace (other than at `mountPoint`) or in any other (one mountinfo read per namespace):
 * an overlay still mounted elsewhere (a container still running from it) must not have its
 * upperdir emptied.
 */
function otherMounts(dev: string, mountPoint: string): string | undefined {
  const self = Deno.readLinkSync("/proc/self/ns/mnt");
  const seen = new Set<string>();
  for (const entry of [{ name: "self" }, ...Deno.readDirSync("/proc")]) {
    if (entry.name !== "self" && !/^[0-9]+$/.test(entry.name)) continue;
    let ns: string;
    let mountinfo: string;
    try {
      ns = Deno.readLinkSync(`/proc/${entry.name}/ns/mnt`);
      if (seen.has(ns)) continue;
      seen.add(ns);
      mountinfo = Deno.readTextFileSync(`/proc/${entry.name}/mountinfo`);
    } catch {
      continue; // the process is gone
    }
    for (const line of mountinfo.split("\n")) {
      const fields = line.split(" ");
      if (fields[2] !== dev || (ns === self && fields[4] === mountPoint)) continue;
      return ns === self ? `at "${fields[4]}"` : `in the mount namespace of process ${entry.name}`;
    }
  }
  return undefined;
}

/** Removes everything inside `dir` (not `dir` itself), never following a symlink. */
function emptyDirectory(dir: string): void {
  for (const entry of Deno.readDirSync(dir)) Deno.removeSync(`${dir}/${entry.name}`, { recursive: true });
  if ([...Deno.readDirSync(dir)].length > 0) throw new Error(`"${dir}" is not empty after emptying it`);
}

function assertDirectory(path: string, what: string, follow: boolean): void {
  let info: Deno.FileInfo;
  try {
    info = follow ? Deno.statSync(path) : Deno.lstatSync(path);
  } catch (error) {
    throw new Error(`the ${what} "${path}" cannot be read: ${errorMessage(error)}`);
  }
  if (!info.isDirectory) throw new Error(`the ${what} "${path}" is not a directory`);
}

/**
 * Resets the overlay mounted at `rootfs` to its lower layers: unmount, empty the upperdir
 * and the workdir, mount again with the same options. Throws an Error with one sentence,
 * prefixed `cannot reset the rootfs "<rootfs>"`, if anything fails (see the module comment
 * for what is left then). Requires root and `--allow-ffi`.
 */
export function resetRootfs(rootfs: string): Promise<void> {
  try {
    reset(rootfs);
    return Promise.resolve();
  } catch (error) {
    return Promise.reject(error);
  }
}

function reset(rootfs: string): void {
  const fail = (why: string, cause?: unknown): never => {
    throw new Error(`cannot reset the rootfs "${rootfs}": ${why}`, { cause });
  };
  let mountPoint: string;
  try {
    mountPoint = Deno.realPathSync(rootfs);
  } catch (error) {
    return fail(errorMessage(error), error);
  }
  const overlay = overlayFromMountinfo(Deno.readTextFileSync("/proc/self/mountinfo"), mountPoint);
  if (overlay === undefined) return fail("it is not an overlay mount");
  let args: { flags: bigint; data: string };
  let paths: OverlayPaths;
  try {
    args = remountArguments(overlay);
    paths = resolveOverlayPaths(overlay);
    assertDirectory(paths.upperdir!, "upperdir", false);
    assertDirectory(paths.workdir!, "workdir", false);
    for (const lower of paths.lowerdirs) assertDirectory(lower, "lowerdir", true); // Docker's l/<id> are symlinks
  } catch (error) {
    return fail(errorMessage(error), error);
  }
  const upperdir = paths.upperdir!;
  const workdir = paths.workdir!;
  if (upperdir === "/" || workdir === "/" || mountPoint.startsWith(`${upperdir}/`)) {
    return fail(`its upperdir "${upperdir}" or workdir "${workdir}" is not a layer directory`);
  }
  const elsewhere = otherMounts(overlay.dev, mountPoint);
  if (elsewhere !== undefined) return fail(`its overlay is also mounted ${elsewhere}: is a container still using it?`);
  try {
    umount(mountPoint);
  } catch (error) {
    return fail(`${errorMessage(error)} (is a process or another container still using it?)`, error);
  }
  let emptying: unknown;
  try {
    emptyDirectory(upperdir);
    emptyDirectory(workdir);
  } catch (error) {
    emptying = error;
  }
  // Mount again even if emptying failed: the engine expects its mount back to tear it down.
  const cwd = paths.base === undefined ? undefined : Deno.cwd();
  try {
    if (paths.base !== undefined) Deno.chdir(paths.base);
    mount(overlay.source, mountPoint, "overlay", args.flags, args.data);
  } catch (error) {
    return fail(`the overlay was unmounted but could not be mounted again: ${errorMessage(error)}`, error);
  } finally {
    if (cwd !== undefined) Deno.chdir(cwd);
  }
  if (emptying !== undefined) {
    return fail(`cannot empty its upperdir or workdir: ${errorMessage(emptying)}`, emptying);
  }
}
