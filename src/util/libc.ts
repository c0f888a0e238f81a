/**
 * The C library, opened once per process through FFI (no fork, no package): every libc
 * function ARCH calls is declared here, so there is one `dlopen` and one place to read what
 * ARCH asks of the kernel. Opening costs one `dlopen` on first use (the runc wrapper's
 * pass-through uses `execv` only). Requires `--allow-ffi`.
 */

const symbols = {
  // process hand-off (wrapper/handoff.ts)
  execv: { parameters: ["buffer", "buffer"], result: "i32" },
  signal: { parameters: ["i32", "usize"], result: "usize" },
  getrlimit: { parameters: ["i32", "buffer"], result: "i32" },
  setrlimit: { parameters: ["i32", "buffer"], result: "i32" },
  // file systems (rootfs/, store/)
  statvfs: { parameters: ["buffer", "buffer"], result: "i32" },
  mount: { parameters: ["buffer", "buffer", "buffer", "u64", "buffer"], result: "i32" },
  umount2: { parameters: ["buffer", "i32"], result: "i32" },
  lgetxattr: { parameters: ["buffer", "buffer", "buffer", "usize"], result: "isize" },
  // pidfds and the exit watcher (exitwatch/pidfd.ts)
  syscall: { parameters: ["i64", "i64", "i64", "i64"], result: "i64" },
  /** Blocks a thread of Deno's pool until a descriptor is ready: one call at a time, never one per pidfd. */
  poll: { parameters: ["buffer", "u64", "i32"], result: "i32", nonblocking: true },
  ioctl: { parameters: ["i32", "u64", "buffer"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  eventfd: { parameters: ["u32", "i32"], result: "i32" },
  read: { parameters: ["i32", "buffer", "u64"], result: "i64" },
  write: { parameters: ["i32", "buffer", "u64"], result: "i64" },
  open: { parameters: ["buffer", "i32", "u32"], result: "i32" },
  // descriptor-relative paths (util/dirfd.ts)
  openat: { parameters: ["i32", "buffer", "i32", "u32"], result: "i32" },
  unlinkat: { parameters: ["i32", "buffer", "i32"], result: "i32" },
  renameat: { parameters: ["i32", "buffer", "i32", "buffer"], result: "i32" },
  /**
   * openat2(2), getdents64(2) and fstat(2) as raw system calls: glibc wraps neither of the first
   * two, and exports `fstat` only since 2.33 (one missing symbol would fail this whole `dlopen`,
   * the runc wrapper's pass-through included).
   */
  openat2: { name: "syscall", parameters: ["i64", "i64", "buffer", "buffer", "u64"], result: "i64" },
  syscallFdBuffer: { name: "syscall", parameters: ["i64", "i64", "buffer", "u64"], result: "i64" },
  flock: { parameters: ["i32", "i32"], result: "i32" },
  // errors
  __errno_location: { parameters: [], result: "pointer" },
  strerror: { parameters: ["i32"], result: "pointer" },
} as const;

/** The libc functions declared here, as `Deno.dlopen` binds them (see {@link libc}). */
export type Libc = Deno.DynamicLibrary<typeof symbols>["symbols"];

let opened: Libc | undefined;

/** The process's libc handle, opened on first use. */
export function libc(): Libc {
  opened ??= Deno.dlopen("libc.so.6", symbols).symbols;
  return opened;
}

const encoder = new TextEncoder();

/** `s` as a NUL-terminated C string. */
export function cString(s: string): Uint8Array<ArrayBuffer> {
  const bytes = new Uint8Array(encoder.encode(s).length + 1);
  encoder.encodeInto(s, bytes);
  return bytes;
}

/** The errno of the last failed libc call on this thread. */
export function errno(): number {
  return new Deno.UnsafePointerView(libc().__errno_location()!).getInt32();
}

/** The last failed call's errno as `Device or resource busy (errno 16)`-like text. */
export function lastError(): string {
  const code = errno();
  const text = libc().strerror(code);
  return text === null ? `errno ${code}` : `${Deno.UnsafePointerView.getCString(text)} (errno ${code})`;
}
