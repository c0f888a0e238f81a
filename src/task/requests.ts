/**
 * Checkpoints a job asks for (`ARCH_CHECKPOINT_REQUESTS=1`): the node's exit watcher, which
 * already knows every running ARCH container, looks once a second into the control directory
 * of each container that opted in (`control_dir.ts`) for a `request`, and answers it in
 * `result`.
 *
 * - Identity by construction: a request is found in the container's own control directory,
 *   reached from its init's root; it cannot name another container. Nothing connects the job
 *   to the host (no socket for CRIU to refuse as external).
 * - The admin decides (host config `checkpointRequests`): whether containers may ask, how soon
 *   after its previous accepted request a container may ask again, and how many requested
 *   checkpoints run at once on the node. A refused request is answered with why, at once.
 * - Bounded: one request per container per second is read (64 bytes at most, a plain file
 *   only); a flood is answered one refusal at a time; a checkpoint runs as `arch checkpoint`
 *   in a child process, with its own limits, never in the watcher.
 * - `continue` checkpoints with `--leave-running` and answers `ok <checkpoint>`; `stop`
 *   checkpoints and stops the container (the container restored from it reads `restored
 *   <checkpoint>`, written by the restore). A failed checkpoint answers `failed <why>`: the
 *   job runs on.
 */

import { loadHostConfig } from "../config/host_schema.ts";
import type { Logger } from "../log/log.ts";
import { errorMessage } from "../util/errors.ts";
import type { Registry } from "../registry/registry.ts";
import { recordedTask } from "./options.ts";
import { postResult, takeRequest } from "./control_dir.ts";
import { selfArch } from "../config/host.ts";
import { runCommand } from "../process/exec.ts";

/** A running container the watcher knows. */
export interface RunningContainer {
  readonly namespace: string;
  readonly id: string;
  readonly pid: number;
  readonly createdAt: string;
  /** Its init's start time (`/proc/<pid>/stat`), checked before each access (a reused pid is not it). */
  readonly startTime: number | null;
}

/** How often control directories are looked into, ms. */
export const REQUEST_SCAN_MS = 1_000;

/**
 * What a tenant may read of a failed checkpoint: CRIU's cause of a refused dump (it names the
 * job's own objects, in the container's terms), else a fixed sentence; the node's paths, pids
 * and names stay in the log and the events.
 */
export function forTenant(line: string): string {
  const cause = line.match(/runc checkpoint of "[^"]*" failed: (.*?); the job keeps running/)?.[1];
  // A cause that names where engines and ARCH keep things on the node is the node's, not the job's.
  if (cause !== undefined && !/\/(var\/(lib|run|log)|run\/(containerd|docker|runc|arch|user)|proc|sys)\//.test(cause)) {
    return `the dump failed: ${cause}; the job runs on`;
  }
  return "the checkpoint did not complete (the node's log says why); the job runs on";
}

/** Finds and serves the requests of the containers that opted in (see the module doc). */
export class RequestWatcher {
  /** Containers (namespace/id@createdAt) known to have opted in, or not: a record is read once. */
  readonly #optedIn = new Map<string, boolean>();
  /** namespace/id of the requested checkpoints running now. */
  readonly #running = new Set<string>();
  /** namespace/id → when its last accepted request started, ms. */
  readonly #last = new Map<string, number>();

  constructor(
    readonly registry: Registry,
    readonly log: Logger,
    readonly configPath: string,
    readonly arch: string = selfArch(),
  ) {}

  /** Looks into every opted-in container's control directory once; starts what is asked and allowed. */
  scan(containers: readonly RunningContainer[]): void {
    const seen = new Set<string>();
    for (const c of containers) {
      const key = `${c.namespace}/${c.id}@${c.createdAt}`;
      seen.add(key);
      let opted = this.#optedIn.get(key);
      if (opted === undefined) {
        const record = this.registry.get(c.namespace, c.id);
        opted = record?.createdAt === c.createdAt && recordedTask(record)?.requests === true;
        this.#optedIn.set(key, opted);
      }
      if (!opted) continue;
      let request;
      try {
        request = takeRequest(c);
      } catch {
        continue; // gone, or no control directory right now
      }
      if (request === undefined) continue;
      const why = typeof request === "object" ? request.refused : this.#refusal(c);
      if (why !== undefined) {
        this.#answer(c, `refused ${why}`);
        this.log.info("checkpoint request refused", { namespace: c.namespace, id: c.id, reason: why });
        continue;
      }
      void this.#checkpoint(c, request as "continue" | "stop");
    }
    for (const key of this.#optedIn.keys()) if (!seen.has(key)) this.#optedIn.delete(key);
  }

  /** Why the admin's policy refuses a request of `c` now, or `undefined`. */
  #refusal(c: RunningContainer): string | undefined {
    let policy;
    try {
      policy = loadHostConfig(this.configPath).checkpointRequests;
    } catch (error) {
      this.log.error("cannot read the host configuration for a checkpoint request", { error: errorMessage(error) });
      return "this node's configuration cannot be read right now: ask again later";
    }
    const name = `${c.namespace}/${c.id}`;
    if (!policy.allowed) {
      return `checkpoint requests are not allowed on this node (host config "checkpointRequests.allowed")`;
    }
    if (this.#running.has(name)) return "a checkpoint of this container is already running: wait for its result";
    const since = (Date.now() - (this.#last.get(name) ?? -Infinity)) / 1000;
    if (since < policy.minIntervalSeconds) {
      return `the last request was ${Math.floor(since)} s ago, and this node allows one every ` +
        `${policy.minIntervalSeconds} s (host config "checkpointRequests.minIntervalSeconds"): ask again in ` +
        `${Math.ceil(policy.minIntervalSeconds - since)} s`;
    }
    if (this.#running.size >= policy.concurrency) {
      return `this node runs as many requested checkpoints at once as it allows (host config ` +
        `"checkpointRequests.concurrency"): ask again later`;
    }
    return undefined;
  }

  #answer(c: RunningContainer, line: string): void {
    try {
      postResult(c, line);
    } catch (error) {
      this.log.warn("cannot answer a checkpoint request", { id: c.id, error: errorMessage(error) });
    }
  }

  async #checkpoint(c: RunningContainer, kind: "continue" | "stop"): Promise<void> {
    const name = `${c.namespace}/${c.id}`;
    this.#running.add(name);
    this.#last.set(name, Date.now());
    this.log.info("checkpoint requested by the container", { namespace: c.namespace, id: c.id, kind });
    try {
      const args = ["checkpoint", "--requested", ...(kind === "continue" ? ["--leave-running"] : []), name];
      const r = await runCommand({
        cmd: this.arch,
        args,
        env: { ARCH_CONFIG: this.configPath },
        timeoutMs: 30 * 60_000,
      });
      const line = r.stdout.split("\n").find((l) => l.startsWith("ok ") || l.startsWith("FAIL ")) ?? "";
      if (r.code === 0) {
        // Stopped by its checkpoint: nobody left to answer (the restored container reads `restored`).
        if (kind === "continue") this.#answer(c, `ok ${line.match(/-> \S*\/([^/\s]+)/)?.[1] ?? "committed"}`);
      } else {
        this.log.warn("requested checkpoint failed", { id: c.id, line: line || r.stderr.trim(), code: r.code });
        this.#answer(c, `failed ${forTenant(line)}`);
      }
    } catch (error) {
      this.log.error("cannot run a requested checkpoint", { id: c.id, error: errorMessage(error) });
      this.#answer(c, `failed ${forTenant("")}`);
    } finally {
      this.#running.delete(name);
    }
  }
}
