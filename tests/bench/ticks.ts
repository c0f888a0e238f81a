/**
 * The downtime bench's reading of the workload's timestamped ticks (`workload --timestamps 1`:
 * `tick <n> sum <s> mem <MiB> at <seconds>.<nanoseconds>`, CLOCK_REALTIME read as the sleep
 * before that tick ended). Pure: no process, no file; lines without a timestamp are skipped,
 * so it reads any log of the workload.
 */

/** The tick interval of the downtime bench: the first tick after a restore comes at most this long after the resume. */
export const DOWNTIME_INTERVAL_MS = 10;

/** One timestamped tick: its number and its wall-clock time in milliseconds since the epoch. */
export interface TimedTick {
  readonly tick: number;
  readonly atMs: number;
}

/** Every timestamped tick line of `logs`, in order. */
export function timedTicks(logs: string): TimedTick[] {
  const out: TimedTick[] = [];
  for (const line of logs.split("\n")) {
    const m = /^tick (\d+) .* at (\d+)\.(\d{9})\s*$/.exec(line);
    if (m) out.push({ tick: Number(m[1]), atMs: Number(m[2]) * 1000 + Number(m[3]) / 1e6 });
  }
  return out;
}

/** The median of `xs` (NaN when empty). */
export function median(xs: readonly number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}
