/** Reads one extended attribute with lgetxattr(2) through FFI (no package needed). */

import { cString, libc } from "./libc.ts";

/** The value of `name` on `path` (not following symlinks), or `undefined` if it has none. */
export function getxattr(path: string, name: string): string | undefined {
  const buf = new Uint8Array(256);
  const len = Number(libc().lgetxattr(cString(path), cString(name), buf, BigInt(buf.length)));
  return len < 0 ? undefined : new TextDecoder().decode(buf.subarray(0, len));
}
