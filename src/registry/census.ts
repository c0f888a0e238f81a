/**
 * Which containers run on this node and which of them ARCH protects, with runc as the source of
 * truth: every runc root the node's engines use is listed (`runc list`), each container's own
 * `config.json` says whether it opted in (`ARCH_ENABLE=1`), and ARCH's registry is only the index
 * that adds what runc cannot tell (the checkpoint key, the root of its checkpoints).
 *
 * A container that opted in but that ARCH cannot protect — no record (not created through
 * `arch-runc`, or the record was lost), a record of another container of the same id, or a
 * create ARCH passed to runc unchanged after an internal error (a note the wrapper leaves, see
 * `noteUnprotected` in `unprotected.ts`) — is `unprotected`, with one sentence saying why. `arch ls`,
 * `arch doctor`, `arch finalize` and the metrics show it: protection is never silent.
 *
 * Guarantees: read-only but for the unprotected notes; never follows a container's paths as
 * root-owned truth (a bundle's `config.json` is read as data, bounded in size); a root runc
 * cannot list, or a record that cannot be read, is reported, never thrown: a census never
 * stops `arch finalize`. The wrapper's part is `unprotected.ts` (no metrics, no npm module).
 */

import { errorMessage } from "../util/errors.ts";
import { type ContainerRecord, Registry } from "./registry.ts";
import { isSafeSegment, lastElement, resolvedPath, samePath } from "../util/paths.ts";
import { recordMetrics } from "../observe/metrics.ts";
import { describesRuncContainer, notesDir, readNote } from "./unprotected.ts";

/**
 * runc roots of the engines ARCH supports, each holding containers or, one level down, one
 * root per namespace: containerd's (`/run/containerd/runc/<namespace>`), Docker's
 * (`/var/run/docker/runtime-runc/moby`), runc's default (Podman, CRI-O: `/run/runc`).
 */
export const ENGINE_RUNC_ROOTS: readonly string[] = [
  "/run/containerd/runc",
  "/run/docker/runtime-runc",
  // Docker's own spelling: the same directory where /var/run links to /run (deduplicated), its own where not.
  "/var/run/docker/runtime-runc",
  "/run/runc",
];

/** How ARCH stands with one container. */
export type Protection = "protected" | "unprotected" | "not-enabled";

/** One container runc knows on this node. */
export interface NodeContainer {
  /** runc's root of the container (resolved path). */
  readonly root: string;
  /** ARCH's namespace: the root's last element (`moby`, a containerd namespace, `runc`). */
  readonly namespace: string;
  readonly id: string;
  /** runc's status: `running`, `paused`, `stopped`, `created`, or `unknown`. */
  readonly status: string;
  readonly bundle: string;
  readonly pid: number;
  readonly protection: Protection;
  /** Why an opted-in container is not protected (one sentence). */
  readonly reason?: string;
  /** ARCH's record, when it describes this container. */
  readonly record?: ContainerRecord;
  /** `ARCH_CHECKPOINT_ID` of an unprotected container, if it set one (for the operator). */
  readonly requestedKey?: string;
}

/** The census of a node. */
export interface Census {
  readonly containers: readonly NodeContainer[];
  /** Roots that exist but that runc could not list, with why. */
  readonly problems: readonly string[];
}

/** Runs `runc --root <root> list --format json`; the seam tests replace. */
export type RuncLister = (root: string) => Promise<{ ok: true; list: RuncListEntry[] } | { ok: false; error: string }>;

/** What `runc list --format json` says of one container. */
export interface RuncListEntry {
  readonly id: string;
  readonly status: string;
  readonly bundle: string;
  readonly pid: number;
}

/** The bundle's environment and whether ARCH prepared its config.json (`org.criu.config` into ARCH's CRIU config dir). */
function bundleFacts(bundle: string, criuConfigDir: string): { env: Map<string, string>; prepared: boolean } {
  const env = new Map<string, string>();
  let prepared = false;
  try {
    const file = `${bundle}/config.json`;
    const info = Deno.statSync(file);
    if (!info.isFile || info.size > 16 * 1024 * 1024) return { env, prepared };
    const spec = JSON.parse(Deno.readTextFileSync(file)) as {
      process?: { env?: unknown };
      annotations?: Record<string, unknown>;
    };
    const list = Array.isArray(spec.process?.env) ? spec.process.env : [];
    for (const entry of list) {
      if (typeof entry !== "string") continue;
      const eq = entry.indexOf("=");
      if (eq > 0) env.set(entry.slice(0, eq), entry.slice(eq + 1));
    }
    const criu = spec.annotations?.["org.criu.config"];
    prepared = typeof criu === "string" && criu.startsWith(`${criuConfigDir.replace(/\/+$/, "")}/`);
  } catch { /* gone or unreadable: not opted in, as far as anyone can tell */ }
  return { env, prepared };
}

/** The runc roots below `bases`: a directory holding containers (`<id>/state.json`) is a root, else its subdirectories may be. */
export function runcRootsUnder(bases: readonly string[]): string[] {
  const roots = new Map<string, string>();
  const holdsContainers = (dir: string) => {
    try {
      for (const e of Deno.readDirSync(dir)) {
        if (e.isDirectory && exists(`${dir}/${e.name}/state.json`)) return true;
      }
    } catch { /* not a directory */ }
    return false;
  };
  for (const base of bases) {
    const real = resolvedPath(base);
    if (holdsContainers(real)) {
      roots.set(real, real);
      continue;
    }
    try {
      for (const e of Deno.readDirSync(real)) {
        const sub = `${real}/${e.name}`;
        if (e.isDirectory && holdsContainers(sub)) roots.set(sub, sub);
      }
    } catch { /* absent: the engine is not on this node */ }
  }
  return [...roots.values()].sort();
}

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * The census of this node: every container under the engines' runc roots and the roots of
 * ARCH's records, with its protection. Requires root (runc roots, bundles, state dir).
 */
export async function nodeCensus(
  host: { readonly stateDir: string; readonly criuConfigDir: string },
  list: RuncLister,
  extraRoots: readonly string[] = [],
): Promise<Census> {
  const registry = new Registry(host.stateDir);
  const records = registry.list();
  const roots = runcRootsUnder([...ENGINE_RUNC_ROOTS, ...extraRoots, ...records.map((r) => r.root)]);
  const problems: string[] = [];
  const containers: NodeContainer[] = [];
  const listed = await Promise.all(roots.map(async (root) => ({ root, result: await list(root) })));
  for (const { root, result } of listed) {
    if (!result.ok) {
      problems.push(`cannot list the containers of runc root "${root}": ${result.error}`);
      continue;
    }
    const namespace = lastElement(root);
    for (const c of result.list) {
      if (!isSafeSegment(c.id)) continue;
      const { env, prepared } = bundleFacts(c.bundle, host.criuConfigDir);
      const base = { root, namespace, id: c.id, status: c.status, bundle: c.bundle, pid: c.pid };
      if (env.get("ARCH_ENABLE") !== "1") {
        containers.push({ ...base, protection: "not-enabled" });
        continue;
      }
      let record: ContainerRecord | undefined;
      let unreadable = false;
      try {
        record = isSafeSegment(namespace) ? registry.get(namespace, c.id) : undefined;
      } catch {
        unreadable = true; // damaged: one bad record must not stop the census (nor finalize)
      }
      const sameRoot = record !== undefined && samePath(record.root, root);
      if (record !== undefined && sameRoot && describesRuncContainer(record.bundle, root, c.id)) {
        containers.push({ ...base, protection: "protected", record });
        continue;
      }
      const note = readNote(host.stateDir, namespace, c.id);
      const reason = note ??
        (unreadable
          ? `ARCH's record of "${namespace}/${c.id}" cannot be read (damaged)`
          : record !== undefined
          ? `ARCH's record of "${namespace}/${c.id}" describes another container (another bundle or runc root)`
          : prepared
          ? "ARCH prepared this container but has no record of it: its record was removed or lost"
          : `no ARCH record: the container opted in (ARCH_ENABLE=1) but was not created through arch-runc ` +
            `(is its engine's runtime "arch"?)`);
      // The tenant's own value: shown only when it is a key ARCH would accept as a path element.
      const requested = env.get("ARCH_CHECKPOINT_ID");
      containers.push({
        ...base,
        protection: "unprotected",
        reason,
        ...(requested !== undefined && isSafeSegment(requested) ? { requestedKey: requested } : {}),
      });
    }
  }
  dropStaleNotes(host.stateDir, roots, listed, containers);
  return { containers, problems };
}

/** Removes the notes of containers runc no longer has, in the namespaces whose roots were listed. */
function dropStaleNotes(
  stateDir: string,
  roots: readonly string[],
  listed: readonly { root: string; result: Awaited<ReturnType<RuncLister>> }[],
  containers: readonly NodeContainer[],
): void {
  const complete = new Set(roots.map(lastElement));
  for (const { root, result } of listed) if (!result.ok) complete.delete(lastElement(root));
  const live = new Set(containers.map((c) => `${c.namespace}/${c.id}`));
  for (const namespace of complete) {
    try {
      for (const e of Deno.readDirSync(`${notesDir(stateDir)}/${namespace}`)) {
        const id = e.name.replace(/\.json$/, "");
        if (e.isFile && e.name.endsWith(".json") && !live.has(`${namespace}/${id}`)) {
          Deno.removeSync(`${notesDir(stateDir)}/${namespace}/${e.name}`);
        }
      }
    } catch { /* no notes there */ }
  }
}

/** Lists a runc root with `runc list --format json` (bounded in time). */
export function runcLister(runc: string, timeoutMs = 5_000): RuncLister {
  return async (root) => {
    const { Runc, RuncError } = await import("../runc/client.ts");
    try {
      const list = await new Runc({ runc, global: { root }, id: "" }).list(timeoutMs);
      return { ok: true, list: list.filter((e) => typeof e.id === "string") as unknown as RuncListEntry[] };
    } catch (error) {
      if (error instanceof SyntaxError) return { ok: false, error: "runc printed no JSON" };
      if (error instanceof RuncError) {
        return { ok: false, error: error.stderrTail.split(" | ").at(-1) || `exit status ${error.status}` };
      }
      return { ok: false, error: `cannot run "${runc}": ${errorMessage(error)}` };
    }
  };
}

/** Puts the census's counts of running (or paused) containers into the node's metrics (`arch_unprotected_containers`). */
export function recordCensus(host: { stateDir: string; metricsFile: string }, census: Census): void {
  const live = census.containers.filter((c) => c.status === "running" || c.status === "paused");
  const count = (p: string) => live.filter((c) => c.protection === p).length;
  recordMetrics(host.stateDir, host.metricsFile, {
    kind: "census",
    result: "ok",
    containers: {
      protected: count("protected"),
      unprotected: count("unprotected"),
      unlisted_roots: census.problems.length,
    },
    at: Date.now(),
  });
}
