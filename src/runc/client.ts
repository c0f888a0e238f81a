/**
 * The one runc client: every runc command ARCH runs itself goes through {@link Runc}. As in
 * go-runc, one object owns the binary and the global flags, each command has one typed
 * argv builder ({@link runcArgv}, pure), every failure is one error type
 * ({@link RuncError}), and the process runner is the seam tests replace
 * ({@link useRuncRunner}, go-runc's `Monitor`). The engine's own calls are parsed by
 * `argv.ts` and never rebuilt here except for the restore that replaces a create.
 *
 * Guarantees: every call on a container repeats the global flags the engine created it with
 * (`--root`, `--systemd-cgroup`, `--criu`, `--rootless`), never its log file; a restore
 * keeps the create's global flags, log included (runc's errors then reach the engine), and
 * the create options `runc restore` also takes. A command that exits non-zero (or is killed
 * at its timeout) throws a {@link RuncError}; none is retried here.
 */

import { formatOptions, type Options, parseRuncArgv, type RuncCall } from "./argv.ts";
import { type CommandResult, type CommandSpec, runCommand, type Runner } from "../process/exec.ts";
import { ArchError } from "../util/errors.ts";

/** A container as runc knows it: the real runc, the global flags it was created with, its id. */
export interface RuncTarget {
  readonly runc: string;
  /** Global flags, `root` always among them. */
  readonly global: Readonly<Options>;
  readonly id: string;
}

/** Global flags that concern the engine's log of one call, not the container. */
const CALL_ONLY = new Set(["log", "log-format", "debug", "help", "version"]);

/**
 * The global flags of a create call that later calls on the container must repeat.
 *
 * @example
 * ```ts
 * import { carriedGlobal } from "./client.ts";
 * const g = carriedGlobal({ root: "/r", log: "/b/log.json", "log-format": "json", "systemd-cgroup": true });
 * if (JSON.stringify(g) !== '{"root":"/r","systemd-cgroup":true}') throw new Error();
 * ```
 */
export function carriedGlobal(global: Readonly<Options>): Options {
  return Object.fromEntries(Object.entries(global).filter(([name]) => !CALL_ONLY.has(name)));
}

/** The target of a recorded container (`global` absent in records of older ARCH versions). */
export function targetOf(
  runc: string,
  record: { readonly root: string; readonly id: string; readonly runcGlobal?: unknown },
): RuncTarget {
  const global = typeof record.runcGlobal === "object" && record.runcGlobal !== null
    ? record.runcGlobal as Options
    : {};
  return { runc, id: record.id, global: { ...global, root: record.root } };
}

const base = (t: RuncTarget) => formatOptions(t.global);

/** Options of `runc create` that `runc restore` takes too; the others are dropped. */
const CARRIED_TO_RESTORE = ["bundle", "console-socket", "pid-file", "no-pivot"] as const;

/** argv (without the runc binary) of each command ARCH runs. */
export const runcArgv = {
  pause: (t: RuncTarget) => [...base(t), "pause", t.id],
  resume: (t: RuncTarget) => [...base(t), "resume", t.id],
  kill: (t: RuncTarget, signal = "KILL") => [...base(t), "kill", t.id, signal],
  state: (t: RuncTarget) => [...base(t), "state", t.id],
  /** Every container of the target's `--root`, as JSON (the target's id is not used). */
  list: (t: RuncTarget) => [...base(t), "list", "--format", "json"],
  forceDelete: (t: RuncTarget) => [...base(t), "delete", "--force", t.id],
  /**
   * A dump; by default it leaves the container running (ARCH stops it after the commit), with
   * `leaveRunning: false` runc stops it (the bench's bare-runc floor).
   */
  checkpoint: (t: RuncTarget, imagePath: string, workPath: string, { leaveRunning = true } = {}) => [
    ...base(t),
    "checkpoint",
    ...(leaveRunning ? ["--leave-running"] : []),
    "--image-path",
    imagePath,
    "--work-path",
    workPath,
    t.id,
  ],
  /** The engine's create and start, as the bench plays the engine (ARCH itself never creates a container). */
  create: (t: RuncTarget, bundle: string, pidFile: string) => [
    ...base(t),
    "create",
    "--bundle",
    bundle,
    "--pid-file",
    pidFile,
    t.id,
  ],
  start: (t: RuncTarget) => [...base(t), "start", t.id],
  /**
   * The `runc restore` that stands in for the engine's `runc create` call.
   *
   * @example
   * ```ts
   * import { runcArgv } from "./client.ts";
   * const argv = runcArgv.restore(
   *   { global: { root: "/r" }, command: "create", options: { bundle: "/b", "no-new-keyring": true }, args: ["c1"] },
   *   "/img",
   *   "/work",
   * );
   * if (argv.join(" ") !== "--root /r restore --detach --bundle /b --image-path /img --work-path /work c1") throw new Error();
   * ```
   */
  restore: (create: RuncCall, imagePath: string, workPath: string): string[] => {
    const options: Options = { detach: true };
    for (const name of CARRIED_TO_RESTORE) {
      const value = create.options[name];
      if (typeof value === "string" || value === true) options[name] = value;
    }
    options["image-path"] = imagePath;
    options["work-path"] = workPath;
    return [...formatOptions(create.global), "restore", ...formatOptions(options), create.args[0]!];
  },
};

/** What runc says when the container is not there (runc 1.1 to 1.3). */
const NOT_EXIST = /does not exist|not found|no such/i;

/** A runc command that failed: its argv, how it ended, the tail of its stderr. */
export class RuncError extends ArchError {
  /** runc said the container does not exist. */
  readonly notExist: boolean;
  constructor(
    readonly argv: readonly string[],
    readonly status: number,
    readonly signal: Deno.Signal | null,
    /** The last lines of runc's stderr (at most 3, joined by " | "). */
    readonly stderrTail: string,
  ) {
    const parsed = parseRuncArgv(argv.slice(1));
    const command = parsed.ok ? parsed.call.command : "command";
    super(
      `runc ${command} failed: ${stderrTail || (signal !== null ? `killed by ${signal}` : `exit status ${status}`)}`,
      `runc-${command}`,
    );
    this.notExist = NOT_EXIST.test(stderrTail);
  }

  /** The error of a finished command, or `undefined` if it succeeded. */
  static of(argv: readonly string[], result: CommandResult): RuncError | undefined {
    if (result.code === 0 && result.signal === null) return undefined;
    const tail = result.stderr.trim().split("\n").slice(-3).map((l) => l.trim()).join(" | ");
    return new RuncError(argv, result.code, result.signal, tail);
  }
}

let defaultRunner: Runner = runCommand;

/**
 * Runs the calls of every {@link Runc} without a runner of its own with `runner` (a fake runc in unit tests);
 * returns the function that puts the previous runner back.
 */
export function useRuncRunner(runner: Runner): () => void {
  const previous = defaultRunner;
  defaultRunner = runner;
  return () => {
    defaultRunner = previous;
  };
}

/** How one runc call runs: a timeout (then SIGKILL), the environment, stdio. */
export type CallOptions = Pick<CommandSpec, "timeoutMs" | "env" | "stdio">;

/** A container as runc's client: its commands, each throwing {@link RuncError} on failure. */
export class Runc {
  /** `runner`: how commands run; by default the one {@link useRuncRunner} set when each call starts. */
  constructor(readonly target: RuncTarget, readonly runner?: Runner) {}

  /** Runs `runc <args>`; throws {@link RuncError} unless it exits 0. */
  async run(args: readonly string[], options: CallOptions = {}): Promise<CommandResult> {
    const argv = [this.target.runc, ...args];
    const result = await (this.runner ?? defaultRunner)({ cmd: this.target.runc, args, ...options });
    const error = RuncError.of(argv, result);
    if (error !== undefined) throw error;
    return result;
  }

  async pause(options?: CallOptions): Promise<void> {
    await this.run(runcArgv.pause(this.target), options);
  }
  async resume(options?: CallOptions): Promise<void> {
    await this.run(runcArgv.resume(this.target), options);
  }
  async kill(signal = "KILL", options?: CallOptions): Promise<void> {
    await this.run(runcArgv.kill(this.target, signal), options);
  }
  async forceDelete(options?: CallOptions): Promise<void> {
    await this.run(runcArgv.forceDelete(this.target), options);
  }
  /** `runc checkpoint --leave-running` into `imagePath` (CRIU's work files and logs in `workPath`). */
  async checkpoint(imagePath: string, workPath: string, options?: CallOptions): Promise<void> {
    await this.run(runcArgv.checkpoint(this.target, imagePath, workPath), options);
  }

  /**
   * The container's status from `runc state`: `gone` if runc says it does not exist,
   * `undefined` if runc could not tell (an error, a timeout).
   */
  async status(timeoutMs?: number): Promise<string | undefined> {
    let stdout: string;
    try {
      stdout = (await this.run(runcArgv.state(this.target), timeoutMs === undefined ? {} : { timeoutMs })).stdout;
    } catch (error) {
      if (!(error instanceof RuncError)) throw error; // runc could not be started at all: not an answer
      return error.notExist ? "gone" : undefined;
    }
    try {
      return (JSON.parse(stdout) as { status?: string }).status;
    } catch {
      return undefined;
    }
  }

  /**
   * Every container of the target's `--root`, as `runc list --format json` prints them
   * (the target's id is not used; runc prints `null` for none); throws a `SyntaxError` if
   * runc printed no JSON array.
   */
  async list(timeoutMs?: number): Promise<Record<string, unknown>[]> {
    const r = await this.run(runcArgv.list(this.target), timeoutMs === undefined ? {} : { timeoutMs });
    const parsed = JSON.parse(r.stdout.trim() || "null") as unknown;
    if (parsed !== null && !Array.isArray(parsed)) throw new SyntaxError("runc list printed no JSON array");
    return ((parsed ?? []) as unknown[]).filter((e): e is Record<string, unknown> =>
      typeof e === "object" && e !== null
    );
  }
}

/**
 * The `runc restore` that stands in for the engine's `create`, with the create's global
 * flags and log (runc's errors reach the engine); throws {@link RuncError} on failure.
 */
export async function restoreForCreate(
  runcPath: string,
  create: RuncCall,
  imagePath: string,
  workPath: string,
  options: CallOptions = {},
  runner?: Runner,
): Promise<void> {
  const client = new Runc({ runc: runcPath, global: create.global, id: create.args[0]! }, runner);
  await client.run(runcArgv.restore(create, imagePath, workPath), options);
}

/**
 * The status of each of `targets` (same runc binary), from one `runc list` per distinct set of
 * global options (`--root` …) instead of one `runc state` each: `gone` for a container runc
 * does not list. A root whose list fails falls back to `runc state` for its containers.
 */
export async function runcStatuses(targets: readonly RuncTarget[], timeoutMs: number): Promise<(string | undefined)[]> {
  const groups = new Map<string, number[]>();
  targets.forEach((t, i) => {
    const key = JSON.stringify(t.global);
    groups.set(key, [...(groups.get(key) ?? []), i]);
  });
  const out: (string | undefined)[] = targets.map(() => undefined);
  await Promise.all([...groups.values()].map(async (indexes) => {
    const listed = await new Runc(targets[indexes[0]!]!).list(timeoutMs).then(
      (list) => new Map(list.map((c) => [String(c.id), typeof c.status === "string" ? c.status : undefined])),
      (error: unknown) => {
        // runc answered but not with a list: ask each container; runc could not run at all: that is the answer
        if (error instanceof RuncError || error instanceof SyntaxError) return undefined;
        throw error;
      },
    );
    for (const i of indexes) {
      const t = targets[i]!;
      out[i] = listed !== undefined
        ? (listed.has(t.id) ? listed.get(t.id) : "gone")
        : await new Runc(t).status(timeoutMs);
    }
  }));
  return out;
}
