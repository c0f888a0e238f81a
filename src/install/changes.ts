/**
 * The file changes `arch install` / `arch uninstall` make, and their record. A change is
 * planned first (pure: before/after text per file), shown as a unified diff (`--dry-run`),
 * then applied: every file is written atomically (`util/atomic.ts`: random O_EXCL temporary
 * file in the same directory, fsync, rename, fsync of the directory), keeps the mode and owner
 * of the file it replaces, and directories created for it are recorded. A file that is a
 * symlink (a daemon.json or config.toml kept elsewhere) is changed where the link points: the
 * link stays, the record keeps the resolved path, and uninstall restores that file; a link to
 * nothing is refused before anything is written. The install record (default
 * `/var/lib/arch/install.json`, root-only 0600 in a 0700 directory) keeps, per file, the
 * bytes that were there before ARCH's first change and a hash of what ARCH wrote, so
 * `arch uninstall` puts back exactly what was there, and a file someone changed since is
 * reverted by meaning (the target's own rule) instead of overwritten.
 */

import { writeFileAtomic } from "../util/atomic.ts";
import { errorMessage, UsageError } from "../util/errors.ts";

/** Default path of the install record. */
export const DEFAULT_RECORD = "/var/lib/arch/install.json";

/** One file to change: its text before (`null`: absent) and after (`null`: remove it). */
export interface FileChange {
  /** Which target (`containerd`, `docker`, ...) the change belongs to. */
  readonly target: string;
  readonly path: string;
  readonly before: string | null;
  readonly after: string | null;
  /** Mode of a file created by the change (an existing file keeps its own). */
  readonly mode?: number;
}

/** What the record keeps for one file ARCH changed. */
export interface RecordEntry {
  readonly target: string;
  readonly path: string;
  /** When `path` is a symlink: the file it pointed to, which ARCH changed (the link stays). */
  readonly resolved?: string;
  /** The file's bytes (base64) before ARCH's first change, `null` if it did not exist. */
  readonly original: string | null;
  readonly originalMode: number | null;
  /** sha256 (hex) of what ARCH wrote last, `null` if ARCH removed the file. */
  readonly installed: string | null;
  /** Directories created for this file, deepest first (removed at uninstall if empty). */
  readonly createdDirs: readonly string[];
}

/** The install record. */
export interface InstallRecord {
  readonly version: 1;
  readonly entries: readonly RecordEntry[];
  /** systemd units ARCH enabled (disabled at uninstall). */
  readonly enabledUnits: readonly string[];
}

const enc = new TextEncoder();
const dec = new TextDecoder();

/** Hex sha256 of `text`. */
export async function sha256(text: string | Uint8Array): Promise<string> {
  const bytes = typeof text === "string" ? enc.encode(text) : text;
  const digest = await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** The text of `path`, or `null` if it does not exist. */
export function readText(path: string): string | null {
  try {
    return Deno.readTextFileSync(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return null;
    throw error;
  }
}

/** `base64` of bytes. */
function toBase64(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

function fromBase64(text: string): Uint8Array {
  return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
}

/** Reads the record at `path` (an empty one if absent). Throws with one sentence if it is damaged. */
export function loadRecord(path: string): InstallRecord {
  const text = readText(path);
  if (text === null) return { version: 1, entries: [], enabledUnits: [] };
  try {
    const value = JSON.parse(text) as InstallRecord;
    if (value.version !== 1 || !Array.isArray(value.entries)) throw new Error("unknown format");
    return { version: 1, entries: value.entries, enabledUnits: value.enabledUnits ?? [] };
  } catch (error) {
    throw new Error(
      `the install record "${path}" is damaged (${errorMessage(error)}): restore it from a backup or remove it`,
    );
  }
}

function saveRecord(path: string, record: InstallRecord): void {
  const dir = path.slice(0, path.lastIndexOf("/")) || "/";
  Deno.mkdirSync(dir, { recursive: true, mode: 0o700 });
  if (record.entries.length === 0 && record.enabledUnits.length === 0) {
    try {
      Deno.removeSync(path);
    } catch { /* absent */ }
    return;
  }
  writeKeeping(path, JSON.stringify(record, null, 2) + "\n", { mode: 0o600, forceMode: true });
}

/** Creates the missing parents of `path` (0755); returns those created, deepest first. */
function ensureParents(path: string): string[] {
  const created: string[] = [];
  let dir = path.slice(0, path.lastIndexOf("/"));
  const missing: string[] = [];
  while (dir !== "" && dir !== "/") {
    try {
      Deno.statSync(dir);
      break;
    } catch {
      missing.push(dir);
      dir = dir.slice(0, dir.lastIndexOf("/"));
    }
  }
  for (const d of missing.reverse()) {
    Deno.mkdirSync(d, { mode: 0o755 });
    created.unshift(d);
  }
  return created;
}

/**
 * The file a change of `path` writes: `path` itself, or the file it links to when it is a
 * symlink (the link is kept). Throws a {@link UsageError} for a link to nothing.
 */
export function writeTarget(path: string): string {
  let link: string;
  try {
    if (!Deno.lstatSync(path).isSymlink) return path;
    link = Deno.readLinkSync(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return path;
    throw error;
  }
  try {
    return Deno.realPathSync(path);
  } catch {
    throw new UsageError(
      `"${path}" is a symlink to "${link}", which does not exist: create that file or replace the link, then run again`,
    );
  }
}

/**
 * Writes `data` to `path` atomically ({@link writeFileAtomic}), keeping an existing file's
 * mode (unless `forceMode`) and owner.
 */
function writeKeeping(
  path: string,
  data: string | Uint8Array,
  opts: { mode?: number; forceMode?: boolean } = {},
): void {
  let mode = opts.mode ?? 0o644;
  let owner: { uid: number; gid: number } | undefined;
  try {
    const info = Deno.statSync(path);
    if (!opts.forceMode && info.mode !== null) mode = info.mode & 0o7777;
    if (info.uid !== null && info.gid !== null) owner = { uid: info.uid, gid: info.gid };
  } catch { /* new file */ }
  writeFileAtomic(path, data, { mode, ...(owner !== undefined ? { owner } : {}) });
}

/** Reports what `applyChanges` did. */
export interface Applied {
  readonly changed: readonly string[];
}

/**
 * Applies install changes and records, per file, what was there before ARCH's first change.
 * Changes whose before and after are equal are skipped. A symlinked file is changed where it
 * points ({@link writeTarget}); a link to nothing refuses the whole call before any write.
 * Requires write access to the files and the record.
 */
export async function applyInstall(changes: readonly FileChange[], recordPath: string): Promise<Applied> {
  const record = loadRecord(recordPath);
  const entries = [...record.entries];
  const changed: string[] = [];
  const todo = changes.filter((c) => c.before !== c.after);
  const targets = todo.map((c) => writeTarget(c.path)); // refusals first: nothing written yet
  for (const [i, change] of todo.entries()) {
    const file = targets[i]!;
    const index = entries.findIndex((e) => e.path === change.path);
    const prior = index >= 0 ? entries[index] : undefined;
    let originalBytes: Uint8Array | null = null;
    let originalMode: number | null = null;
    try {
      originalBytes = Deno.readFileSync(file);
      originalMode = (Deno.statSync(file).mode ?? 0o644) & 0o7777;
    } catch { /* absent */ }
    const createdDirs = change.after !== null ? ensureParents(file) : [];
    const entry: RecordEntry = {
      target: change.target,
      path: change.path,
      ...(file !== change.path ? { resolved: file } : {}),
      original: prior !== undefined ? prior.original : originalBytes === null ? null : toBase64(originalBytes),
      originalMode: prior !== undefined ? prior.originalMode : originalMode,
      installed: change.after === null ? null : await sha256(change.after),
      createdDirs: [...createdDirs, ...(prior?.createdDirs ?? [])],
    };
    // The record first: a crash after it leaves a record of a change not made, which uninstall handles.
    if (index >= 0) entries[index] = entry;
    else entries.push(entry);
    saveRecord(recordPath, { ...record, entries });
    if (change.after === null) {
      try {
        Deno.removeSync(change.path);
      } catch (error) {
        if (!(error instanceof Deno.errors.NotFound)) throw error;
      }
    } else {
      writeKeeping(file, change.after, change.mode !== undefined ? { mode: change.mode } : {});
    }
    changed.push(change.path);
  }
  return { changed };
}

/** The file a record entry's changes went to: the symlink's target when `path` was one, else `path`. */
export function recordedFile(entry: Pick<RecordEntry, "path" | "resolved">): string {
  return entry.resolved ?? entry.path;
}

/** The original text of a recorded file (`null`: it did not exist). */
export function originalText(entry: RecordEntry): string | null {
  return entry.original === null ? null : dec.decode(fromBase64(entry.original));
}

/**
 * Applies uninstall changes: writes each file's `after` (restoring the recorded mode when the
 * file is re-created; a symlinked file is written where the install wrote it, `resolved`, and
 * the link stays), removes empty directories ARCH created, and drops the entries of `target`
 * from the record.
 */
export function applyUninstall(
  target: string,
  changes: readonly FileChange[],
  recordPath: string,
): Applied {
  const record = loadRecord(recordPath);
  const changed: string[] = [];
  for (const change of changes) {
    const entry = record.entries.find((e) => e.path === change.path);
    const file = recordedFile(entry ?? { path: change.path });
    if (change.before !== change.after) {
      if (change.after === null) {
        try {
          Deno.removeSync(file);
        } catch (error) {
          if (!(error instanceof Deno.errors.NotFound)) throw error;
        }
      } else {
        const exists = readText(file) !== null;
        if (!exists) ensureParents(file);
        // The original bytes themselves when that is what is put back (exact even if not UTF-8).
        const data = entry?.original != null && change.after === originalText(entry)
          ? fromBase64(entry.original)
          : change.after;
        writeKeeping(file, data, { mode: entry?.originalMode ?? change.mode ?? 0o644 });
      }
      changed.push(change.path);
    }
  }
  // Directories ARCH created, once their files are gone: deepest first, only if empty.
  const dirs = record.entries.filter((e) => e.target === target).flatMap((e) => e.createdDirs);
  for (const dir of [...new Set(dirs)].sort((a, b) => b.length - a.length)) {
    try {
      Deno.removeSync(dir);
    } catch { /* not empty or gone */ }
  }
  const entries = record.entries.filter((e) => e.target !== target);
  saveRecord(recordPath, { ...record, entries });
  return { changed };
}

/** Records that `unit` was enabled by ARCH (or, with `enabled: false`, forgets it). */
export function recordUnit(recordPath: string, unit: string, enabled: boolean): void {
  const record = loadRecord(recordPath);
  const units = record.enabledUnits.filter((u) => u !== unit);
  if (enabled) units.push(unit);
  saveRecord(recordPath, { ...record, enabledUnits: units });
}

// ---------------------------------------------------------------------------------------
// Unified diff (pure)

type Op = { kind: " " | "-" | "+"; line: string };

function diffLines(a: readonly string[], b: readonly string[]): Op[] {
  // Trim the common head and tail, then LCS on what is left (config files are small).
  let start = 0;
  while (start < a.length && start < b.length && a[start] === b[start]) start++;
  let endA = a.length, endB = b.length;
  while (endA > start && endB > start && a[endA - 1] === b[endB - 1]) endA--, endB--;
  const ma = a.slice(start, endA), mb = b.slice(start, endB);
  const middle: Op[] = [];
  if (ma.length * mb.length > 4_000_000) {
    middle.push(
      ...ma.map((line) => ({ kind: "-" as const, line })),
      ...mb.map((line) => ({ kind: "+" as const, line })),
    );
  } else {
    const n = ma.length, m = mb.length;
    const lcs = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
    for (let i = n - 1; i >= 0; i--) {
      for (let j = m - 1; j >= 0; j--) {
        lcs[i]![j] = ma[i] === mb[j] ? lcs[i + 1]![j + 1]! + 1 : Math.max(lcs[i + 1]![j]!, lcs[i]![j + 1]!);
      }
    }
    let i = 0, j = 0;
    while (i < n || j < m) {
      if (i < n && j < m && ma[i] === mb[j]) middle.push({ kind: " ", line: ma[i++]! }), j++;
      else if (i < n && (j >= m || lcs[i + 1]![j]! >= lcs[i]![j + 1]!)) middle.push({ kind: "-", line: ma[i++]! });
      else middle.push({ kind: "+", line: mb[j++]! });
    }
  }
  return [
    ...a.slice(0, start).map((line) => ({ kind: " " as const, line })),
    ...middle,
    ...a.slice(endA).map((line) => ({ kind: " " as const, line })),
  ];
}

function splitLines(text: string): string[] {
  if (text === "") return [];
  const lines = text.split("\n");
  if (lines.at(-1) === "") lines.pop();
  else lines[lines.length - 1] += "\n\\ No newline at end of file";
  return lines;
}

/**
 * A unified diff (3 lines of context) from `before` to `after` of `path`; `null` stands for
 * an absent file (`/dev/null`). Empty string when they are equal.
 *
 * @example
 * ```ts
 * import { unifiedDiff } from "./changes.ts";
 * const d = unifiedDiff("/etc/x", "a\nb\n", "a\nc\n");
 * if (d !== "--- /etc/x\n+++ /etc/x\n@@ -1,2 +1,2 @@\n a\n-b\n+c\n") throw new Error(d);
 * ```
 */
export function unifiedDiff(path: string, before: string | null, after: string | null, context = 3): string {
  if (before === after) return "";
  const ops = diffLines(splitLines(before ?? ""), splitLines(after ?? ""));
  const out = [`--- ${before === null ? "/dev/null" : path}`, `+++ ${after === null ? "/dev/null" : path}`];
  const changedAt = ops.map((op, i) => (op.kind === " " ? -1 : i)).filter((i) => i >= 0);
  let k = 0;
  while (k < changedAt.length) {
    const first = changedAt[k]!;
    let last = first;
    while (k + 1 < changedAt.length && changedAt[k + 1]! - last <= 2 * context) last = changedAt[++k]!;
    k++;
    const from = Math.max(0, first - context), to = Math.min(ops.length, last + context + 1);
    let lineA = 1, lineB = 1;
    for (let i = 0; i < from; i++) {
      if (ops[i]!.kind !== "+") lineA++;
      if (ops[i]!.kind !== "-") lineB++;
    }
    const hunk = ops.slice(from, to);
    const countA = hunk.filter((o) => o.kind !== "+").length, countB = hunk.filter((o) => o.kind !== "-").length;
    out.push(`@@ -${countA === 0 ? lineA - 1 : lineA},${countA} +${countB === 0 ? lineB - 1 : lineB},${countB} @@`);
    for (const op of hunk) out.push(`${op.kind}${op.line}`);
  }
  return out.join("\n") + "\n";
}
