/**
 * Runs the runc command lines ARCH builds (`runc/client.ts`) through the one process
 * module, and reads a container's status.
 */

import { type CommandResult, type CommandSpec, runCommand } from "../process/exec.ts";
import { runcArgv, type RuncTarget } from "./client.ts";

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

/**
 * The status of each of `targets` (same runc binary), from one `runc list` per distinct set of
 * global options (`--root` …) instead of one `runc state` each: `gone` for a container runc
 * does not list. A root whose list fails falls back to `runc state` for its containers.
 */
export async function runcStates(targets: readonly RuncTarget[], timeoutMs: number): Promise<(string | undefined)[]> {
  const groups = new Map<string, number[]>();
  targets.forEach((t, i) => {
    const key = JSON.stringify(t.global);
    groups.set(key, [...(groups.get(key) ?? []), i]);
  });
  const out: (string | undefined)[] = targets.map(() => undefined);
  await Promise.all([...groups.values()].map(async (indexes) => {
    const first = targets[indexes[0]!]!;
    const r = await runc(first, runcArgv.list(first), { timeoutMs });
    let listed: Map<string, string | undefined> | undefined;
    try {
      if (r.code === 0) {
        const parsed = JSON.parse(r.stdout.trim() || "null") as { id?: string; status?: string }[] | null;
        listed = new Map((parsed ?? []).map((c) => [String(c.id), c.status]));
      }
    } catch { /* fall back below */ }
    for (const i of indexes) {
      out[i] = listed !== undefined
        ? (listed.has(targets[i]!.id) ? listed.get(targets[i]!.id) : "gone")
        : await runcState(targets[i]!, timeoutMs);
    }
  }));
  return out;
}
