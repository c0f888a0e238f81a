/**
 * Paths beneath a checkpoint root, resolved without following symlinks.
 *
 * ARCH runs as root; a checkpoint root may be a directory a tenant can reach (a volume).
 * So a root must be a real directory (not a symlink), owned by root and not writable by
 * group or others, and every directory ARCH creates or enters beneath it is checked one
 * component at a time with `lstat`: a real directory, owned by root, not writable by group
 * or others. Then nothing but root can plant a symlink on the way, and a symlink found
 * there is refused instead of followed. Directories ARCH creates are 0700.
 */

import { ArchError } from "../util/errors.ts";
import { isSafeSegment } from "../util/paths.ts";

/** Why `info` is not a directory only root can change, or `undefined`. */
function unsafeDir(path: string, info: Deno.FileInfo): string | undefined {
  if (info.isSymlink) return `"${path}" is a symbolic link`;
  if (!info.isDirectory) return `"${path}" is not a directory`;
  if (info.uid !== 0) return `"${path}" is owned by uid ${info.uid}, not root`;
  if (info.mode !== null && (info.mode & 0o022) !== 0) {
    return `"${path}" is writable by group or others (mode ${(info.mode & 0o777).toString(8)})`;
  }
  return undefined;
}

/** Why `root` cannot be a checkpoint root (see module doc), or `undefined`. */
export function rootProblem(root: string): string | undefined {
  let info: Deno.FileInfo;
  try {
    info = Deno.lstatSync(root);
  } catch {
    return `"${root}" does not exist`;
  }
  return unsafeDir(root, info);
}

/**
 * A checkpoint root, or a path beneath it, that ARCH refuses: a symlink, not a directory, a directory others can
 * change, or an unsafe path element.
 */
export class UnsafePathError extends ArchError {
  constructor(message: string) {
    super(message, "unsafe-path");
  }
}

/**
 * `root/segments...`, each component checked (and created 0700 if `create`). Returns the
 * path, or `undefined` if a component is missing and `create` is false. Throws
 * {@link UnsafePathError} on a symlink, a non-directory, or a directory others could change.
 */
export function beneath(root: string, segments: readonly string[], create: boolean): string | undefined {
  const problem = rootProblem(root);
  if (problem !== undefined) throw new UnsafePathError(`checkpoint root ${problem}`);
  let path = root;
  for (const segment of segments) {
    if (!isSafeSegment(segment)) throw new UnsafePathError(`unsafe path element "${segment}"`);
    path = `${path}/${segment}`;
    let info: Deno.FileInfo;
    try {
      info = Deno.lstatSync(path);
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
      if (!create) return undefined;
      try {
        Deno.mkdirSync(path, { mode: 0o700 }); // not recursive: never through anything unchecked
      } catch (e) {
        if (!(e instanceof Deno.errors.AlreadyExists)) throw e;
      }
      info = Deno.lstatSync(path);
    }
    const why = unsafeDir(path, info);
    if (why !== undefined) throw new UnsafePathError(why);
  }
  return path;
}
