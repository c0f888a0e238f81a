/**
 * Free space of a file system, through FFI (statvfs(3)): what a writer may still use before
 * the file system is full. Requires `--allow-ffi`.
 */

import { cString, lastError, libc } from "./libc.ts";

/** What {@link statvfs} reports of a file system: space and inodes left for unprivileged writers, block size. */
export interface FsSpace {
  /** Bytes an unprivileged writer may still use (`f_bavail * f_frsize`). */
  readonly availableBytes: number;
  /** Inodes still free for unprivileged writers; `undefined` if the file system does not count them (btrfs). */
  readonly availableInodes: number | undefined;
  /** The allocation unit (`f_frsize`). */
  readonly blockSize: number;
}

/** Free space of the file system holding `path` (statvfs(3); on an overlay, that of its upper file system). */
export function statvfs(path: string): FsSpace {
  const buf = new BigUint64Array(16); // struct statvfs is 112 bytes on 64-bit Linux
  if (libc().statvfs(cString(path), buf) !== 0) throw new Error(`statvfs "${path}" failed: ${lastError()}`);
  const [, frsize, , , bavail, files, , favail] = buf;
  return {
    availableBytes: Number(bavail! * frsize!),
    availableInodes: files === 0n ? undefined : Number(favail!),
    blockSize: Number(frsize!),
  };
}
