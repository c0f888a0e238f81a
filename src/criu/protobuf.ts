/**
 * The protobuf varint, the one encoding ARCH reads and writes itself in CRIU's images
 * (`images.ts` reads them, `timerfd_rearm.ts` and `checkpoint/inotify_paths.ts` write them).
 * Pure; values as bigint (CRIU stores 64-bit inode numbers and times).
 */

/**
 * The varint at `at` in `buf`, and the offset after it; throws on a truncated one.
 *
 * @example
 * ```ts
 * import { encodeVarint, readVarint } from "./protobuf.ts";
 * const [v, next] = readVarint(new Uint8Array(encodeVarint(300n)), 0);
 * if (v !== 300n || next !== 2) throw new Error();
 * ```
 */
export function readVarint(buf: Uint8Array, at: number): [bigint, number] {
  let result = 0n, shift = 0n;
  for (let i = at; i < buf.length && i < at + 10; i++) {
    result |= BigInt(buf[i]! & 0x7f) << shift;
    if ((buf[i]! & 0x80) === 0) return [result, i + 1];
    shift += 7n;
  }
  throw new Error("truncated varint");
}

/** The bytes of `value` (non-negative) as a varint. */
export function encodeVarint(value: bigint): number[] {
  const out: number[] = [];
  do {
    let b = Number(value & 0x7fn);
    value >>= 7n;
    if (value > 0n) b |= 0x80;
    out.push(b);
  } while (value > 0n);
  return out;
}
