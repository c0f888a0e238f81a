/**
 * Finds a container's writable layer: the overlay `upperdir` of the mount at its rootfs
 * path, read from /proc/self/mountinfo (Docker: /var/lib/docker/overlay2/<id>/diff;
 * containerd: .../snapshots/<n>/fs). Pure parsing plus one file read.
 */

/** Decodes the octal escapes mountinfo uses for spaces, tabs, newlines and backslashes. */
function unescape(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/**
 * The upperdir of the overlay mounted at `mountPoint` in `mountinfo` text, `undefined` if
 * that mount is not an overlay (or absent). The last mount at that point wins.
 *
 * @example
 * ```ts
 * import { upperdirFromMountinfo } from "./upperdir.ts";
 * const line = "99 1 0:50 / /m rw - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w";
 * if (upperdirFromMountinfo(line, "/m") !== "/u") throw new Error();
 * ```
 */
export function upperdirFromMountinfo(mountinfo: string, mountPoint: string): string | undefined {
  let found: string | undefined;
  for (const line of mountinfo.split("\n")) {
    const [left, right] = line.split(" - ");
    if (left === undefined || right === undefined) continue;
    if (unescape(left.split(" ")[4] ?? "") !== mountPoint) continue;
    const [fstype, , superOptions] = right.split(" ");
    if (fstype !== "overlay") {
      found = undefined;
      continue;
    }
    const upper = (superOptions ?? "").split(",").find((o) => o.startsWith("upperdir="));
    found = upper === undefined ? undefined : unescape(upper.slice("upperdir=".length));
  }
  return found;
}

/** The upperdir of the overlay at `rootfs` on this host. */
export function findUpperdir(rootfs: string): string | undefined {
  return upperdirFromMountinfo(Deno.readTextFileSync("/proc/self/mountinfo"), Deno.realPathSync(rootfs));
}
