/**
 * src/criu/timerfd_rearm.ts on `files.img` bytes built field by field as CRIU writes them: a
 * fired periodic timerfd (saved with it_value 0, CRIU #3162) is re-armed with 1 ns, and
 * nothing else changes by a byte.
 */
import { deepEqual as assertEquals } from "node:assert/strict";
import { rearmFiredTimerfds } from "../../src/criu/timerfd_rearm.ts";
import { decodeFields, imageEntries } from "../../src/criu/images.ts";

const varint = (v: number): number[] => {
  const out: number[] = [];
  do {
    let b = v & 0x7f;
    v = Math.floor(v / 128);
    if (v > 0) b |= 0x80;
    out.push(b);
  } while (v > 0);
  return out;
};
const uint = (n: number, v: number) => [...varint(n << 3), ...varint(v)];
const bytes = (n: number, b: number[]) => [...varint((n << 3) | 2), ...varint(b.length), ...b];

/** A timerfd_entry: id, flags, fown, clockid, ticks, settime_flags, vsec, vnsec, isec, insec. */
const timer = (t: { flags?: number; vsec: number; vnsec: number; isec: number; insec: number; ticks?: number }) => [
  ...uint(1, 7),
  ...uint(2, 0x80002),
  ...bytes(3, [...uint(1, 0), ...uint(2, 0), ...uint(3, 0), ...uint(4, 0), ...uint(5, 0)]),
  ...uint(4, 1),
  ...uint(5, t.ticks ?? 3),
  ...uint(6, t.flags ?? 0),
  ...uint(7, t.vsec),
  ...uint(8, t.vnsec),
  ...uint(9, t.isec),
  ...uint(10, t.insec),
];
const fileEntry = (type: number, id: number, field: number, body: number[]) => [
  ...uint(1, type),
  ...uint(2, id),
  ...bytes(field, body),
];
const image = (...entries: number[][]) =>
  new Uint8Array([
    0x19,
    0x43,
    0x56,
    0x54,
    0x2a,
    0x55,
    0x56,
    0x51, // two magics (values do not matter here)
    ...entries.flatMap((e) => [e.length & 0xff, (e.length >> 8) & 0xff, 0, 0, ...e]),
  ]);

const REG = fileEntry(1, 1, 3, [...uint(1, 1), ...bytes(3, [...new TextEncoder().encode("/tmp/x")])]);
const timerOf = (img: Uint8Array, i: number) =>
  decodeFields(decodeFields(imageEntries(img)[i]!).find((f) => f.n === 12)!.value as Uint8Array);
const value = (fields: ReturnType<typeof decodeFields>, n: number) => fields.find((f) => f.n === n)?.value;

Deno.test("a fired periodic timer (it_value 0, interval 100 ms) is re-armed with 1 ns, ticks kept", () => {
  const fired = fileEntry(17, 2, 12, timer({ vsec: 0, vnsec: 0, isec: 0, insec: 100_000_000, ticks: 5 }));
  const { image: out, rearmed } = rearmFiredTimerfds(image(REG, fired));
  assertEquals(rearmed, 1);
  const t = timerOf(out, 1);
  assertEquals([value(t, 7), value(t, 8), value(t, 10), value(t, 5)], [0, 1, 100_000_000, 5]);
  assertEquals(imageEntries(out)[0], new Uint8Array(REG), "the other entries are kept byte for byte");
  assertEquals(out.subarray(0, 8), image().subarray(0, 8));
});

Deno.test("timers that are not a fired relative periodic one are left as CRIU saved them", () => {
  for (
    const t of [
      { vsec: 0, vnsec: 40_000_000, isec: 0, insec: 100_000_000 }, // armed: 40 ms left
      { vsec: 0, vnsec: 0, isec: 0, insec: 0 }, // disarmed by the job
      { vsec: 0, vnsec: 0, isec: 1, insec: 0, ticks: 0 }, // disarmed by the job, interval kept: no expiry pending
      { vsec: 2, vnsec: 0, isec: 1, insec: 0 }, // whole seconds left
      { vsec: 0, vnsec: 0, isec: 1, insec: 0, flags: 1 }, // TFD_TIMER_ABSTIME
    ]
  ) {
    const img = image(REG, fileEntry(17, 2, 12, timer(t)));
    const { image: out, rearmed } = rearmFiredTimerfds(img);
    assertEquals([rearmed, out], [0, img], JSON.stringify(t));
  }
});

Deno.test("several entries, several timers: each fired one re-armed, the image still parses", () => {
  const fired = (id: number) => fileEntry(17, id, 12, timer({ vsec: 0, vnsec: 0, isec: 1, insec: 0 }));
  const armed = fileEntry(17, 9, 12, timer({ vsec: 0, vnsec: 5, isec: 1, insec: 0 }));
  const { image: out, rearmed } = rearmFiredTimerfds(image(fired(2), REG, armed, fired(3)));
  assertEquals(rearmed, 2);
  assertEquals(imageEntries(out).length, 4);
  assertEquals([0, 2, 3].map((i) => value(timerOf(out, i), 8)), [1, 5, 1]);
});
