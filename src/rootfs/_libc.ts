/**
 * The few libc calls the rootfs modules need, through FFI (no fork, no package):
 * mount(2), umount2(2), with errors that say what failed. Folder-internal.
 * Requires `--allow-ffi`; mount and umount2 require root (CAP_SYS_ADMIN).
 */

import { ArchError } from "../util/errors.ts";
import { cString, lastError, libc as lib } from "../util/libc.ts";

/** A failed system call: its name, argument and the reason the kernel gave. */
export class SyscallError extends ArchError {
  constructor(call: string, readonly reason: string) {
    super(`${call} failed: ${reason}`, "syscall");
  }
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
