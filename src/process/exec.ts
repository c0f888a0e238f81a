/**
 * The one place ARCH starts child processes (the hand-off to runc by `execv` lives in
 * `runc/handoff.ts`). Callers describe a command; tests can swap the runner for a recorder.
 *
 * Guarantees: arguments go to the program as an argv array, never through a shell; a
 * failure carries the argv, exit status and captured stderr.
 */

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
  /** Kill the process (SIGKILL) when this signal aborts (a size limit reached while it writes). */
  readonly signal?: AbortSignal;
}

/** How a command ended; `stdout` and `stderr` are empty unless the output was `piped` (the default). */
export interface CommandResult {
  readonly code: number;
  readonly signal: Deno.Signal | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** A command that exited non-zero. */
export class CommandError extends Error {
  constructor(readonly spec: CommandSpec, readonly result: CommandResult) {
    const tail = result.stderr.trim().split("\n").slice(-3).join(" | ");
    super(`${spec.cmd} ${spec.args.join(" ")} exited with ${result.code}${tail ? `: ${tail}` : ""}`);
    this.name = "CommandError";
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
  // The process and what it started (runc's `criu swrk` child has no parent-death signal: killing
  // runc alone leaves CRIU writing images).
  const kill = () => killTree(child);
  const timer = spec.timeoutMs === undefined ? undefined : setTimeout(kill, spec.timeoutMs);
  spec.signal?.addEventListener("abort", kill);
  if (spec.signal?.aborted) kill();
  try {
    return await finish(child, spec, stdio);
  } finally {
    clearTimeout(timer);
    spec.signal?.removeEventListener("abort", kill);
  }
};

/** The pids below `pid` (from `/proc/<pid>/task/<tid>/children`), parents before their children. */
export function descendants(pid: number): number[] {
  const out: number[] = [];
  const queue = [pid];
  while (queue.length > 0) {
    const parent = queue.shift()!;
    let tasks: Deno.DirEntry[];
    try {
      tasks = [...Deno.readDirSync(`/proc/${parent}/task`)];
    } catch {
      continue; // gone
    }
    for (const task of tasks) {
      let children: string;
      try {
        children = Deno.readTextFileSync(`/proc/${parent}/task/${task.name}/children`);
      } catch {
        continue;
      }
      for (const c of children.trim().split(/\s+/).filter(Boolean)) {
        out.push(Number(c));
        queue.push(Number(c));
      }
    }
  }
  return out;
}

/** SIGKILLs `child` and every process below it (best effort: each may be gone already). */
function killTree(child: Deno.ChildProcess): void {
  const below = descendants(child.pid);
  try {
    child.kill("SIGKILL");
  } catch { /* already gone */ }
  for (const pid of below) {
    try {
      Deno.kill(pid, "SIGKILL");
    } catch { /* gone */ }
  }
}

/**
 * Runs a command whose standard output is written to the new file `path` (0600, never
 * through an existing file or link), asking `stop` after each chunk whether to go on: when it
 * answers with a reason, the command is killed (SIGKILL), nothing more is written, and the
 * result carries the reason. The bytes written are counted by ARCH, not trusted from the file.
 */
export async function runToFile(
  spec: CommandSpec,
  path: string,
  stop: (bytes: number) => string | undefined,
): Promise<CommandResult & { bytes: number; stopped?: string }> {
  const child = new Deno.Command(spec.cmd, {
    args: [...spec.args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    ...(spec.cwd !== undefined ? { cwd: spec.cwd } : {}),
  }).spawn();
  const errors = new Response(child.stderr).text();
  let bytes = 0;
  let stopped: string | undefined;
  const file = Deno.openSync(path, { write: true, createNew: true, mode: 0o600 });
  try {
    for await (const chunk of child.stdout) {
      stopped = stop(bytes + chunk.length);
      if (stopped !== undefined) {
        child.kill("SIGKILL");
        break;
      }
      for (let at = 0; at < chunk.length;) at += file.writeSync(chunk.subarray(at));
      bytes += chunk.length;
    }
  } catch (error) {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
    throw error;
  } finally {
    file.close();
  }
  const status = await child.status;
  return {
    code: status.code,
    signal: status.signal,
    stdout: "",
    stderr: await errors,
    bytes,
    ...(stopped ? { stopped } : {}),
  };
}

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
