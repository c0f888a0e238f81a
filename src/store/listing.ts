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
 *
 * A directory is a key directory only on proof: a `current` link naming `ckpt-*`, a
 * `ckpt-*`/`quarantine-*` directory holding `manifest.json`, or a claim holding
 * `owner.json`; a lone temporary or empty claim directory counts only when it holds nothing
 * but what the store puts there and no child is a key directory. So a scope whose keys are
 * named like the store's entries (refused since, see `reservedKeyProblem`, but maybe on disk)
 * is never taken for a key. A claim that is not one `store/claim.ts` makes is reported as not
 * `understood` (and live).
 *
 * Files (`owner.json`, `manifest.json`, `consumed`) are read only as small regular files,
 * opened without following a link or blocking (`util/dirfd.ts`): a planted FIFO never hangs.
 */

import {
  CHECKPOINT_PREFIX,
  CRIU_DIR,
  CRIU_WORK_DIR,
  CURRENT_LINK,
  MANIFEST_FILE,
  QUARANTINE_PREFIX,
  REMOVED_PREFIX,
  ROOTFS_ARCHIVE,
  TEMPLATES_DIR,
  TMP_PREFIX,
  UNLISTED,
} from "./layout.ts";
import { CLAIM_DIR, type ClaimOwner, isStale } from "./claim.ts";

import { rootProblem } from "./safe_dir.ts";
import { isSafeSegment } from "../util/paths.ts";
import { readRegularFile } from "../util/dirfd.ts";

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
  /** Whether its holder is alive (stale claims are broken by the next operation); always when not `understood`. */
  readonly live: boolean;
  /** Whether it is a claim as `store/claim.ts` makes it (a directory holding a complete `owner.json`). */
  readonly understood: boolean;
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
  /**
   * A template (`store/templates.ts`): `scope` is then `.templates` and `root` its scope's
   * directory (where the template's store lives); this is the scope it belongs to.
   */
  readonly templateOf?: string;
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

const MARKER_PREFIXES = [CHECKPOINT_PREFIX, QUARANTINE_PREFIX, TMP_PREFIX];
/** What a checkpoint directory (and a temporary one being written) may hold at its top. */
const CHECKPOINT_ENTRIES = new Set([ROOTFS_ARCHIVE, CRIU_DIR, CRIU_WORK_DIR, ...UNLISTED]);

/** A checkpoint directory's name: `ckpt-*`, `quarantine-*` or `.tmp-*`. */
function isMarker(name: string): boolean {
  return MARKER_PREFIXES.some((p) => name.startsWith(p));
}

function isFile(path: string): boolean {
  return lstat(path)?.isFile === true;
}

/** `dir` holds only what a checkpoint directory holds, and its `criu`/`work` have no subdirectory. */
function looksLikeCheckpoint(dir: string): boolean {
  for (const e of list(dir)) {
    if (!CHECKPOINT_ENTRIES.has(e.name)) return false;
    if (e.isDirectory && list(`${dir}/${e.name}`).some((sub) => sub.isDirectory)) return false;
  }
  return true;
}

/** `dir` is the store's claim directory: nothing but (once written) `owner.json`. */
function looksLikeClaim(dir: string): boolean {
  return list(dir).every((e) => e.name === "owner.json" && e.isFile);
}

/**
 * Whether `dir` (with `entries`) is a key directory. Proof (strong): a `current` symlink naming
 * `ckpt-*`, a `ckpt-*`/`quarantine-*` directory holding a regular `manifest.json`, or a claim
 * holding `owner.json`: a key directory never holds these names as files, so a scope whose
 * keys have such names (refused since, but possibly on disk) is not taken for a key. Weaker
 * evidence (a temporary or empty claim directory alone) counts only when the entry holds
 * nothing but what the store puts there and no child of `dir` is itself a key directory.
 */
function isKeyDir(dir: string, entries: readonly Deno.DirEntry[]): boolean {
  let weak = false;
  for (const e of entries) {
    const path = `${dir}/${e.name}`;
    if (e.name === CURRENT_LINK && e.isSymlink) {
      try {
        const target = Deno.readLinkSync(path);
        if (isSafeSegment(target) && target.startsWith(CHECKPOINT_PREFIX)) return true;
      } catch { /* gone */ }
      continue;
    }
    if (!e.isDirectory || e.isSymlink) continue;
    if (e.name.startsWith(CHECKPOINT_PREFIX) || e.name.startsWith(QUARANTINE_PREFIX)) {
      if (isFile(`${path}/${MANIFEST_FILE}`)) return true;
    } else if (e.name === CLAIM_DIR) {
      if (isFile(`${path}/owner.json`) && looksLikeClaim(path)) return true;
      if (looksLikeClaim(path)) weak = true;
    } else if (e.name.startsWith(TMP_PREFIX)) {
      if (looksLikeCheckpoint(path)) weak = true;
    }
  }
  if (!weak) return false;
  // Weak evidence only: not when a child is a key directory (then `dir` is a scope).
  return !entries.some((e) => {
    if (!e.isDirectory || e.isSymlink) return false;
    const path = `${dir}/${e.name}`;
    const sub = list(path);
    return sub.some((s) => s.name === CURRENT_LINK && s.isSymlink) ||
      sub.some((s) => s.isDirectory && isMarker(s.name) && isFile(`${path}/${s.name}/${MANIFEST_FILE}`));
  });
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
    if (isKeyDir(dir, entries)) {
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
      if (e.name.startsWith(REMOVED_PREFIX)) continue; // a key being deleted
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
  const dir = `${keyDir}/${CLAIM_DIR}`;
  const info = lstat(dir);
  if (info === undefined) return undefined;
  let owner: ClaimOwner | undefined;
  let mtime = info.mtime?.getTime();
  const file = lstat(`${dir}/owner.json`);
  if (info.isDirectory && file?.isFile && file.size < 4096) {
    try {
      const v = JSON.parse(readText(`${dir}/owner.json`, 4096)) as Partial<ClaimOwner> | null;
      if (
        typeof v?.host === "string" && typeof v.pid === "number" && typeof v.nonce === "string" &&
        typeof v.op === "string"
      ) owner = v as ClaimOwner;
      mtime = file.mtime?.getTime();
    } catch { /* being written */ }
  }
  const understood = info.isDirectory && owner !== undefined && looksLikeClaim(dir);
  // Not understood: counted live (a claim just taken, or something else): never broken by gc.
  const live = !understood || !isStale(owner, mtime, Deno.hostname(), now, CLAIM_TTL_MS);
  return {
    op: String(owner?.op ?? "?"),
    pid: Number(owner?.pid ?? 0),
    host: String(owner?.host ?? "?"),
    at: String(owner?.at ?? ""),
    live,
    understood,
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

/** The regular file `path` as text, at most `max` bytes, never through a link nor blocking; throws otherwise. */
function readText(path: string, max: number): string {
  return new TextDecoder().decode(readRegularFile(path, max));
}

function readSmallJson(path: string, max: number): Record<string, unknown> | undefined {
  const info = lstat(path);
  if (info === undefined || !info.isFile || info.size > max) return undefined;
  try {
    const v = JSON.parse(readText(path, max));
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
  const templateOf = scope === TEMPLATES_DIR ? root.slice(root.lastIndexOf("/") + 1) : undefined;
  let current: string | undefined;
  try {
    const target = Deno.readLinkSync(`${keyDir}/${CURRENT_LINK}`);
    if (isSafeSegment(target) && target.startsWith(CHECKPOINT_PREFIX)) current = target;
  } catch { /* no committed checkpoint */ }
  const claim = readClaim(keyDir, now);
  const checkpoints: CheckpointEntry[] = [];
  for (const e of entries) {
    if (!e.isDirectory || e.isSymlink || !isMarker(e.name)) continue;
    const path = `${keyDir}/${e.name}`;
    const info = lstat(path);
    if (info === undefined || !info.isDirectory) continue;
    const manifest = e.name.startsWith(TMP_PREFIX) ? undefined : readSmallJson(`${path}/${MANIFEST_FILE}`, 64 << 20);
    const consumed = readSmallJson(`${path}/consumed`, 4096);
    let status: CheckpointStatus;
    if (e.name.startsWith(TMP_PREFIX)) status = claim?.live ? "in-progress" : "stale";
    else if (e.name.startsWith(QUARANTINE_PREFIX)) status = "quarantined";
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
  return {
    root,
    scope,
    key,
    keyDir,
    ...(templateOf !== undefined ? { templateOf } : {}),
    ...(claim !== undefined ? { claim } : {}),
    checkpoints,
  };
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
  if (wanted.startsWith(TEMPLATE_PREFIX)) {
    // `template:<name>` or `template:<scope>/<name>`
    const name = wanted.slice(TEMPLATE_PREFIX.length);
    const slash = name.indexOf("/");
    return catalog.keys.filter((k) =>
      k.templateOf !== undefined &&
      (slash < 0 ? k.key === name : k.templateOf === name.slice(0, slash) && k.key === name.slice(slash + 1))
    );
  }
  const slash = wanted.indexOf("/");
  return catalog.keys.filter((k) =>
    k.templateOf === undefined &&
    (slash < 0 ? k.key === wanted : k.scope === wanted.slice(0, slash) && k.key === wanted.slice(slash + 1))
  );
}

/** How `arch inspect` and `arch unpublish` name a template: `template:<name>` or `template:<scope>/<name>`. */
export const TEMPLATE_PREFIX = "template:";
