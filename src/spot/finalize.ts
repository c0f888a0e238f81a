/**
 * The watcher's finalize action: runs ARCH itself as `arch finalize --deadline <s>` with the
 * same host configuration (`ARCH_CONFIG`), the way ARCH re-executes itself in compiled and
 * launcher form (`ARCH_LAUNCHER_ARCH`, else the executable). Its output lines go to ARCH's
 * log and to `say` (control characters escaped). A finalize that outlives its deadline by
 * {@link FINALIZE_GRACE_MS} is killed (its paused containers are then released by the pause
 * guard); that bound is clamped to a safe timer delay, so a huge deadline never kills it early.
 */

import { runCommand } from "../process/exec.ts";
import { selfArch } from "../config/host.ts";
import type { Logger } from "../log/log.ts";
import type { FinalizeAction } from "./loop.ts";
import { clampTimerMs, printable } from "./notice.ts";

/** Time a finalize run gets beyond its deadline before it is killed, milliseconds. */
export const FINALIZE_GRACE_MS = 300_000;

/**
 * How long a finalize run with `deadline` seconds may take before it is killed, milliseconds:
 * the deadline plus {@link FINALIZE_GRACE_MS}, clamped to a safe timer delay.
 *
 * @example
 * ```ts
 * import { FINALIZE_GRACE_MS, finalizeTimeoutMs } from "./finalize.ts";
 * if (finalizeTimeoutMs(100) !== 100_000 + FINALIZE_GRACE_MS) throw new Error();
 * if (finalizeTimeoutMs(30 * 86_400) !== 2 ** 31 - 1) throw new Error();
 * ```
 */
export function finalizeTimeoutMs(deadline: number): number {
  return clampTimerMs(deadline * 1000 + FINALIZE_GRACE_MS);
}

/**
 * Runs `cmd finalize --deadline <s>` with `ARCH_CONFIG=configPath`, killed after
 * {@link finalizeTimeoutMs}; resolves with its exit status (128 + n when signal n ended it).
 */
export async function runArchFinalize(
  cmd: string,
  configPath: string,
  deadline: number,
  logger: Logger | undefined,
  say: ((line: string) => void) | undefined,
): Promise<number> {
  const result = await runCommand({
    cmd: cmd,
    args: ["finalize", "--deadline", String(deadline)],
    env: { ARCH_CONFIG: configPath },
    cwd: "/",
    timeoutMs: finalizeTimeoutMs(deadline),
  });
  for (const line of [...result.stdout.split("\n"), ...result.stderr.split("\n")]) {
    if (line.trim() === "") continue;
    const safe = printable(line);
    logger?.info("finalize: " + safe, { component: "watch" });
    say?.(`finalize: ${safe}`);
  }
  return result.code; // 128 + n when a signal ended it
}

/** The default finalize action of `arch watch` (see the module doc). */
export function spawnFinalize(configPath: string, logger?: Logger, say?: (line: string) => void): FinalizeAction {
  return (deadline) => runArchFinalize(selfArch(), configPath, deadline, logger, say);
}
