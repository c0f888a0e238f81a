/**
 * `arch ls`: the ARCH-enabled containers recorded on this node (with runc's view of their
 * state, asked at most {@link RUNC_STATE_CONCURRENCY} at a time), and the checkpoints on the
 * node's checkpoint roots (`observe/catalog.ts`). Read-only; never follows a symlink out of a
 * root.
 */

import { loadHostConfig } from "../config/host_schema.ts";
import { type ContainerRecord, Registry } from "../registry/registry.ts";
import { runcState } from "../engine/runc.ts";
import { targetOf } from "../runc/command.ts";
import { type CheckpointEntry, checkpointRootsOf, scanCheckpoints } from "../observe/catalog.ts";
import { humanAge, humanBytes, printJson, printTable } from "./output.ts";

/** One element of `arch ls --json`: the container's record (`registry/registry.ts`) and runc's view of it. */
export type ContainerRow = ContainerRecord & {
  /** runc's status (`running`, `paused`, `stopped`, `created`), `gone`, or `unknown` (runc did not answer). */
  readonly state: string;
};

/** One element of `arch ls --checkpoints --json`. */
export interface CheckpointRow {
  readonly scope: string;
  readonly key: string;
  readonly status: string;
  readonly createdAt: string;
  readonly ageSeconds: number;
  readonly bytes: number;
  readonly path: string;
  readonly containerId?: string;
  readonly consumedBy?: CheckpointEntry["consumedBy"];
}

/** Everything `arch ls` shows. */
export interface LsOutput {
  readonly containers: readonly ContainerRow[];
  readonly checkpoints: readonly CheckpointRow[];
  /** Roots or directories that were not read, with why. */
  readonly skipped: readonly string[];
}

/** How many `runc state` run at once (a node may have hundreds of containers). */
export const RUNC_STATE_CONCURRENCY = 8;

/**
 * `items.map(fn)` with at most `limit` calls of `fn` pending at once; results in order.
 *
 * @example
 * ```ts
 * import { mapBounded } from "./ls.ts";
 * const out = await mapBounded([1, 2, 3], 2, async (n) => n * 2);
 * if (out.join() !== "2,4,6") throw new Error();
 * ```
 */
export async function mapBounded<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T) => Promise<R>,
): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(Math.max(1, limit), items.length) }, worker));
  return out;
}

/** Collects what `arch ls` shows (the checkpoints only if `withCheckpoints`). Requires root (state dir, roots, runc). */
export async function collectLs(withCheckpoints = true): Promise<LsOutput> {
  const host = loadHostConfig();
  const records = new Registry(host.stateDir).list();
  const containers = await mapBounded(records, RUNC_STATE_CONCURRENCY, async (r): Promise<ContainerRow> => {
    let state: string | undefined;
    try {
      state = await runcState(targetOf(host.runcPath, r), 2_000);
    } catch { /* unknown */ }
    return { ...r, state: state ?? "unknown" };
  });
  const now = Date.now();
  const catalog = withCheckpoints ? scanCheckpoints(checkpointRootsOf(host), now) : { keys: [], skipped: [] };
  const checkpoints = catalog.keys.flatMap((k) =>
    k.checkpoints.map((c): CheckpointRow => ({
      scope: c.scope,
      key: c.key,
      status: c.status,
      createdAt: c.createdAt,
      ageSeconds: Math.max(0, Math.round((now - Date.parse(c.createdAt)) / 1000)),
      bytes: c.bytes,
      path: c.path,
      ...(c.containerId !== undefined ? { containerId: c.containerId } : {}),
      ...(c.consumedBy !== undefined ? { consumedBy: c.consumedBy } : {}),
    }))
  );
  return { containers, checkpoints, skipped: catalog.skipped };
}

/**
 * `arch ls`: prints the containers and the checkpoints as two tables; with `json`, the
 * containers as a JSON array (unchanged for scripts), or with `checkpoints` too the
 * checkpoints; with `checkpoints` alone, only the checkpoint table. Returns 0. Requires root.
 */
export async function ls(opts: { json?: boolean; checkpoints?: boolean }): Promise<number> {
  const out = await collectLs(!opts.json || opts.checkpoints === true);
  for (const s of out.skipped) console.error(`arch: ${s}`);
  if (opts.json) {
    printJson(opts.checkpoints ? out.checkpoints : out.containers);
    return 0;
  }
  if (!opts.checkpoints) {
    if (out.containers.length === 0) console.log("no ARCH container on this node");
    else {
      printTable(
        ["NAMESPACE", "ID", "KEY", "STATE", "CREATED"],
        out.containers.map((c) => [c.namespace, c.id, c.key, c.state, c.createdAt]),
      );
    }
    console.log("");
  }
  if (out.checkpoints.length === 0) console.log("no checkpoint on this node's checkpoint roots");
  else {
    printTable(
      ["SCOPE", "KEY", "STATUS", "AGE", "SIZE", "PATH"],
      out.checkpoints.map((c) => [
        c.scope,
        c.key,
        c.consumedBy !== undefined
          ? `consumed (by ${c.consumedBy.container.slice(0, 12)} on ${c.consumedBy.node})`
          : c.status,
        humanAge(c.ageSeconds * 1000),
        humanBytes(c.bytes),
        c.path,
      ]),
    );
  }
  return 0;
}
