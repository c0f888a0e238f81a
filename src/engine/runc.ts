/**
 * Builds the runc command lines ARCH runs itself (pure) and runs them through the one
 * process module. Every call carries the container's own `--root`.
 */

import { type CommandResult, type CommandSpec, runCommand } from "../process/exec.ts";

export interface RuncTarget {
  readonly runc: string;
  readonly root: string;
  readonly id: string;
}

const base = (t: RuncTarget) => ["--root", t.root];

export const runcArgs = {
  pause: (t: RuncTarget) => [...base(t), "pause", t.id],
  resume: (t: RuncTarget) => [...base(t), "resume", t.id],
  kill: (t: RuncTarget, signal = "KILL") => [...base(t), "kill", t.id, signal],
  state: (t: RuncTarget) => [...base(t), "state", t.id],
  checkpoint: (t: RuncTarget, imagePath: string, workPath: string) => [
    ...base(t),
    "checkpoint",
    "--leave-running",
    "--image-path",
    imagePath,
    "--work-path",
    workPath,
    t.id,
  ],
};

/** Runs runc with `args`; the result carries runc's stderr for error messages. */
export function runc(t: RuncTarget, args: string[], extra: Partial<CommandSpec> = {}): Promise<CommandResult> {
  return runCommand({ cmd: t.runc, args, ...extra });
}

/**
 * The container's status from `runc state`: `gone` if runc says it does not exist,
 * `undefined` if runc could not tell (an error, a timeout).
 */
export async function runcState(t: RuncTarget, timeoutMs?: number): Promise<string | undefined> {
  const r = await runc(t, runcArgs.state(t), timeoutMs === undefined ? {} : { timeoutMs });
  if (r.code !== 0) return /does not exist|not found|no such/i.test(r.stderr) ? "gone" : undefined;
  try {
    return (JSON.parse(r.stdout) as { status?: string }).status;
  } catch {
    return undefined;
  }
}
