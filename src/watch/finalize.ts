/**
 * The watcher's finalize action: runs ARCH itself as `arch finalize --deadline <s>` with the
 * same host configuration (`ARCH_CONFIG`), the way ARCH re-executes itself in compiled and
 * launcher form (`ARCH_LAUNCHER_ARCH`, else the executable). Its output lines go to ARCH's
 * log and to `say`. A finalize that outlives its deadline by {@link FINALIZE_GRACE_MS} is
 * killed (its paused containers are then released by the pause guard).
 */

import { runCommand } from "../process/exec.ts";
import { selfArch } from "../config/host.ts";
import type { Logger } from "../log/log.ts";
import type { FinalizeAction } from "./loop.ts";

/** Time a finalize run gets beyond its deadline before it is killed, milliseconds. */
export const FINALIZE_GRACE_MS = 300_000;

/** Runs `cmd finalize --deadline <s>` with `ARCH_CONFIG=configPath`; resolves with its exit status. */
async function runArchFinalize(
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
    timeoutMs: deadline * 1000 + FINALIZE_GRACE_MS,
  });
  for (const line of [...result.stdout.split("\n"), ...result.stderr.split("\n")]) {
    if (line.trim() === "") continue;
    logger?.info("finalize: " + line, { component: "watch" });
    say?.(`finalize: ${line}`);
  }
  return result.code; // 128 + n when a signal ended it
}

/** The default finalize action of `arch watch` (see the module doc). */
export function spawnFinalize(configPath: string, logger?: Logger, say?: (line: string) => void): FinalizeAction {
  return (deadline) => runArchFinalize(selfArch(), configPath, deadline, logger, say);
}
