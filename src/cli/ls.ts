/**
 * `arch ls`: the ARCH-enabled containers on this node — those ARCH recorded (with runc's view of
 * their state, asked at most {@link RUNC_STATE_CONCURRENCY} at a time) and those that opted in
 * but that ARCH does not protect, found in runc's own roots (`registry/census.ts`), each with
 * its protection and, when unprotected, why — and the checkpoints on the node's checkpoint
 * roots (`store/listing.ts`). Read-only; never follows a symlink out of a root.
 */

import { type KeyFailure, readLastFailures } from "../observe/failures.ts";
import { errorMessage } from "../util/errors.ts";
import { loadHostConfig } from "../config/host_schema.ts";
import { type ContainerRecord, Registry } from "../registry/registry.ts";
import { Runc, targetOf } from "../runc/client.ts";
import { type CheckpointEntry, checkpointRootsOf, scanCheckpoints, TEMPLATE_PREFIX } from "../store/listing.ts";
import { humanAge, humanBytes, printJson, printTable, terminalLine, terminalSafe } from "./output.ts";
import { type Census, nodeCensus, recordCensus, runcLister } from "../registry/census.ts";

/** One element of `arch ls --json`: the container's record (`registry/registry.ts`) and runc's view of it. */
export type ContainerRow = ContainerRecord & {
  /** runc's status (`running`, `paused`, `stopped`, `created`), `gone`, or `unknown` (runc did not answer). */
  readonly state: string;
  /**
   * `protected`: runc runs it and ARCH's record describes it; `unprotected`: it opted in and runs
   * but ARCH cannot checkpoint it (`reason` says why); `-`: runc does not run it (any more).
   */
  readonly protection: "protected" | "unprotected" | "-";
  readonly reason?: string;
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
  /** Keys whose last checkpoint or restore on this node failed after their newest checkpoint (`scope/key` → failure). */
  readonly failures: ReadonlyMap<string, KeyFailure>;
}

/**
 * The rows of `arch ls` from ARCH's records (with runc's state of each) and the node's census:
 * every record, plus every opted-in container runc runs that no record describes. Pure.
 */
export function containerRows(
  records: readonly ContainerRecord[],
  states: readonly string[],
  census: Census,
): ContainerRow[] {
  const seen = new Map(census.containers.map((c) => [`${c.namespace}/${c.id}`, c]));
  const rows: ContainerRow[] = records.map((r, i) => {
    const c = seen.get(`${r.namespace}/${r.id}`);
    const state = states[i] ?? "unknown";
    if (c?.protection === "protected") return { ...r, state, protection: "protected" };
    if (c?.protection === "unprotected") {
      return { ...r, state, protection: "unprotected", ...(c.reason !== undefined ? { reason: c.reason } : {}) };
    }
    return { ...r, state, protection: "-" };
  });
  const recorded = new Set(records.map((r) => `${r.namespace}/${r.id}`));
  for (const c of census.containers) {
    if (c.protection !== "unprotected" || recorded.has(`${c.namespace}/${c.id}`)) continue;
    rows.push({
      namespace: c.namespace,
      id: c.id,
      root: c.root,
      bundle: c.bundle,
      key: c.requestedKey ?? "",
      createdAt: "",
      state: c.status,
      protection: "unprotected",
      ...(c.reason !== undefined ? { reason: c.reason } : {}),
    });
  }
  return rows.sort((a, b) => a.namespace.localeCompare(b.namespace) || a.id.localeCompare(b.id));
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
  const [states, census] = await Promise.all([
    mapBounded(records, RUNC_STATE_CONCURRENCY, async (r): Promise<string> => {
      try {
        return await new Runc(targetOf(host.runcPath, r)).status(2_000) ?? "unknown";
      } catch {
        return "unknown";
      }
    }),
    nodeCensus(host, runcLister(host.runcPath)).catch((error): Census => ({
      containers: [],
      problems: [`cannot count the node's containers: ${errorMessage(error)}`],
    })),
  ]);
  recordCensus(host, census);
  const containers = containerRows(records, states, census);
  const now = Date.now();
  const catalog = withCheckpoints ? scanCheckpoints(checkpointRootsOf(host), now) : { keys: [], skipped: [] };
  const checkpoints = catalog.keys.flatMap((k) =>
    k.checkpoints.map((c): CheckpointRow => ({
      // A template shows under the scope it serves, named as `arch inspect` takes it.
      scope: k.templateOf ?? c.scope,
      key: k.templateOf !== undefined ? `${TEMPLATE_PREFIX}${c.key}` : c.key,
      status: c.status,
      createdAt: c.createdAt,
      ageSeconds: Math.max(0, Math.round((now - Date.parse(c.createdAt)) / 1000)),
      bytes: c.bytes,
      path: c.path,
      ...(c.containerId !== undefined ? { containerId: c.containerId } : {}),
      ...(c.consumedBy !== undefined ? { consumedBy: c.consumedBy } : {}),
    }))
  );
  const newest = new Map<string, number>();
  for (const c of checkpoints) {
    const k = `${c.scope}/${c.key}`;
    newest.set(k, Math.max(newest.get(k) ?? 0, Date.parse(c.createdAt) || 0));
  }
  const failures = new Map(
    [...(withCheckpoints ? readLastFailures(host.eventsFile) : new Map<string, KeyFailure>())]
      .filter(([k, f]) => (Date.parse(f.time) || 0) > (newest.get(k) ?? 0)),
  );
  return { containers, checkpoints, skipped: [...census.problems, ...catalog.skipped], failures };
}

/**
 * `arch ls`: prints the containers and the checkpoints as two tables; with `json`, the
 * containers as a JSON array (records plus `state`, `protection` and `reason`; an unprotected container without a record is a row that `arch checkpoint` cannot take), or with `checkpoints` too the
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
        ["NAMESPACE", "ID", "KEY", "STATE", "PROTECTION", "CREATED"],
        out.containers.map((c) => [c.namespace, c.id, c.key || "-", c.state, c.protection, c.createdAt || "-"]),
      );
      for (const c of out.containers.filter((c) => c.protection === "unprotected")) {
        console.log(`unprotected ${c.namespace}/${c.id}: ${terminalSafe(c.reason ?? "unknown reason")}`);
      }
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
  for (const [key, f] of out.failures) {
    console.log(
      terminalLine(`last ${f.kind} of ${key} failed at ${f.time}${f.code ? ` (${f.code})` : ""}: ${f.error}`),
    );
  }
  return 0;
}
