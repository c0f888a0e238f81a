/**
 * The one atomic file writer of ARCH: a reader of `path` sees the old file or the new one,
 * never a part, and nothing planted in the directory is ever followed or reused.
 *
 * How: a temporary file with a random name in the same directory is created with O_CREAT|O_EXCL
 * (`createNew`: the kernel refuses an existing name and never follows a symlink there) and the
 * wanted mode; the data is written, optionally fsync'ed, and the file renamed over `path`
 * (rename replaces a symlink at `path`, it does not follow it); by default the directory is
 * fsync'ed too. When the umask narrowed the mode, or an owner is asked for, they are set on the
 * open file itself (through its `/proc/self/fd` entry, checked to be the same inode), never
 * through a path someone could swap. On any failure the temporary file is removed and the
 * error thrown; `path` is then unchanged.
 *
 * Not guaranteed: someone who may write the directory can still replace `path` after the rename
 * (that is their directory); the directory itself is not created here.
 */

import { fsyncPath } from "./fsync.ts";

/** How {@link writeFileAtomic} writes. */
export interface AtomicWriteOptions {
  /** Permission bits of the new file (exact: the umask does not narrow them). */
  readonly mode: number;
  /** fsync the file before the rename (default `true`). */
  readonly fsync?: boolean;
  /** Also fsync the directory after the rename, so the rename itself is durable (default: as `fsync`). */
  readonly fsyncDir?: boolean;
  /** Owner of the new file (default: the writing process's). */
  readonly owner?: { readonly uid: number; readonly gid: number };
}

const enc = new TextEncoder();

/** A name no one can predict: `.<name>.arch-<16 hex>.tmp` beside `path`. */
function tempName(path: string): string {
  const slash = path.lastIndexOf("/");
  const random = [...crypto.getRandomValues(new Uint8Array(8))].map((b) => b.toString(16).padStart(2, "0")).join("");
  return `${path.slice(0, slash + 1)}.${path.slice(slash + 1)}.arch-${random}.tmp`;
}

function dirOf(path: string): string {
  const slash = path.lastIndexOf("/");
  return slash < 0 ? "." : slash === 0 ? "/" : path.slice(0, slash);
}

/** The `/proc/self/fd` path of `file`, which was opened as `path` (matched by name, then by inode). */
function fdPath(file: Deno.FsFile, path: string): string {
  const own = file.statSync();
  for (const entry of Deno.readDirSync("/proc/self/fd")) {
    const link = `/proc/self/fd/${entry.name}`;
    try {
      if (Deno.readLinkSync(link) !== path) continue;
      const info = Deno.statSync(link);
      if (info.ino === own.ino && info.dev === own.dev) return link;
    } catch { /* closed meanwhile, or not a file */ }
  }
  throw new Error(`cannot find the open temporary file "${path}" in /proc/self/fd: was it moved?`);
}

/**
 * Writes `data` to `path` atomically (see the module doc): the file ends with exactly `mode`
 * (and `owner` if given). Throws when the directory does not exist or cannot be written; the
 * temporary file never stays behind.
 *
 * @example
 * ```ts
 * import { writeFileAtomic } from "./atomic.ts";
 * const dir = Deno.makeTempDirSync();
 * writeFileAtomic(`${dir}/a.json`, "{}\n", { mode: 0o600 });
 * if (Deno.readTextFileSync(`${dir}/a.json`) !== "{}\n") throw new Error();
 * Deno.removeSync(dir, { recursive: true });
 * ```
 */
export function writeFileAtomic(path: string, data: string | Uint8Array, opts: AtomicWriteOptions): void {
  const mode = opts.mode & 0o7777;
  const durable = opts.fsync ?? true;
  const tmp = tempName(path);
  const file = Deno.openSync(tmp, { write: true, createNew: true, mode });
  let open = true;
  try {
    const info = file.statSync();
    const wrongMode = info.mode === null || (info.mode & 0o7777) !== mode;
    const wrongOwner = opts.owner !== undefined && (info.uid !== opts.owner.uid || info.gid !== opts.owner.gid);
    if (wrongMode || wrongOwner) {
      const self = fdPath(file, tmp);
      // chown first: it clears set-id bits, which the chmod then sets if asked
      if (wrongOwner) Deno.chownSync(self, opts.owner!.uid, opts.owner!.gid);
      Deno.chmodSync(self, mode);
    }
    const bytes = typeof data === "string" ? enc.encode(data) : data;
    for (let off = 0; off < bytes.length;) off += file.writeSync(bytes.subarray(off));
    if (durable) file.syncSync();
    file.close();
    open = false;
    Deno.renameSync(tmp, path);
  } catch (error) {
    if (open) file.close();
    try {
      Deno.removeSync(tmp); // unlink: never follows whatever is there now
    } catch { /* already renamed away or removed */ }
    throw error;
  }
  if (opts.fsyncDir ?? durable) fsyncPath(dirOf(path));
}
