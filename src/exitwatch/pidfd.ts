/**
 * Learns how a container's init process ended, although ARCH is not its parent.
 *
 * Mechanism (Linux ≥ 6.15): the node's exit watcher holds a pidfd of the init process
 * (pidfd_open(2), taken by the runc wrapper at `start`, while the process surely exists, and
 * duplicated into the watcher with pidfd_getfd(2)), waits until it is readable (the process
 * exited), then asks the kernel for the exit status with the PIDFD_GET_INFO ioctl and
 * PIDFD_INFO_EXIT, which pidfs keeps for as long as a pidfd is open, even after the engine's
 * shim reaped the process.
 *
 * This module is the kernel interface only (FFI to libc): pidfds, one poll(2) over many
 * descriptors, an eventfd to wake that poll, flock(2). `daemon.ts` is the watcher.
 *
 * Limits: the exit status is unknown (and ARCH keeps the checkpoint data) when the kernel
 * lacks PIDFD_INFO_EXIT, when the process was already reaped before its pidfd was opened,
 * or when no watcher held a pidfd when it was reaped (node reboot, watcher down). Requires
 * root (pidfd_getfd) and `--allow-ffi`.
 */

import { libc as lib } from "../util/libc.ts";

/** Unified syscall numbers (x86_64 and arm64 alike since Linux 5.x). */
const SYS_PIDFD_OPEN = 434n;
const SYS_PIDFD_GETFD = 438n;
const POLLIN = 0x1;
const POLLERR = 0x8;
const POLLHUP = 0x10;
const POLLNVAL = 0x20;
const PIDFD_INFO_EXIT = 1n << 3n;
const PIDFD_INFO_SIZE = 64;
/** _IOWR(0xFF, 11, 64 bytes) */
const PIDFD_GET_INFO = (3n << 30n) | (BigInt(PIDFD_INFO_SIZE) << 16n) | (0xffn << 8n) | 11n;
const EFD_CLOEXEC = 0o2000000;
const EFD_NONBLOCK = 0o4000;
const O_RDWR = 0o2;
const O_CREAT = 0o100;
const O_CLOEXEC = 0o2000000;
const LOCK_EX = 2;
const LOCK_NB = 4;

/** How a process ended, as the engine reports it. */
export interface ExitStatus {
  /** Exit code if it exited, `128 + signal` if a signal killed it (as shells and docker show). */
  readonly code: number;
  readonly signal?: number;
}

/**
 * Decodes a wait(2) status word.
 *
 * @example
 * ```ts
 * import { decodeWaitStatus } from "./pidfd.ts";
 * if (decodeWaitStatus(9).code !== 137 || decodeWaitStatus(3 << 8).code !== 3) throw new Error();
 * ```
 */
export function decodeWaitStatus(status: number): ExitStatus {
  const signal = status & 0x7f;
  if (signal === 0) return { code: (status >> 8) & 0xff };
  return { code: 128 + signal, signal };
}

/** Opens a pidfd for `pid`, or returns `undefined` if the process is gone. The fd is close-on-exec. */
export function openPidfd(pid: number): number | undefined {
  const fd = Number(lib().syscall(SYS_PIDFD_OPEN, BigInt(pid), 0n, 0n));
  return fd >= 0 ? fd : undefined;
}

/**
 * Copies descriptor `fd` of process `pid` into this process (pidfd_getfd(2); needs
 * ptrace rights over `pid`: root). Returns the new close-on-exec fd, or `undefined`.
 */
export function copyFdOf(pid: number, fd: number): number | undefined {
  const pidfd = openPidfd(pid);
  if (pidfd === undefined) return undefined;
  try {
    const copy = Number(lib().syscall(SYS_PIDFD_GETFD, BigInt(pidfd), BigInt(fd), 0n));
    return copy >= 0 ? copy : undefined;
  } finally {
    lib().close(pidfd);
  }
}

/** Closes a descriptor this module handed out; errors are ignored. */
export function closeFd(fd: number): void {
  lib().close(fd);
}

/**
 * What `fd` of this process refers to when it is a pidfd: the pid (`-1` once the process
 * was reaped); `undefined` when `fd` is not a pidfd.
 */
export function pidOfPidfd(fd: number): number | undefined {
  try {
    const link = Deno.readLinkSync(`/proc/self/fd/${fd}`);
    if (link !== "anon_inode:[pidfd]" && !link.startsWith("pidfd:")) return undefined;
    const m = /^Pid:\s*(-?\d+)\s*$/m.exec(Deno.readTextFileSync(`/proc/self/fdinfo/${fd}`));
    return m === null ? undefined : Number(m[1]);
  } catch {
    return undefined;
  }
}

/**
 * One poll(2) over `fds` (readable, hung up or invalid all count as ready): the indices of
 * the ready ones, empty on timeout or interruption. `timeoutMs` -1 waits without limit. At
 * most one such call should be in flight per process: each occupies a thread until it returns.
 */
export async function pollReadable(fds: readonly number[], timeoutMs: number): Promise<number[]> {
  const pfds = new Uint8Array(8 * fds.length);
  const view = new DataView(pfds.buffer);
  fds.forEach((fd, i) => {
    view.setInt32(8 * i, fd, true);
    view.setInt16(8 * i + 4, POLLIN, true);
  });
  const n = await lib().poll(pfds, BigInt(fds.length), timeoutMs);
  if (n <= 0) return [];
  const mask = POLLIN | POLLERR | POLLHUP | POLLNVAL;
  return fds.flatMap((_, i) => (view.getInt16(8 * i + 6, true) & mask) !== 0 ? [i] : []);
}

/** The exit status the kernel kept for `pidfd`, or `undefined` if it has none (yet). */
export function exitStatus(pidfd: number): ExitStatus | undefined {
  const info = new Uint8Array(PIDFD_INFO_SIZE);
  const view = new DataView(info.buffer);
  view.setBigUint64(0, PIDFD_INFO_EXIT, true);
  if (lib().ioctl(pidfd, PIDFD_GET_INFO, info) !== 0) return undefined;
  if ((view.getBigUint64(0, true) & PIDFD_INFO_EXIT) === 0n) return undefined;
  return decodeWaitStatus(view.getInt32(60, true));
}

/** A counter descriptor that wakes a {@link pollReadable} when {@link wake} is called. */
export function openWakeFd(): number {
  const fd = lib().eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0) throw new Error("cannot create an eventfd");
  return fd;
}

const one = new BigUint64Array([1n]);

/** Makes `wakeFd` readable. */
export function wake(wakeFd: number): void {
  lib().write(wakeFd, new Uint8Array(one.buffer), 8n);
}

/** Makes `wakeFd` unreadable again. */
export function drainWake(wakeFd: number): void {
  lib().read(wakeFd, new Uint8Array(8), 8n);
}

/**
 * Opens (creating, 0600) `path` and takes an exclusive flock(2) on it without waiting.
 * Returns the descriptor, which holds the lock until the process ends, or `undefined` if
 * another process holds it.
 */
export function tryLockFile(path: string): number | undefined {
  const fd = lib().open(new TextEncoder().encode(path + "\0"), O_RDWR | O_CREAT | O_CLOEXEC, 0o600);
  if (fd < 0) throw new Error(`cannot open "${path}"`);
  if (lib().flock(fd, LOCK_EX | LOCK_NB) === 0) return fd;
  lib().close(fd);
  return undefined;
}
