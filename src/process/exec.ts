/**
 * The one place ARCH starts child processes (the hand-off to runc by `execv` lives in
 * `wrapper/handoff.ts`). Callers describe a command; tests can swap the runner for a recorder.
 *
 * Guarantees: arguments go to the program as an argv array, never through a shell; a
 * failure carries the argv, exit status and captured stderr.
 */

import { ArchError } from "../util/errors.ts";

/** A command to run: the program, its argv (never through a shell) and how to run it. */
export interface CommandSpec {
  readonly cmd: string;
  readonly args: readonly string[];
  /** `inherit` passes this process's stdio through (the runc wrapper must). Default `piped`. */
  readonly stdio?: "inherit" | "piped" | "null";
  readonly cwd?: string;
  readonly env?: Readonly<Record<string, string>>;
  readonly stdin?: string;
  /** Kill the process (SIGKILL) after this many milliseconds; the result then has signal SIGKILL. */
  readonly timeoutMs?: number;
}

/** How a command ended; `stdout` and `stderr` are empty unless the output was `piped` (the default). */
export interface CommandResult {
  readonly code: number;
  readonly signal: Deno.Signal | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** A command that exited non-zero. */
export class CommandError extends ArchError {
  constructor(readonly spec: CommandSpec, readonly result: CommandResult) {
    const tail = result.stderr.trim().split("\n").slice(-3).join(" | ");
    super(`${spec.cmd} ${spec.args.join(" ")} exited with ${result.code}${tail ? `: ${tail}` : ""}`, "command-failed");
  }
}

/** Runs a command to completion: {@link runCommand}, or a recorder in tests. */
export type Runner = (spec: CommandSpec) => Promise<CommandResult>;

const decoder = new TextDecoder();

/** Runs a command to completion. */
export const runCommand: Runner = async (spec) => {
  const stdio = spec.stdio ?? "piped";
  const child = new Deno.Command(spec.cmd, {
    args: [...spec.args],
    stdin: spec.stdin !== undefined ? "piped" : stdio === "inherit" ? "inherit" : "null",
    stdout: stdio,
    stderr: stdio,
    ...(spec.cwd !== undefined ? { cwd: spec.cwd } : {}),
    ...(spec.env !== undefined ? { env: { ...spec.env } } : {}),
  }).spawn();
  const timer = spec.timeoutMs === undefined ? undefined : setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
  }, spec.timeoutMs);
  try {
    return await finish(child, spec, stdio);
  } finally {
    clearTimeout(timer);
  }
};

async function finish(
  child: Deno.ChildProcess,
  spec: CommandSpec,
  stdio: "inherit" | "piped" | "null",
): Promise<CommandResult> {
  if (spec.stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(spec.stdin));
    await writer.close();
  }
  if (stdio !== "piped") {
    const status = await child.status;
    return { code: status.code, signal: status.signal, stdout: "", stderr: "" };
  }
  const out = await child.output();
  return { code: out.code, signal: out.signal, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
}

/** Runs a command and throws {@link CommandError} unless it exits 0. */
export async function mustRun(spec: CommandSpec, runner: Runner = runCommand): Promise<CommandResult> {
  const result = await runner(spec);
  if (result.code !== 0) throw new CommandError(spec, result);
  return result;
}
