/**
 * Periodic work alongside a running operation (fsyncs while CRIU writes, size checks while a
 * dump grows): `tick` runs every `intervalMs` while `until` is pending, never after it
 * settled, one call at a time.
 */

/**
 * Calls `tick` every `intervalMs` until `until` settles or `tick` answers `true` (stop).
 *
 * @example
 * ```ts
 * import { whilePending } from "./while_pending.ts";
 * let ticks = 0;
 * await whilePending(new Promise((r) => setTimeout(r, 55)), 10, () => void ticks++);
 * if (ticks < 2) throw new Error(`${ticks}`);
 * ```
 */
export async function whilePending(
  until: Promise<unknown>,
  intervalMs: number,
  tick: () => Promise<boolean | void> | boolean | void,
): Promise<void> {
  let done = false;
  const finished = until.then(() => (done = true), () => (done = true));
  while (!done) {
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([finished, new Promise((r) => (timer = setTimeout(r, intervalMs)))]);
    clearTimeout(timer);
    if (done || (await tick()) === true) return;
  }
}
