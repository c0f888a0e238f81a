/**
 * Works around a CRIU defect (checkpoint-restore/criu#3162): a periodic timerfd whose timer
 * fired but was not read yet is dumped with `it_value` 0 (CRIU reads the time left from
 * /proc/<pid>/fdinfo, where an expired timer shows 0), and restored with
 * `timerfd_settime(it_value = 0)`, which disarms it: the restored job waits on a timer that
 * never fires again. ARCH pauses a container before CRIU dumps it, so every periodic timer
 * that fires during the pause comes back off.
 *
 * The fix is applied to the dumped images before the checkpoint is hashed and signed: a
 * relative periodic timer (`it_interval` > 0, no `TFD_TIMER_ABSTIME`) saved with `it_value`
 * 0 and expirations pending (`ticks` > 0: it fired; a timer the job disarmed has none) gets
 * `it_value` 1 ns, so it fires at once after the restore (it was overdue) and then
 * every interval, as before; its expiry count (`ticks`) is kept as CRIU saved it.
 *
 * Format (CRIU `images/fdinfo.proto`, `images/timerfd.proto`): `files.img` holds
 * `file_entry` messages; a timerfd's is field 12 (`tfd`), a `timerfd_entry` with
 * `settime_flags` = 6, `vsec` = 7, `vnsec` = 8, `isec` = 9, `insec` = 10. Every other byte is
 * kept as it was.
 */

import { readRegularFile } from "../util/dirfd.ts";
import { encodeVarint, readVarint } from "./protobuf.ts";

/** Largest `files.img` read (one entry of some 100 bytes per open file of the job). */
const MAX_FILES_IMAGE = 256 << 20;

/** One field of a protobuf message, with where its bytes are. */
interface Span {
  readonly n: number;
  readonly wire: number;
  /** The whole field: tag through value. */
  readonly start: number;
  readonly end: number;
  /** A varint's value, or a length-delimited field's payload start. */
  readonly value: bigint;
  readonly payload: number;
}

function spans(buf: Uint8Array): Span[] {
  const out: Span[] = [];
  let at = 0;
  while (at < buf.length) {
    const start = at;
    const [tag, afterTag] = readVarint(buf, at);
    const n = Number(tag >> 3n), wire = Number(tag & 7n);
    if (wire === 0) {
      const [value, end] = readVarint(buf, afterTag);
      out.push({ n, wire, start, end, value, payload: afterTag });
      at = end;
    } else if (wire === 2) {
      const [len, payload] = readVarint(buf, afterTag);
      const end = payload + Number(len);
      if (end > buf.length) throw new Error("truncated field");
      out.push({ n, wire, start, end, value: len, payload });
      at = end;
    } else if (wire === 1 || wire === 5) {
      const end = afterTag + (wire === 1 ? 8 : 4);
      out.push({ n, wire, start, end, value: 0n, payload: afterTag });
      at = end;
    } else {
      throw new Error(`unsupported wire type ${wire}`);
    }
  }
  return out;
}

const concat = (parts: readonly (Uint8Array | number[])[]): Uint8Array => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
};

const TFD_TIMER_ABSTIME = 1n;

/** The `timerfd_entry` with a fired periodic timer re-armed, or `undefined` when it needs nothing. */
function rearmedTimer(entry: Uint8Array): Uint8Array | undefined {
  const fields = spans(entry);
  const value = (n: number) => fields.find((f) => f.n === n && f.wire === 0)?.value;
  const [ticks, flags, vsec, vnsec, isec, insec] = [5, 6, 7, 8, 9, 10].map(value);
  const periodic = (isec ?? 0n) > 0n || (insec ?? 0n) > 0n;
  // A job that disarmed its timer (it_value 0) keeps the interval too, but has no expiry pending.
  const fired = (ticks ?? 0n) > 0n;
  if (!periodic || !fired || vsec !== 0n || vnsec !== 0n || ((flags ?? 0n) & TFD_TIMER_ABSTIME) !== 0n) {
    return undefined;
  }
  return concat(
    fields.map((f) => f.n === 8 && f.wire === 0 ? [...encodeVarint(8n << 3n), 1] : entry.subarray(f.start, f.end)),
  );
}

/**
 * `files.img`'s bytes with every fired periodic timerfd re-armed (see the module doc), and
 * how many were; the same bytes when none needed it.
 */
export function rearmFiredTimerfds(image: Uint8Array): { image: Uint8Array; rearmed: number } {
  const view = new DataView(image.buffer, image.byteOffset, image.byteLength);
  const parts: (Uint8Array | number[])[] = [image.subarray(0, 8)]; // the two magics
  let at = 8, rearmed = 0;
  while (at + 4 <= image.length) {
    const len = view.getUint32(at, true);
    const entry = image.subarray(at + 4, at + 4 + len);
    if (entry.length !== len) throw new Error("truncated entry");
    let next: Uint8Array = entry;
    const fields = spans(entry);
    const tfd = fields.find((f) => f.n === 12 && f.wire === 2);
    const timer = tfd === undefined ? undefined : rearmedTimer(entry.subarray(tfd.payload, tfd.end));
    if (tfd !== undefined && timer !== undefined) {
      next = concat(
        fields.map((f) =>
          f === tfd
            ? [...encodeVarint((12n << 3n) | 2n), ...encodeVarint(BigInt(timer.length)), ...timer]
            : entry.subarray(f.start, f.end)
        ),
      );
      rearmed++;
    }
    const header = new Uint8Array(4);
    new DataView(header.buffer).setUint32(0, next.length, true);
    parts.push(header, next);
    at += 4 + len;
  }
  if (at !== image.length) throw new Error("trailing bytes after the last entry");
  return rearmed === 0 ? { image, rearmed } : { image: concat(parts), rearmed };
}

/** Applies {@link rearmFiredTimerfds} to `<imageDir>/files.img` in place (atomically); returns how many it re-armed. */
export function rearmTimerfdsIn(imageDir: string): number {
  const path = `${imageDir}/files.img`;
  let bytes: Uint8Array;
  try {
    bytes = readRegularFile(path, MAX_FILES_IMAGE);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return 0; // no file descriptors dumped
    throw error;
  }
  const { image, rearmed } = rearmFiredTimerfds(bytes);
  if (rearmed === 0) return 0;
  const tmp = `${path}.arch-${Deno.pid}`;
  Deno.writeFileSync(tmp, image, { mode: 0o600 });
  Deno.renameSync(tmp, path);
  return rearmed;
}
