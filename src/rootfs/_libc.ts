/**
 * The few libc calls the rootfs modules need, through FFI (no fork, no package):
 * statvfs(3), mount(2), umount2(2), with errors that say what failed. Folder-internal.
 * Requires `--allow-ffi`; mount and umount2 require root (CAP_SYS_ADMIN).
 */

import { cString, lastError, libc as lib } from "../util/libc.ts";

/** A failed system call: its name, argument and the reason the kernel gave. */
export class SyscallError extends Error {
  constructor(call: string, readonly reason: string) {
    super(`${call} failed: ${reason}`);
    this.name = "SyscallError";
  }
}

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
  if (lib().statvfs(cString(path), buf) !== 0) throw new SyscallError(`statvfs "${path}"`, lastError());
  const [, frsize, , , bavail, files, , favail] = buf;
  return {
    availableBytes: Number(bavail! * frsize!),
    availableInodes: files === 0n ? undefined : Number(favail!),
    blockSize: Number(frsize!),
  };
}

/** mount(2). `data` is the file system's option string. */
export function mount(source: string, target: string, fstype: string, flags: bigint, data: string): void {
  const r = lib().mount(cString(source), cString(target), cString(fstype), flags, cString(data));
  if (r !== 0) throw new SyscallError(`mount of ${fstype} on "${target}"`, lastError());
}

/** umount2(2) with no flags: fails (EBUSY) instead of detaching a mount still in use. */
export function umount(target: string): void {
  if (lib().umount2(cString(target), 0) !== 0) throw new SyscallError(`umount "${target}"`, lastError());
}
