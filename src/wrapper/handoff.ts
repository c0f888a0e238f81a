/**
 * Hands the process over to the real runc.
 *
 * Guarantees: on success this function never returns: `execv(2)` replaces the Deno process
 * with runc, so runc keeps this process's pid, file descriptors (the engine's stdio, pipes,
 * console socket), signal mask and parent, and its exit status is what the engine sees.
 * Before the exec it undoes what the Deno runtime changed in the process that runc would
 * inherit: SIGPIPE back to its default action and the open-files soft limit back to the
 * value the launcher saw. Requires `--allow-ffi` and `--allow-env`.
 *
 * If `execv` itself fails (runc missing, not executable) it returns the errno.
 */

import { cString, errno, type Libc, libc } from "../util/libc.ts";

/**
 * Variables the launcher sets for Deno and that the engine might have set too: the launcher
 * keeps the engine's value in `ARCH_SAVED_<name>`, and the hand-off puts it back (or removes
 * the variable if the engine had not set it), so runc sees the engine's environment.
 */
export const DENO_ENV = ["DENO_DIR", "DENO_NO_UPDATE_CHECK", "DENO_NO_PROMPT"] as const;

/** Environment variables the launcher sets for Deno itself; runc must not see them. */
export const LAUNCHER_ENV = [
  "ARCH_LAUNCHER_NOFILE",
  "ARCH_LAUNCHER_SELF",
  "ARCH_LAUNCHER_ARCH",
  "DENO_DIR",
  "DENO_NO_UPDATE_CHECK",
  "DENO_NO_PROMPT",
] as const;

const RLIMIT_NOFILE = 7;
const SIGPIPE = 13;

/** Builds a NULL-terminated `char *[]`; the returned strings must stay referenced. */
function cStringArray(items: readonly string[]): { array: BigUint64Array<ArrayBuffer>; keep: Uint8Array[] } {
  const keep = items.map(cString);
  const array = new BigUint64Array(items.length + 1);
  keep.forEach((s, i) => {
    array[i] = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(s)));
  });
  return { array, keep };
}

/** Restores the open-files soft limit the launcher recorded (Deno raises it at start). */
function restoreNofile(lib: Libc): void {
  const recorded = Deno.env.get("ARCH_LAUNCHER_NOFILE");
  if (recorded === undefined || !/^(\d+|unlimited)$/.test(recorded)) return;
  const limits = new BigUint64Array(2);
  if (lib.getrlimit(RLIMIT_NOFILE, limits) !== 0) return;
  const soft = recorded === "unlimited" ? 0xffff_ffff_ffff_ffffn : BigInt(recorded);
  if (soft <= limits[1]!) {
    limits[0] = soft;
    lib.setrlimit(RLIMIT_NOFILE, limits);
  }
}

/**
 * Replaces the current process with `path`, argv[0] `argv0`, and the current environment
 * minus {@link LAUNCHER_ENV}. Returns only on failure, with the errno.
 */
export function execRunc(path: string, argv0: string, args: readonly string[]): number {
  const lib = libc();
  restoreNofile(lib);
  for (const name of LAUNCHER_ENV) Deno.env.delete(name);
  for (const name of DENO_ENV) {
    const saved = Deno.env.get(`ARCH_SAVED_${name}`);
    if (saved !== undefined) Deno.env.set(name, saved);
    Deno.env.delete(`ARCH_SAVED_${name}`);
  }
  lib.signal(SIGPIPE, 0n); // SIG_DFL
  const file = cString(path);
  const argv = cStringArray([argv0, ...args]);
  lib.execv(file, argv.array);
  return errno();
}
