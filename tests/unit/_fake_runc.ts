/**
 * A fake runc for unit tests, run through the runc client's seam (`useRuncRunner`): one
 * container with a status, the commands ARCH runs on it, and the failures a test asks for.
 * It checks nothing a real runc would: integration tests run the real one.
 */
import type { CommandResult, CommandSpec } from "../../src/process/exec.ts";
import { parseRuncArgv } from "../../src/runc/argv.ts";
import { useRuncRunner } from "../../src/runc/client.ts";

export type FakeStatus = "running" | "paused" | "stopped" | "gone";

/** A failure that means runc could not be started at all (the runner throws, as `Deno.Command` does). */
export const SPAWN_FAILS = "\0spawn-fails";

/**
 * How the fake misbehaves: a command answers with this stderr and exit status 1 instead of
 * acting, or (with {@link SPAWN_FAILS}) runc cannot be started.
 */
export type FakeFailure = Partial<Record<string, string | ((fake: FakeRunc) => string | undefined)>>;

export class FakeRunc {
  /** Every call, as `<command> <positional...>` (global flags left out). */
  readonly calls: string[] = [];
  readonly restoreUse: () => void;
  /** runc < 1.1: `kill` of a paused container leaves it paused (the kill waits for a resume). */
  killLeavesPaused = false;
  /** The container's id, as `list` names it. */
  id = "c1";
  /** What `list` prints instead of the container (bad output, for tests). */
  listOutput: string | undefined;
  /** What a failing `checkpoint` leaves as CRIU's log (`<work-path>/dump.log`), as CRIU would. */
  dumpLog: string | undefined;
  /** What `checkpoint` writes into the image directory (file → content). */
  images: Record<string, string> = { "inventory.img": "inv", "pages-1.img": "pages" };

  constructor(public status: FakeStatus = "running", readonly fail: FakeFailure = {}) {
    this.restoreUse = useRuncRunner((spec) => Promise.resolve(this.#run(spec)));
  }

  #run(spec: CommandSpec): CommandResult {
    const parsed = parseRuncArgv(spec.args);
    if (!parsed.ok) return this.#exit(2, `fake runc: cannot parse ${spec.args.join(" ")}`);
    const { options, args } = parsed.call;
    const command = parsed.call.command ?? "";
    this.calls.push([command, ...args].join(" "));
    const failure = this.fail[command];
    const said = typeof failure === "function" ? failure(this) : failure;
    if (said === SPAWN_FAILS) throw new Deno.errors.PermissionDenied(`fake runc: cannot start ${spec.cmd}`);
    if (said !== undefined && command === "checkpoint" && this.dumpLog !== undefined) {
      Deno.mkdirSync(String(options["work-path"]), { recursive: true });
      Deno.writeTextFileSync(`${options["work-path"]}/dump.log`, this.dumpLog);
    }
    if (said !== undefined) return this.#exit(1, said);
    const missing = () => this.#exit(1, `container "${args[0]}" does not exist`);
    if (command === "list") {
      return this.#ok(
        this.listOutput ?? JSON.stringify(this.status === "gone" ? null : [{ id: this.id, status: this.status }]),
      );
    }
    if (this.status === "gone" && command !== "restore" && command !== "delete") return missing();
    switch (command) {
      case "state":
        return this.#ok(JSON.stringify({ id: args[0], status: this.status }));
      case "pause":
        if (this.status !== "running") return this.#exit(1, "container not running");
        this.status = "paused";
        return this.#ok();
      case "resume":
        if (this.status !== "paused") return this.#exit(1, "container not paused");
        this.status = "running";
        return this.#ok();
      case "kill":
        if (this.status === "stopped") return this.#exit(1, "container not running");
        if (!(this.killLeavesPaused && this.status === "paused")) this.status = "stopped";
        return this.#ok();
      case "delete":
        this.status = "gone";
        return this.#ok();
      case "checkpoint": {
        const dir = String(options["image-path"]);
        Deno.mkdirSync(dir, { recursive: true });
        Deno.mkdirSync(String(options["work-path"]), { recursive: true });
        for (const [name, content] of Object.entries(this.images)) Deno.writeTextFileSync(`${dir}/${name}`, content);
        return this.#ok();
      }
      case "restore":
        this.status = "running";
        return this.#ok();
      default:
        return this.#exit(1, `fake runc: no command "${command}"`);
    }
  }

  #ok(stdout = ""): CommandResult {
    return { code: 0, signal: null, stdout, stderr: "" };
  }
  #exit(code: number, stderr: string): CommandResult {
    return { code, signal: null, stdout: "", stderr: `time="x" level=error msg="${stderr}"\n` };
  }

  [Symbol.dispose](): void {
    this.restoreUse();
  }
}
