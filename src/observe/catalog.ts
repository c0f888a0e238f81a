/**
 * The checkpoints on this node's checkpoint roots, as `arch ls`, `arch inspect` and `arch gc`
 * see them: every key directory (`<root>/<scope>/<key>/`, see `store/store.ts`) found under
 * the host's allowed roots (`checkpointRoots`, `defaultCheckpointRoot`, `sharedFsRoots`), and
 * in each one its committed, consumed, superseded, quarantined and temporary directories.
 *
 * Guarantees: read-only. Never follows a symbolic link: directories are listed with their
 * entries' own types (`lstat`), a symlink is skipped (only a key's `current` link is read, and
 * only as a name `ckpt-*` inside the key directory), and a directory that is not root-owned or
 * is writable by group or others is not entered (someone else could swap it for a link). A
 * root that is itself unsafe is reported, not walked. The walk is bounded in depth and in
 * directories visited, and skips shared-FS work trees (`work/`), which hold job data.
 */

import { type ClaimOwner, isStale } from "../store/claim.ts";
import { rootProblem } from "../store/safe_dir.ts";
import { isSafeSegment } from "../util/paths.ts";

/** What a checkpoint directory of a key is. */
export type CheckpointStatus =
  /** The key's current checkpoint, not yet restored. */
  | "committed"
  /** The key's current checkpoint, restored once already. */
  | "consumed"
  /** A committed checkpoint that is no longer current (left by an interrupted commit). */
  | "superseded"
  /** Moved aside after a failed restore. */
  | "quarantined"
  /** Being written: the key's claim is held by a live process. */
  | "in-progress"
  /** Left by a writer that died: nobody holds the key's claim. */
  | "stale";

/** The key's claim, as found. */
export interface ClaimInfo {
  readonly op: string;
  readonly pid: number;
  readonly host: string;
  readonly at: string;
  /** Whether its holder is alive (stale claims are broken by the next operation). */
  readonly live: boolean;
}

/** One checkpoint directory of a key. */
export interface CheckpointEntry {
  /** The checkpoint root the key lives under (`<root>/<scope>/<key>`). */
  readonly root: string;
  readonly scope: string;
  readonly key: string;
  readonly keyDir: string;
  /** Directory name inside the key (`ckpt-…`, `quarantine-…`, `.tmp-…`). */
  readonly name: string;
  readonly path: string;
  readonly status: CheckpointStatus;
  /** When it was made: the manifest's `createdAt`, else the directory's mtime (ISO). */
  readonly createdAt: string;
  readonly bytes: number;
  readonly files: number;
  /** Who restored it (`consumed`). */
  readonly consumedBy?: { readonly container: string; readonly node: string; readonly at: string };
  /** The container that was checkpointed (from the manifest). */
  readonly containerId?: string;
  readonly namespace?: string;
}

/** A key directory and its checkpoints. */
export interface KeyEntry {
  readonly root: string;
  readonly scope: string;
  readonly key: string;
  readonly keyDir: string;
  readonly claim?: ClaimInfo;
  readonly checkpoints: readonly CheckpointEntry[];
}

/** The result of a walk: keys found, and roots or directories that were not entered, with why. */
export interface Catalog {
  readonly keys: readonly KeyEntry[];
  readonly skipped: readonly string[];
}

/** Bounds of the walk (tests lower them). */
export interface WalkLimits {
  readonly maxDepth: number;
  readonly maxDirs: number;
}

const LIMITS: WalkLimits = { maxDepth: 8, maxDirs: 20_000 };
const CLAIM_TTL_MS = 120_000;

/** The roots ARCH keeps checkpoints under, per the host configuration (deduplicated). */
export function checkpointRootsOf(
  host: { checkpointRoots: readonly string[]; defaultCheckpointRoot: string; sharedFsRoots: readonly string[] },
): { path: string; shared: boolean }[] {
  const seen = new Set<string>();
  const out: { path: string; shared: boolean }[] = [];
  const add = (path: string, shared: boolean) => {
    const p = path.replace(/\/+$/, "") || "/";
    if (!seen.has(p)) {
      seen.add(p);
      out.push({ path: p, shared });
    }
  };
  for (const r of host.checkpointRoots) add(r, false);
  add(host.defaultCheckpointRoot, false);
  for (const r of host.sharedFsRoots) add(r, true);
  return out;
}

function safeDir(info: Deno.FileInfo): boolean {
  return info.isDirectory && !info.isSymlink && info.uid === 0 && (info.mode === null || (info.mode & 0o022) === 0);
}

function lstat(path: string): Deno.FileInfo | undefined {
  try {
    return Deno.lstatSync(path);
  } catch {
    return undefined;
  }
}

function list(dir: string): Deno.DirEntry[] {
  try {
    return [...Deno.readDirSync(dir)];
  } catch {
    return [];
  }
}

const KEY_MARKERS = /^(ckpt-|quarantine-|\.tmp-)/;

function isKeyDir(entries: readonly Deno.DirEntry[]): boolean {
  return entries.some((e) =>
    (e.name === "current" && e.isSymlink) || (e.isDirectory && (KEY_MARKERS.test(e.name) || e.name === ".claim"))
  );
}

/** Walks `roots` (see the module doc) and returns every key directory found under them. */
export function scanCheckpoints(
  roots: readonly { path: string; shared: boolean }[],
  now = Date.now(),
  limits: WalkLimits = LIMITS,
): Catalog {
  const keys = new Map<string, KeyEntry>();
  const skipped: string[] = [];
  let visited = 0;
  const walk = (dir: string, depth: number, shared: boolean) => {
    if (visited++ >= limits.maxDirs) {
      if (visited === limits.maxDirs + 1) skipped.push(`stopped after ${limits.maxDirs} directories`);
      return;
    }
    const entries = list(dir);
    if (isKeyDir(entries)) {
      if (!keys.has(dir)) {
        const key = readKey(dir, entries, now);
        if (key !== undefined) keys.set(dir, key);
      }
      return;
    }
    if (depth >= limits.maxDepth) return;
    for (const e of entries.sort((a, b) => a.name.localeCompare(b.name))) {
      if (!e.isDirectory || e.isSymlink) continue; // DirEntry types are the entry's own (no follow)
      if (shared && e.name === "work") continue; // job data of shared-FS mode
      if (e.name.startsWith(".removed-")) continue; // a key being deleted
      const path = `${dir}/${e.name}`;
      const info = lstat(path);
      if (info === undefined || !safeDir(info)) continue;
      walk(path, depth + 1, shared);
    }
  };
  for (const root of roots) {
    const problem = rootProblem(root.path);
    if (problem !== undefined) {
      if (!problem.endsWith("does not exist")) skipped.push(`checkpoint root ${problem}: not read`);
      continue;
    }
    walk(root.path, 0, root.shared);
  }
  const sorted = [...keys.values()].sort((a, b) =>
    a.scope.localeCompare(b.scope) || a.key.localeCompare(b.key) || a.keyDir.localeCompare(b.keyDir)
  );
  return { keys: sorted, skipped };
}

function readClaim(keyDir: string, now: number): ClaimInfo | undefined {
  const dir = `${keyDir}/.claim`;
  const info = lstat(dir);
  if (info === undefined || !info.isDirectory) return undefined;
  let owner: ClaimOwner | undefined;
  let mtime = info.mtime?.getTime();
  const file = lstat(`${dir}/owner.json`);
  if (file?.isFile && file.size < 4096) {
    try {
      owner = JSON.parse(Deno.readTextFileSync(`${dir}/owner.json`)) as ClaimOwner;
      mtime = file.mtime?.getTime();
    } catch { /* being written */ }
  }
  const live = !isStale(owner, mtime, Deno.hostname(), now, CLAIM_TTL_MS);
  return {
    op: String(owner?.op ?? "?"),
    pid: Number(owner?.pid ?? 0),
    host: String(owner?.host ?? "?"),
    at: String(owner?.at ?? ""),
    live,
  };
}

function tree(path: string): { bytes: number; files: number } {
  let bytes = 0;
  let files = 0;
  for (const e of list(path)) {
    const p = `${path}/${e.name}`;
    if (e.isDirectory && !e.isSymlink) {
      const sub = tree(p);
      bytes += sub.bytes;
      files += sub.files;
    } else if (e.isFile) {
      bytes += lstat(p)?.size ?? 0;
      files++;
    }
  }
  return { bytes, files };
}

function readSmallJson(path: string, max: number): Record<string, unknown> | undefined {
  const info = lstat(path);
  if (info === undefined || !info.isFile || info.size > max) return undefined;
  try {
    const v = JSON.parse(Deno.readTextFileSync(path));
    return v !== null && typeof v === "object" && !Array.isArray(v) ? v as Record<string, unknown> : undefined;
  } catch {
    return undefined;
  }
}

function readKey(keyDir: string, entries: readonly Deno.DirEntry[], now: number): KeyEntry | undefined {
  const key = keyDir.slice(keyDir.lastIndexOf("/") + 1);
  const scopeDir = keyDir.slice(0, keyDir.lastIndexOf("/"));
  const scope = scopeDir.slice(scopeDir.lastIndexOf("/") + 1);
  const root = scopeDir.slice(0, scopeDir.lastIndexOf("/")) || "/";
  if (!isSafeSegment(key) || !isSafeSegment(scope)) return undefined;
  let current: string | undefined;
  try {
    const target = Deno.readLinkSync(`${keyDir}/current`);
    if (isSafeSegment(target) && target.startsWith("ckpt-")) current = target;
  } catch { /* no committed checkpoint */ }
  const claim = readClaim(keyDir, now);
  const checkpoints: CheckpointEntry[] = [];
  for (const e of entries) {
    if (!e.isDirectory || e.isSymlink || !KEY_MARKERS.test(e.name)) continue;
    const path = `${keyDir}/${e.name}`;
    const info = lstat(path);
    if (info === undefined || !info.isDirectory) continue;
    const manifest = e.name.startsWith(".tmp-") ? undefined : readSmallJson(`${path}/manifest.json`, 64 << 20);
    const consumed = readSmallJson(`${path}/consumed`, 4096);
    let status: CheckpointStatus;
    if (e.name.startsWith(".tmp-")) status = claim?.live ? "in-progress" : "stale";
    else if (e.name.startsWith("quarantine-")) status = "quarantined";
    else if (e.name !== current) status = "superseded";
    else status = consumed !== undefined ? "consumed" : "committed";
    const createdAt = typeof manifest?.createdAt === "string"
      ? manifest.createdAt
      : (info.mtime ?? new Date(now)).toISOString();
    const str = (v: unknown) => String(v ?? "?").slice(0, 256);
    checkpoints.push({
      root,
      scope,
      key,
      keyDir,
      name: e.name,
      path,
      status,
      createdAt,
      ...tree(path),
      ...(consumed !== undefined
        ? { consumedBy: { container: str(consumed.container), node: str(consumed.node), at: str(consumed.at) } }
        : {}),
      ...(typeof manifest?.containerId === "string" ? { containerId: manifest.containerId } : {}),
      ...(typeof manifest?.namespace === "string" ? { namespace: manifest.namespace } : {}),
    });
  }
  checkpoints.sort((a, b) => b.createdAt.localeCompare(a.createdAt) || b.name.localeCompare(a.name));
  return { root, scope, key, keyDir, ...(claim !== undefined ? { claim } : {}), checkpoints };
}

/** One key directory read again (e.g. under its claim); `undefined` if it is gone or not a safe directory. */
export function readKeyDir(keyDir: string, now = Date.now()): KeyEntry | undefined {
  const info = lstat(keyDir);
  if (info === undefined || !safeDir(info)) return undefined;
  return readKey(keyDir, list(keyDir), now);
}

/**
 * The keys matching `wanted`: `key` or `scope/key`. An empty list when none does; the caller
 * says which when several do.
 */
export function findKeys(catalog: Catalog, wanted: string): KeyEntry[] {
  const slash = wanted.indexOf("/");
  return catalog.keys.filter((k) =>
    slash < 0 ? k.key === wanted : k.scope === wanted.slice(0, slash) && k.key === wanted.slice(slash + 1)
  );
}
