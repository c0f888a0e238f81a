/**
 * Runs the runc command lines ARCH builds (`runc/command.ts`) through the one process
 * module, and reads a container's status.
 */

import { type CommandResult, type CommandSpec, runCommand } from "../process/exec.ts";
import { runcArgv, type RuncTarget } from "../runc/command.ts";

export { runcArgv, type RuncTarget };

/** Runs runc with `args`; the result carries runc's stderr for error messages. */
export function runc(t: RuncTarget, args: string[], extra: Partial<CommandSpec> = {}): Promise<CommandResult> {
  return runCommand({ cmd: t.runc, args, ...extra });
}

/**
 * The container's status from `runc state`: `gone` if runc says it does not exist,
 * `undefined` if runc could not tell (an error, a timeout).
 */
export async function runcState(t: RuncTarget, timeoutMs?: number): Promise<string | undefined> {
  const r = await runc(t, runcArgv.state(t), timeoutMs === undefined ? {} : { timeoutMs });
  if (r.code !== 0) return /does not exist|not found|no such/i.test(r.stderr) ? "gone" : undefined;
  try {
    return (JSON.parse(r.stdout) as { status?: string }).status;
  } catch {
    return undefined;
  }
}
