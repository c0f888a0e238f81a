/**
 * What is mounted where, read from mountinfo (`/proc/self/mountinfo`): pure parsing plus
 * one file read. Used to refuse writing into a mount point whose file system is not mounted
 * (a shared file system that went away would leave an empty directory of the root file
 * system in its place).
 */

import { resolvedPath } from "./paths.ts";

/** One line of mountinfo. */
export interface MountEntry {
  readonly mountPoint: string;
  readonly fstype: string;
  readonly source: string;
}

/** Decodes the octal escapes mountinfo uses for spaces, tabs, newlines and backslashes. */
function unescape(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/**
 * The mounts of a mountinfo text, in mount order.
 *
 * @example
 * ```ts
 * import { parseMountinfo } from "./mounts.ts";
 * const [m] = parseMountinfo("36 1 0:40 / /mnt/efs rw,relatime shared:1 - fuse.sshfs srv:/x rw\n");
 * if (m?.mountPoint !== "/mnt/efs" || m.fstype !== "fuse.sshfs") throw new Error();
 * ```
 */
export function parseMountinfo(text: string): MountEntry[] {
  const out: MountEntry[] = [];
  for (const line of text.split("\n")) {
    const fields = line.split(" ");
    const dash = fields.indexOf("-");
    if (fields.length < 10 || dash < 6) continue;
    out.push({ mountPoint: unescape(fields[4]!), fstype: fields[dash + 1]!, source: unescape(fields[dash + 2]!) });
  }
  return out;
}

/**
 * The mount at exactly `path` (the last one, which hides the others), if `path` is a mount point.
 * `path` is resolved first (mountinfo names resolved paths: a shared-FS root configured as
 * `/efs`, a link to `/mnt/efs`, is the mount at `/mnt/efs`).
 */
export function mountAt(
  path: string,
  mountinfo = Deno.readTextFileSync("/proc/self/mountinfo"),
): MountEntry | undefined {
  const target = resolvedPath(path);
  return parseMountinfo(mountinfo).findLast((m) => m.mountPoint === target);
}

/** File systems whose content only this node's root can write (block devices and memory). */
const LOCAL_FILE_SYSTEMS = new Set([
  "ext2",
  "ext3",
  "ext4",
  "xfs",
  "btrfs",
  "f2fs",
  "zfs",
  "tmpfs",
  "ramfs",
  "overlay",
]);

/**
 * Whether `path` lies on a local file system (see {@link LOCAL_FILE_SYSTEMS}): then whoever can
 * write it is root on this node already. A network or FUSE file system (NFS, EFS, sshfs, …),
 * or anything unknown, answers false.
 */
export function onLocalFileSystem(
  path: string,
  mountinfo = Deno.readTextFileSync("/proc/self/mountinfo"),
): boolean {
  let real: string;
  try {
    real = Deno.realPathSync(path);
  } catch {
    return false;
  }
  const under = (m: MountEntry) => m.mountPoint === "/" || real === m.mountPoint || real.startsWith(`${m.mountPoint}/`);
  const mounts = parseMountinfo(mountinfo).filter(under);
  // The deepest mount point wins; among equals, the last mounted (it hides the others).
  const best = mounts.reduce<MountEntry | undefined>(
    (b, m) => (b === undefined || m.mountPoint.length >= b.mountPoint.length ? m : b),
    undefined,
  );
  return best !== undefined && LOCAL_FILE_SYSTEMS.has(best.fstype);
}
