/**
 * Every runc command line ARCH runs itself, built in one place (pure). As in go-runc, the
 * global flags live on one object, the container's {@link RuncTarget}, and each command has
 * one builder; the engine's own calls are parsed by `argv.ts` and never rebuilt here except
 * for the restore that replaces a create.
 *
 * Guarantees: every call on a container repeats the global flags the engine created it with
 * (`--root`, `--systemd-cgroup`, `--criu`, `--rootless`), never its log file; a restore
 * keeps the create's global flags, log included (runc's errors then reach the engine), and
 * the create options `runc restore` also takes.
 */

import { formatOptions, type Options, type RuncCall } from "./argv.ts";

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
  /** A dump that leaves the container running (ARCH stops it after the commit). */
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
