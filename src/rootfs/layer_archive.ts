/**
 * Captures a container's writable layer and applies it to a new container's rootfs.
 *
 * Capture (container paused): GNU tar of the overlay upperdir, keeping ownership, modes,
 * hard links, xattrs (so opaque-directory markers), whiteouts (character devices 0/0) and
 * holes (`--sparse`: a sparse file is stored as its data and a map, never as its holes).
 *
 * Apply (new container created, before `runc restore`) goes straight into the new rootfs,
 * the mounted overlay (never its upperdir), without staging a copy anywhere: no RAM-backed
 * `/run`, no second file system that must hold the whole layer, one write of each byte.
 *
 * 1. Read: the archive's headers are listed by {@link listTarMembers} (every member's exact
 *    name, type, link target, stored data size and xattrs, data skipped by seeking), and the
 *    listing is cross-checked against GNU tar's own `tar -tv` of the same archive: the names
 *    ARCH checks are exactly the names tar extracts, or the archive is refused.
 * 2. Check, before anything is written: every member name and hard-link target stays inside
 *    the rootfs (no absolute name, no `..`); no member lies under another member that is not
 *    a directory; no name appears twice; no existing parent of any member path in the new
 *    rootfs is a symlink or a non-directory, and no directory member lands on a symlink (a
 *    new image with `/data -> /etc` must not turn a saved `data/passwd` into a write to the
 *    host's /etc; the container is created, not running, so its rootfs does not change
 *    meanwhile); the rootfs's file system has room for the layer's data (sum of the stored
 *    sizes, so a sparse file counts its data only) and inodes (statvfs(3), no fork). A
 *    refusal leaves the rootfs exactly as it was.
 * 3. Delete, in the new rootfs: each whiteout's path; each opaque directory (xattr
 *    `trusted.overlay.opaque` or `user.overlay.opaque` = `y`: its lower contents are hidden),
 *    which tar then creates again, empty but for the layer's entries and with the layer's
 *    metadata; an existing directory where the layer has a non-directory (the upper entry
 *    hid the whole lower directory).
 * 4. Extract: one GNU tar, reading the archive file, writing into the rootfs, whiteouts
 *    excluded by exact name and overlay's own xattrs not written; holes stay holes. Its exit
 *    status is checked (no shell, no pipeline whose first stage could fail unseen).
 *
 * Not guaranteed: a failure during steps 3–4 (I/O error, a file system that fills up through
 * a concurrent writer) leaves a partly applied layer; the caller must then reset the rootfs
 * (`resetRootfs` in `reset.ts`) or refuse the container. Member names and link targets
 * must be UTF-8 (others refuse the archive).
 * Requires root, GNU tar and `--allow-ffi`.
 */

import { lstatIfExists } from "../util/paths.ts";
import { ArchError, errorMessage } from "../util/errors.ts";
import { CommandError, mustRun, runCommand } from "../process/exec.ts";
import { listTarMembers, type TarMember } from "./tar_index.ts";
import { statvfs } from "../util/statvfs.ts";

const TAR_META = ["--numeric-owner", "--xattrs", "--xattrs-include=*", "--acls", "--selinux"];
/** Overlay's own attributes: markers in the saved upperdir, refused by (and meaningless through) the mounted overlay. */
const OVERLAY_XATTRS = ["--xattrs-exclude=trusted.overlay.*", "--xattrs-exclude=user.overlay.*"];

/** A writer stopped because the checkpoint reached its size limit or the root its free-space reserve. */
export class SizeLimitError extends ArchError {
  constructor(message: string) {
    super(message, "size-limit");
  }
}

/**
 * Writes the upperdir's tree to `archive` (holes of sparse files are not stored), at most
 * `maxBytes`: tar's stream goes through `head -c` in the same child pipeline, so a layer
 * larger than the cap is never written whole ({@link SizeLimitError}; the caller removes the
 * partial archive), and ARCH itself never writes into the checkpoint root while the
 * container is paused (a stuck shared file system blocks the child, never ARCH, which the
 * pause guard can then kill: `checkpoint/pause_guard.ts`).
 */
export async function captureUpperdir(upperdir: string, archive: string, maxBytes = Infinity): Promise<void> {
  const cap = Number.isFinite(maxBytes) ? Math.max(0, Math.floor(maxBytes)) + 1 : 0;
  // bash: pipefail (tar's own failure is not hidden by head's success); noclobber: the archive is created new
  const script = "set -o pipefail -o noclobber; archive=$1; cap=$2; shift 2; " +
    'if [ "$cap" = 0 ]; then "$@" > "$archive"; else "$@" | head -c "$cap" > "$archive"; fi';
  const tar = ["tar", ...TAR_META, "--sparse", "-C", upperdir, "-cpf", "-", "."];
  const spec = { cmd: "bash", args: ["-c", script, "capture", archive, String(cap), ...tar] };
  const r = await runCommand(spec);
  if (cap > 0 && Deno.statSync(archive).size >= cap) {
    throw new SizeLimitError(`the writable layer reached the ${formatBytes(maxBytes)} left to this checkpoint`);
  }
  if (r.code !== 0) throw new CommandError(spec, r);
}

/** Whether `name` (a tar member name) stays inside the extraction directory. */
export function isSafeMemberName(name: string): boolean {
  if (name.startsWith("/")) return false;
  return !name.split("/").includes("..");
}

const components = (rel: string) => rel.split("/").filter((p) => p !== "" && p !== ".");

/**
 * Throws unless no existing parent component of `rootfs/rel` is a symlink or a non-directory.
 * The final component may be anything (it is replaced). `checked` memoizes verdicts on
 * parent paths across calls for one rootfs.
 */
export function assertNoSymlinkParents(
  rootfs: string,
  rel: string,
  checked: Map<string, "dir" | "missing"> = new Map(),
): void {
  let path = rootfs;
  for (const part of components(rel).slice(0, -1)) {
    path = `${path}/${part}`;
    const known = checked.get(path);
    if (known === "missing") return;
    if (known === "dir") continue;
    let info: Deno.FileInfo;
    try {
      info = Deno.lstatSync(path);
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) {
        checked.set(path, "missing");
        return; // created by the extraction as a directory
      }
      throw error;
    }
    if (info.isSymlink) throw new Error(`refusing to write through the symlink "${path}" in the new rootfs`);
    if (!info.isDirectory) throw new Error(`"${path}" in the new rootfs is not a directory`);
    checked.set(path, "dir");
  }
}

const OPAQUE_XATTRS = ["trusted.overlay.opaque", "user.overlay.opaque"];

/** Whether a member is an overlay whiteout (a character device 0/0). */
export function isWhiteout(member: TarMember): boolean {
  return member.kind === "chardev" && member.devMajor === 0 && member.devMinor === 0;
}

/** Whether a member is an opaque directory of the upperdir (its lower contents are hidden). */
export function isOpaque(member: TarMember): boolean {
  return member.kind === "directory" && OPAQUE_XATTRS.some((x) => member.xattrs[x] === "y");
}

/** What applying a layer does to a rootfs, decided (and checked) before anything is written. */
export interface ApplyPlan {
  /** Rootfs-relative paths to delete (whiteouts, opaque directories, directories a non-directory replaces). */
  readonly remove: readonly string[];
  /** Member names tar must not extract (the whiteouts). */
  readonly exclude: readonly string[];
  /** Bytes the extraction allocates at most (data rounded up to `blockSize`, one block per directory). */
  readonly bytes: number;
  /** Inodes the extraction creates at most. */
  readonly inodes: number;
}

/**
 * Checks `members` against the new `rootfs` (reads only) and returns what to delete and
 * exclude. Throws, having written nothing, if any member is unsafe.
 */
export function planApply(members: readonly TarMember[], rootfs: string, blockSize = 4096): ApplyPlan {
  const unsafe = members.flatMap((m) => [m.name, ...(m.kind === "hardlink" ? [m.linkName] : [])])
    .filter((n) => !isSafeMemberName(n));
  if (unsafe.length > 0) throw new Error(`rootfs archive has unsafe member names: ${unsafe.slice(0, 3).join(", ")}`);
  const key = (name: string) => components(name).join("/");
  const seen = new Set<string>();
  const nonDirs = new Set<string>();
  for (const m of members) {
    const k = key(m.name);
    if (seen.has(k)) throw new Error(`rootfs archive has the member "${m.name}" twice`);
    seen.add(k);
    if (m.kind !== "directory") nonDirs.add(k);
  }
  const checked = new Map<string, "dir" | "missing">();
  const plan = { remove: [] as string[], exclude: [] as string[], bytes: 0, inodes: 0 };
  for (const m of members) {
    const parts = components(m.name);
    for (let i = 1; i < parts.length; i++) {
      const parent = parts.slice(0, i).join("/");
      if (nonDirs.has(parent)) throw new Error(`rootfs archive has "${m.name}" under the non-directory "${parent}"`);
    }
    assertNoSymlinkParents(rootfs, m.name, checked);
    if (m.kind === "hardlink") assertNoSymlinkParents(rootfs, m.linkName, checked);
    const rel = `/${parts.join("/")}`;
    const existing = parts.length === 0 ? undefined : lstatIfExists(`${rootfs}${rel}`);
    if (isWhiteout(m)) {
      plan.exclude.push(m.name);
      if (existing !== undefined) plan.remove.push(rel);
      continue;
    }
    if (m.kind === "directory") {
      if (existing?.isSymlink) {
        throw new Error(`refusing to write through the symlink "${rootfs}${rel}" in the new rootfs`);
      }
      if (isOpaque(m) && existing?.isDirectory && parts.length > 0) plan.remove.push(rel);
      plan.bytes += blockSize;
    } else if (existing?.isDirectory) {
      plan.remove.push(rel);
    }
    if (m.kind === "file") plan.bytes += Math.ceil(m.dataSize / blockSize) * blockSize;
    if (m.kind !== "hardlink") plan.inodes++;
  }
  return plan;
}

/** `1536` → `1.5 KiB`. */
export function formatBytes(n: number): string {
  const units = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${n} bytes` : `${v.toFixed(1)} ${units[i]}`;
}

/** A name as GNU tar lists it with `--quoting-style=escape` in the C locale. */
export function tarEscape(name: string): string {
  const named: Record<number, string> = { 7: "a", 8: "b", 9: "t", 10: "n", 11: "v", 12: "f", 13: "r", 92: "\\" };
  let out = "";
  for (const b of new TextEncoder().encode(name)) {
    const c = named[b];
    out += c !== undefined
      ? `\\${c}`
      : b >= 0x20 && b < 0x7f
      ? String.fromCharCode(b)
      : `\\${b.toString(8).padStart(3, "0")}`;
  }
  return out;
}

const LIST_TYPE: Record<TarMember["kind"], string> = {
  file: "-",
  hardlink: "h",
  symlink: "l",
  chardev: "c",
  blockdev: "b",
  directory: "d",
  fifo: "p",
};

/** Refuses the archive unless GNU tar lists exactly `members` (same order, types, names, link targets). */
async function crossCheck(archive: string, members: readonly TarMember[]): Promise<void> {
  const { stdout } = await mustRun({
    cmd: "tar",
    args: ["-tv", "--quoting-style=escape", "-f", archive],
    env: { LC_ALL: "C" },
  });
  const lines = stdout.split("\n");
  if (lines.at(-1) === "") lines.pop();
  const mismatch = members.findIndex((m, i) => {
    const line = lines[i] ?? "";
    const link = m.kind === "symlink"
      ? ` -> ${tarEscape(m.linkName)}`
      : m.kind === "hardlink"
      ? ` link to ${tarEscape(m.linkName)}`
      : "";
    return line[0] !== LIST_TYPE[m.kind] || !line.endsWith(` ${tarEscape(m.name)}${link}`);
  });
  if (mismatch !== -1 || lines.length !== members.length) {
    const at = mismatch === -1 ? members.length : mismatch;
    throw new Error(`rootfs archive is read differently by GNU tar at member ${at + 1}: refusing it`);
  }
}

/** The layer was refused before anything was written: the rootfs is as it was (no reset needed). */
export class LayerRefusedError extends ArchError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, "layer-refused", 1, options);
  }
}

/** Deletes `path` (recursively, never through a symlink); absent is fine. */
function removeIfPresent(path: string): void {
  try {
    Deno.removeSync(path, { recursive: true });
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
}

/** The `-X` file takes one name a line with trailing blanks stripped: other names go on the command line. */
const lineSafe = (name: string) => !name.includes("\n") && !/[ \t\v\f\r]$/.test(name);

/** Steps 1 and 2 of the module comment: reads the archive and checks it against `rootfs`, writing nothing. */
async function checkLayer(archive: string, rootfs: string): Promise<ApplyPlan> {
  let members: TarMember[];
  try {
    members = listTarMembers(archive);
  } catch (error) {
    throw new Error(`cannot read the rootfs archive "${archive}": ${errorMessage(error)}`);
  }
  await crossCheck(archive, members);
  const space = statvfs(rootfs);
  const plan = planApply(members, rootfs, space.blockSize);
  if (plan.bytes > space.availableBytes) {
    throw new Error(
      `not enough free space on the file system of "${rootfs}" for the saved writable layer: ` +
        `need ${formatBytes(plan.bytes)}, have ${formatBytes(space.availableBytes)}`,
    );
  }
  if (space.availableInodes !== undefined && plan.inodes > space.availableInodes) {
    throw new Error(
      `not enough free inodes on the file system of "${rootfs}" for the saved writable layer: ` +
        `need ${plan.inodes}, have ${space.availableInodes}`,
    );
  }
  return plan;
}

/**
 * Applies `archive` (from {@link captureUpperdir}) to the mounted `rootfs`, in place: every
 * check runs before the first write (see the module comment), so a refused layer leaves the
 * rootfs untouched and throws {@link LayerRefusedError}; a failure while writing throws
 * another Error and leaves the rootfs partly applied (reset it before a fresh start). Every
 * error is one sentence. Nothing is written outside `rootfs` (no staging copy, no temporary
 * file).
 */
export async function applyToRootfs(archive: string, rootfs: string): Promise<void> {
  let plan: ApplyPlan;
  try {
    plan = await checkLayer(archive, rootfs);
  } catch (error) {
    throw new LayerRefusedError(errorMessage(error), { cause: error });
  }
  // Every check passed: from here on the rootfs changes.
  for (const rel of plan.remove) removeIfPresent(`${rootfs}${rel}`);
  const viaFile = plan.exclude.filter(lineSafe);
  const viaArgs = plan.exclude.filter((n) => !lineSafe(n));
  await mustRun({
    cmd: "tar",
    args: [
      ...TAR_META,
      ...OVERLAY_XATTRS,
      "--no-wildcards",
      "--anchored",
      "--exclude-from=/dev/stdin",
      ...viaArgs.map((n) => `--exclude=${n}`),
      "-C",
      rootfs,
      "-xpf",
      archive,
    ],
    stdin: viaFile.map((n) => `${n}\n`).join(""),
  });
}
