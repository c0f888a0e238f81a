/**
 * Learns how a container's init process ended, although ARCH is not its parent.
 *
 * Mechanism (Linux ≥ 6.15): a watcher holds a pidfd of the init process (pidfd_open(2),
 * taken at `start`, while the process surely exists), waits until it is readable (the
 * process exited), then asks the kernel for the exit status with the PIDFD_GET_INFO ioctl
 * and PIDFD_INFO_EXIT, which pidfs keeps for as long as a pidfd is open, even after the
 * engine's shim reaped the process.
 *
 * Limits: the exit status is unknown (and ARCH keeps the checkpoint data) when the kernel
 * lacks PIDFD_INFO_EXIT, when the process was already reaped before the watcher opened
 * its pidfd, or when the watcher was killed (node reboot). Requires root and `--allow-ffi`.
 */

/** pidfd_open(2): 434 on x86_64 and arm64 alike (unified syscall numbers since 5.x). */
const SYS_PIDFD_OPEN = 434n;
const POLLIN = 1;
const PIDFD_INFO_EXIT = 1n << 3n;
const PIDFD_INFO_SIZE = 64;
/** _IOWR(0xFF, 11, 64 bytes) */
const PIDFD_GET_INFO = (3n << 30n) | (BigInt(PIDFD_INFO_SIZE) << 16n) | (0xffn << 8n) | 11n;

const symbols = {
  syscall: { parameters: ["i64", "i64", "i64"], result: "i64" },
  poll: { parameters: ["buffer", "u64", "i32"], result: "i32", nonblocking: true },
  ioctl: { parameters: ["i32", "u64", "buffer"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
} as const;

let libc: Deno.DynamicLibrary<typeof symbols>["symbols"] | undefined;
const lib = () => (libc ??= Deno.dlopen("libc.so.6", symbols).symbols);

/** How a process ended, as the engine reports it. */
export interface ExitStatus {
  /** Exit code if it exited, `128 + signal` if a signal killed it (as shells and docker show). */
  readonly code: number;
  readonly signal?: number;
}

/** Decodes a wait(2) status word. */
export function decodeWaitStatus(status: number): ExitStatus {
  const signal = status & 0x7f;
  if (signal === 0) return { code: (status >> 8) & 0xff };
  return { code: 128 + signal, signal };
}

/** Opens a pidfd for `pid`, or returns `undefined` if the process is gone. */
export function openPidfd(pid: number): number | undefined {
  const fd = Number(lib().syscall(SYS_PIDFD_OPEN, BigInt(pid), 0n));
  return fd >= 0 ? fd : undefined;
}

/** Resolves once the process behind `pidfd` has exited. */
export async function waitForExit(pidfd: number): Promise<void> {
  const pfd = new Uint8Array(8);
  const view = new DataView(pfd.buffer);
  view.setInt32(0, pidfd, true);
  view.setInt16(4, POLLIN, true);
  while (true) {
    const n = await lib().poll(pfd, 1n, -1);
    if (n > 0) return;
  }
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

/** Waits for `pid` to exit and returns its status; `undefined` if it cannot be known. */
export async function watchExit(pid: number, pidfd = openPidfd(pid)): Promise<ExitStatus | undefined> {
  if (pidfd === undefined) return undefined;
  try {
    await waitForExit(pidfd);
    // pidfs records the status when the process is reaped, just after it became readable.
    for (let i = 0; i < 100; i++) {
      const status = exitStatus(pidfd);
      if (status !== undefined) return status;
      await new Promise((r) => setTimeout(r, 50));
    }
    return undefined;
  } finally {
    lib().close(pidfd);
  }
}
