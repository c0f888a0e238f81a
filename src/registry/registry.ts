/**
 * The node's record of ARCH-enabled containers: one small JSON file per container at
 * `<stateDir>/registry/<namespace>/<id>.json` (the state dir is on tmpfs, `/run/arch` by
 * default, so the record lives as long as the containers it describes: until reboot).
 *
 * Guarantees: records are written atomically (temp file + rename), directories are 0700 and
 * files 0600, and a namespace or id that is not a safe path element is refused. Lookups are
 * one `stat`/`read` so that the runc wrapper can afford them on every call.
 *
 * A restored container also has a mark `<id>.restored` beside its record: a hard link to runc's
 * `<root>/<id>/state.json` of the restored container, made after the record is written and
 * removed before it changes. The launcher answers the engine's `start` of that container (a
 * no-op) without starting Deno while the mark and runc's state are the same file
 * (`wrapper/fast_path.ts`): runc replaces its state file by a rename, and a new container of the id
 * gets a new one, so the mark never speaks for another container, whatever the clock does.
 * Where the link cannot be made (another file system), there is no mark and no shortcut.
 */

import { isSafeSegment } from "../util/paths.ts";

/** What ARCH knows about one enabled container. */
export interface ContainerRecord {
  readonly namespace: string;
  readonly id: string;
  /** runc's `--root` for this container. */
  readonly root: string;
  readonly bundle: string;
  /** Checkpoint identity (see DESIGN.md key rules). */
  readonly key: string;
  readonly createdAt: string;
  /** Whether `create` restored this container from a checkpoint (then `start` is a no-op). */
  readonly restored?: boolean;
  /** Other ARCH state later stages attach (checkpoint status...). */
  readonly [extra: string]: unknown;
}

/**
 * The pid of the container's init process, from the pid file runc wrote at create (the
 * engine's `--pid-file`, recorded as `pidFile`); `undefined` when there is none, it cannot be
 * read, or it does not hold a pid.
 */
export function initPid(record: ContainerRecord): number | undefined {
  if (typeof record.pidFile !== "string") return undefined;
  try {
    const pid = Number(Deno.readTextFileSync(record.pidFile).trim());
    return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** The node's container records, under `<stateDir>/registry` (see the module doc). */
export class Registry {
  constructor(readonly stateDir: string) {}

  /** Path of the record of `namespace/id`; throws on an unsafe segment. */
  path(namespace: string, id: string): string {
    if (!isSafeSegment(namespace)) throw new Error(`unsafe namespace "${namespace}"`);
    if (!isSafeSegment(id)) throw new Error(`unsafe container id "${id}"`);
    return `${this.stateDir}/registry/${namespace}/${id}.json`;
  }

  /** Path of the mark of a restored container (see the module doc). */
  restoredMark(namespace: string, id: string): string {
    return this.path(namespace, id).replace(/\.json$/, RESTORED_MARK);
  }

  /** Reads a record, or `undefined` when the container is not an ARCH container. */
  get(namespace: string, id: string): ContainerRecord | undefined {
    try {
      return JSON.parse(Deno.readTextFileSync(this.path(namespace, id))) as ContainerRecord;
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return undefined;
      throw error;
    }
  }

  /** Writes (or replaces) a record atomically; the restored mark goes before, and comes back after it if restored. */
  put(record: ContainerRecord): void {
    const path = this.path(record.namespace, record.id);
    const mark = this.restoredMark(record.namespace, record.id);
    const dir = path.slice(0, path.lastIndexOf("/"));
    Deno.mkdirSync(dir, { recursive: true, mode: 0o700 });
    removeIfPresent(mark);
    const tmp = `${path}.${Deno.pid}.tmp`;
    Deno.writeTextFileSync(tmp, JSON.stringify(record, null, 2) + "\n", { mode: 0o600 });
    Deno.renameSync(tmp, path);
    if (record.restored === true && typeof record.root === "string") {
      try {
        Deno.linkSync(`${record.root.replace(/\/+$/, "")}/${record.id}/state.json`, mark);
      } catch { /* no mark: the engine's start takes the normal path */ }
    }
  }

  /** Removes a record (its restored mark first); absent is fine. */
  remove(namespace: string, id: string): void {
    removeIfPresent(this.restoredMark(namespace, id));
    removeIfPresent(this.path(namespace, id));
  }

  /** Every record on the node, optionally of one namespace. Unreadable records are skipped. */
  list(namespace?: string): ContainerRecord[] {
    const base = `${this.stateDir}/registry`;
    const namespaces = namespace !== undefined ? [namespace] : readDirNames(base, (e) => e.isDirectory);
    const out: ContainerRecord[] = [];
    for (const ns of namespaces) {
      for (const name of readDirNames(`${base}/${ns}`, (e) => e.isFile && e.name.endsWith(".json"))) {
        try {
          const record = this.get(ns, name.slice(0, -".json".length));
          if (record !== undefined) out.push(record);
        } catch { /* half-written or damaged: one bad record must not hide the others */ }
      }
    }
    return out.sort((a, b) => a.namespace.localeCompare(b.namespace) || a.id.localeCompare(b.id));
  }
}

/** Suffix of a restored container's mark beside its record (`<id>.restored`). */
export const RESTORED_MARK = ".restored";

function removeIfPresent(path: string): void {
  try {
    Deno.removeSync(path);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
}

function readDirNames(dir: string, keep: (e: Deno.DirEntry) => boolean): string[] {
  try {
    return [...Deno.readDirSync(dir)].filter(keep).map((e) => e.name).sort();
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return [];
    throw error;
  }
}
