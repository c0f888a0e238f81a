/**
 * Captures a container's writable layer and applies it to a new container's rootfs.
 *
 * Capture (container paused): GNU tar of the overlay upperdir, keeping ownership, modes,
 * hard links, xattrs (so opaque-directory markers) and whiteouts (character devices 0/0).
 *
 * Apply (new container created, before `runc restore`): the archive is extracted into a
 * private staging directory next to nothing the container sees; then in the new rootfs
 * (the mounted overlay, never its upperdir) each whiteout deletes its path, each opaque
 * directory is emptied, and the remaining tree is copied in with tar. Archive member names
 * are checked first: an absolute name or a `..` element refuses the whole archive. Before
 * anything is written or deleted, every target path is checked to have no symlink among its
 * parents in the new rootfs: a new image with `/data -> /etc` must not turn a saved
 * `data/passwd` into a write to the host's /etc (the container is created, not running, so
 * its rootfs does not change meanwhile).
 * Requires root and GNU tar.
 */

import { mustRun } from "../process/exec.ts";
import { getxattr } from "../util/xattr.ts";

const TAR_META = ["--numeric-owner", "--xattrs", "--xattrs-include=*", "--acls", "--selinux"];

/** Writes the upperdir's tree to `archive`. */
export async function captureUpperdir(upperdir: string, archive: string): Promise<void> {
  await mustRun({ cmd: "tar", args: [...TAR_META, "--sparse", "-C", upperdir, "-cpf", archive, "."] });
}

/** Whether `name` (a tar member name) stays inside the extraction directory. */
export function isSafeMemberName(name: string): boolean {
  if (name.startsWith("/")) return false;
  return !name.split("/").includes("..");
}

async function checkMembers(archive: string): Promise<void> {
  const { stdout } = await mustRun({ cmd: "tar", args: ["-tf", archive] });
  const bad = stdout.split("\n").filter((n) => n !== "" && !isSafeMemberName(n));
  if (bad.length > 0) throw new Error(`rootfs archive has unsafe member names: ${bad.slice(0, 3).join(", ")}`);
}

/**
 * Throws unless no existing parent component of `rootfs/rel` is a symlink or a non-directory.
 * The final component may be anything (it is replaced).
 */
export function assertNoSymlinkParents(rootfs: string, rel: string): void {
  const parts = rel.split("/").filter((p) => p !== "" && p !== ".");
  let path = rootfs;
  for (const part of parts.slice(0, -1)) {
    path = `${path}/${part}`;
    let info: Deno.FileInfo;
    try {
      info = Deno.lstatSync(path);
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return; // created by the extraction as a directory
      throw error;
    }
    if (info.isSymlink) throw new Error(`refusing to write through the symlink "${path}" in the new rootfs`);
    if (!info.isDirectory) throw new Error(`"${path}" in the new rootfs is not a directory`);
  }
}

function isSymlink(path: string): boolean {
  try {
    return Deno.lstatSync(path).isSymlink;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

const OPAQUE_XATTRS = ["trusted.overlay.opaque", "user.overlay.opaque"];

/** Applies `archive` (from {@link captureUpperdir}) to the mounted `rootfs`. */
export async function applyToRootfs(archive: string, rootfs: string, stagingParent: string): Promise<void> {
  await checkMembers(archive);
  const staging = Deno.makeTempDirSync({ dir: stagingParent, prefix: ".rootfs-" });
  try {
    await mustRun({ cmd: "tar", args: [...TAR_META, "-C", staging, "-xpf", archive] });
    // Whiteouts and opaque directories act on the new rootfs, then leave the staging tree.
    const walk = (rel: string) => {
      for (const entry of Deno.readDirSync(`${staging}${rel}`)) {
        const path = `${rel}/${entry.name}`;
        assertNoSymlinkParents(rootfs, path);
        const info = Deno.lstatSync(`${staging}${path}`);
        if (info.isCharDevice && info.rdev === 0) {
          try {
            Deno.removeSync(`${rootfs}${path}`, { recursive: true });
          } catch (error) {
            if (!(error instanceof Deno.errors.NotFound)) throw error;
          }
          Deno.removeSync(`${staging}${path}`);
          continue;
        }
        if (info.isDirectory) {
          if (isSymlink(`${rootfs}${path}`)) {
            throw new Error(`refusing to write through the symlink "${rootfs}${path}" in the new rootfs`);
          }
          if (OPAQUE_XATTRS.some((x) => getxattr(`${staging}${path}`, x) === "y")) {
            try {
              for (const old of Deno.readDirSync(`${rootfs}${path}`)) {
                Deno.removeSync(`${rootfs}${path}/${old.name}`, { recursive: true });
              }
            } catch (error) {
              if (!(error instanceof Deno.errors.NotFound)) throw error;
            }
          }
          walk(path);
        }
      }
    };
    walk("");
    await mustRun({
      cmd: "sh",
      args: [
        "-c",
        'tar --numeric-owner --xattrs --xattrs-include="*" --xattrs-exclude="trusted.overlay.*" ' +
        '--xattrs-exclude="user.overlay.*" -C "$1" -cpf - . | tar --numeric-owner --xattrs --xattrs-include="*" -C "$2" -xpf -',
        "apply",
        staging,
        rootfs,
      ],
    });
  } finally {
    Deno.removeSync(staging, { recursive: true });
  }
}
