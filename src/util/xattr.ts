/** Reads one extended attribute with lgetxattr(2) through FFI (no package needed). */

let lib:
  | Deno.DynamicLibrary<{ lgetxattr: { parameters: ["buffer", "buffer", "buffer", "usize"]; result: "isize" } }>
  | undefined;

/** The value of `name` on `path` (not following symlinks), or `undefined` if it has none. */
export function getxattr(path: string, name: string): string | undefined {
  lib ??= Deno.dlopen("libc.so.6", {
    lgetxattr: { parameters: ["buffer", "buffer", "buffer", "usize"], result: "isize" },
  });
  const enc = new TextEncoder();
  const buf = new Uint8Array(256);
  const n = lib.symbols.lgetxattr(enc.encode(path + "\0"), enc.encode(name + "\0"), buf, BigInt(buf.length));
  const len = Number(n);
  return len < 0 ? undefined : new TextDecoder().decode(buf.subarray(0, len));
}
