/**
 * Directories held by file descriptor, for trees a tenant may change while ARCH works in them
 * (a checkpoint key on a shared file system, a job's work directory).
 *
 * Guarantees:
 * - A directory is entered one component at a time with `openat(O_DIRECTORY | O_NOFOLLOW)`
 *   from its parent's descriptor: a symbolic link anywhere on the way is refused, never
 *   followed, and once open a directory stays the one that was checked, whatever is renamed
 *   or exchanged (`renameat2(RENAME_EXCHANGE)`) around it afterwards.
 * - Entries are named relative to a held descriptor (`/proc/self/fd/<fd>/<name>`: the kernel
 *   resolves the magic link to the open directory itself; the last element is never followed
 *   by `lstat`, `unlink`, `rmdir` or `rename`).
 * - {@link Dir.removeTree} removes a tree from descriptors only: it never leaves the
 *   directory it was given (no symlink followed, no other file system entered), holds a
 *   bounded number of descriptors however deep the tree (deep directories are moved up into
 *   the tree's top before they are emptied), and its memory does not grow with the number of
 *   entries of one directory beyond one listing.
 * - {@link readRegularFile} opens without following a link and without blocking
 *   (`O_NOFOLLOW | O_NONBLOCK`: a FIFO planted in place of a file does not hang ARCH), and
 *   reads only a regular file, up to a size limit.
 * Requires `--allow-ffi` and `/proc`.
 */

import { cString, errno, lastError, libc } from "./libc.ts";

const O_RDONLY = 0;
const O_NONBLOCK = 0o4000;
const O_DIRECTORY = 0o200000;
const O_NOFOLLOW = 0o400000;
const O_CLOEXEC = 0o2000000;
const AT_FDCWD = -100;
const ELOOP = 40;
const ENOTDIR = 20;
const ENOENT = 2;

/** A directory or file ARCH refuses to enter or read: a symbolic link, the wrong type, another file system, too big. */
export class UnsafeEntryError extends Error {
  override name = "UnsafeEntryError";
}

/** What a directory must be to be entered: by default any real directory on the same file system as its parent. */
export interface EnterCheck {
  /** Refuse unless owned by root and not writable by group or others. */
  readonly rootOnly?: boolean;
  /** Refuse a directory on another file system than its parent (a mount the tenant made, or a bind). */
  readonly sameDevice?: boolean;
}

function openFd(dirfd: number, name: string, flags: number, what: string): number {
  const fd = libc().openat(dirfd, cString(name), flags | O_CLOEXEC, 0);
  if (fd >= 0) return fd;
  const code = errno();
  if (code === ELOOP) throw new UnsafeEntryError(`${what} is a symbolic link`);
  if (code === ENOTDIR) throw new UnsafeEntryError(`${what} is not a directory (a link is never followed)`);
  if (code === ENOENT) throw new Deno.errors.NotFound(`${what} does not exist`);
  throw new Error(`cannot open ${what}: ${lastError()}`);
}

function unsafeOwner(what: string, info: Deno.FileInfo): string | undefined {
  if (info.uid !== 0) return `${what} is owned by uid ${info.uid}, not root`;
  if (info.mode !== null && (info.mode & 0o022) !== 0) {
    return `${what} is writable by group or others (mode ${(info.mode & 0o777).toString(8)})`;
  }
  return undefined;
}

/** An open directory (see the module doc). Close it, or leave its `using` scope. */
export class Dir implements Disposable {
  #fd: number;

  private constructor(fd: number, readonly path: string, readonly dev: number) {
    this.#fd = fd;
  }

  /**
   * Opens `path` as a directory: its last element is not followed (the elements before it are
   * the admin's, checked when the configuration was read).
   */
  static open(path: string, check: EnterCheck = {}): Dir {
    const fd = openFd(AT_FDCWD, path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW, `"${path}"`);
    return Dir.#checked(fd, path, undefined, check);
  }

  static #checked(fd: number, path: string, parentDev: number | undefined, check: EnterCheck): Dir {
    let info: Deno.FileInfo;
    try {
      info = Deno.statSync(`/proc/self/fd/${fd}`);
    } catch (error) {
      libc().close(fd);
      throw error;
    }
    const why = check.rootOnly ? unsafeOwner(`"${path}"`, info) : undefined;
    const other = check.sameDevice && parentDev !== undefined && info.dev !== parentDev;
    if (why !== undefined || other) {
      libc().close(fd);
      throw new UnsafeEntryError(why ?? `"${path}" is on another file system`);
    }
    return new Dir(fd, path, info.dev);
  }

  /** The descriptor (valid until {@link close}). */
  get fd(): number {
    if (this.#fd < 0) throw new Error(`directory "${this.path}" is closed`);
    return this.#fd;
  }

  /** A path naming `name` in this directory through the descriptor (the directory itself without `name`). */
  at(name?: string): string {
    if (name !== undefined && (name === "" || name === "." || name === ".." || name.includes("/"))) {
      throw new UnsafeEntryError(`"${name}" is not a single path element`);
    }
    return name === undefined ? `/proc/self/fd/${this.fd}` : `/proc/self/fd/${this.fd}/${name}`;
  }

  /** Enters the child directory `name` (never through a link); creates it (mode, default 0700) if `create`. */
  child(name: string, options: EnterCheck & { create?: boolean; mode?: number } = {}): Dir {
    const path = `${this.path}/${name}`;
    if (options.create) {
      try {
        Deno.mkdirSync(this.at(name), { mode: options.mode ?? 0o700 });
      } catch (error) {
        if (!(error instanceof Deno.errors.AlreadyExists)) throw error;
      }
    }
    const fd = openFd(this.fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW, `"${path}"`);
    return Dir.#checked(fd, path, this.dev, options);
  }

  /** Enters `names` one after the other (see {@link child}); `undefined` if one is missing and not `create`. */
  descend(names: readonly string[], options: EnterCheck & { create?: boolean; mode?: number } = {}): Dir | undefined {
    let dir: Dir | undefined;
    try {
      for (const name of names) {
        const next: Dir = (dir ?? this).child(name, options);
        dir?.close();
        dir = next;
      }
    } catch (error) {
      dir?.close();
      if (error instanceof Deno.errors.NotFound && !options.create) return undefined;
      throw error;
    }
    return dir ?? this.child(".", {});
  }

  /** `lstat` of `name` in this directory; `undefined` if absent. */
  lstat(name: string): Deno.FileInfo | undefined {
    try {
      return Deno.lstatSync(this.at(name));
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return undefined;
      throw error;
    }
  }

  /** The names in this directory. */
  names(): string[] {
    return [...Deno.readDirSync(this.at())].map((e) => e.name);
  }

  /** Renames `from` to `to`, both in this directory (the last elements are never followed). */
  rename(from: string, to: string): void {
    Deno.renameSync(this.at(from), this.at(to));
  }

  /** Moves `name` of this directory to `to` in directory `dest` (same file system). */
  moveTo(name: string, dest: Dir, to: string): void {
    Deno.renameSync(this.at(name), dest.at(to));
  }

  /** Reads the regular file `name` (see {@link readRegularFile}). */
  readFile(name: string, maxBytes: number): Uint8Array {
    return readFileAt(this.fd, name, `${this.path}/${name}`, maxBytes);
  }

  /**
   * Removes the entry `name` of this directory and, if it is a directory, everything in it
   * (see the module doc). Absent: nothing to do. Throws on the first entry it cannot remove.
   */
  removeTree(name: string): void {
    const info = this.lstat(name);
    if (info === undefined) return;
    if (!info.isDirectory) {
      Deno.removeSync(this.at(name));
      return;
    }
    // Deep trees are flattened: a directory found at MAX_DEPTH is moved up into `top` under a
    // fresh name and emptied from there, so at most MAX_DEPTH + 1 descriptors are open.
    using top = this.child(name, { sameDevice: true });
    let moved = 0;
    const empty = (dir: Dir, depth: number): void => {
      for (;;) {
        const names = dir.names();
        if (names.length === 0) return;
        for (const entry of names) {
          const st = dir.lstat(entry);
          if (st === undefined) continue;
          if (!st.isDirectory) {
            Deno.removeSync(dir.at(entry));
            continue;
          }
          if (depth >= MAX_DEPTH) {
            dir.moveTo(entry, top, `.deep-${moved++}`);
            continue;
          }
          using sub = dir.child(entry, { sameDevice: true });
          empty(sub, depth + 1);
          Deno.removeSync(dir.at(entry));
        }
      }
    };
    empty(top, 0);
    Deno.removeSync(this.at(name));
  }

  /** Closes the descriptor (idempotent). */
  close(): void {
    if (this.#fd >= 0) libc().close(this.#fd);
    this.#fd = -1;
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/** How deep {@link Dir.removeTree} descends before it moves a directory up (bounds its descriptors). */
const MAX_DEPTH = 64;

function readFileAt(dirfd: number, name: string, what: string, maxBytes: number): Uint8Array {
  const fd = libc().openat(dirfd, cString(name), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0);
  if (fd < 0) {
    const code = errno();
    if (code === ELOOP) throw new UnsafeEntryError(`"${what}" is a symbolic link`);
    if (code === ENOENT) throw new Deno.errors.NotFound(`"${what}" does not exist`);
    throw new Error(`cannot open "${what}": ${lastError()}`);
  }
  try {
    const info = Deno.statSync(`/proc/self/fd/${fd}`);
    if (!info.isFile) throw new UnsafeEntryError(`"${what}" is not a regular file`);
    if (info.size > maxBytes) throw new UnsafeEntryError(`"${what}" is larger than ${maxBytes} bytes`);
    const buf = new Uint8Array(info.size + 1);
    let n = 0;
    for (;;) {
      const r = Number(libc().read(fd, buf.subarray(n), BigInt(buf.length - n)));
      if (r < 0) throw new Error(`cannot read "${what}": ${lastError()}`);
      if (r === 0) break;
      n += r;
      if (n > maxBytes) throw new UnsafeEntryError(`"${what}" is larger than ${maxBytes} bytes`);
      if (n === buf.length) break; // grew while read: the first size + 1 bytes are enough to tell
    }
    return buf.slice(0, n);
  } finally {
    libc().close(fd);
  }
}

/**
 * Opens the regular file `path` for reading as a `Deno.FsFile`, never following a link at its
 * last element and never blocking on a FIFO or device (refused with {@link UnsafeEntryError}):
 * what is opened is the regular file that was checked, whatever replaces its name afterwards.
 */
export function openRegularFile(path: string): Deno.FsFile {
  const fd = libc().openat(AT_FDCWD, cString(path), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0);
  if (fd < 0) {
    const code = errno();
    if (code === ELOOP) throw new UnsafeEntryError(`"${path}" is a symbolic link`);
    if (code === ENOENT) throw new Deno.errors.NotFound(`"${path}" does not exist`);
    throw new Error(`cannot open "${path}": ${lastError()}`);
  }
  try {
    if (!Deno.statSync(`/proc/self/fd/${fd}`).isFile) throw new UnsafeEntryError(`"${path}" is not a regular file`);
    return Deno.openSync(`/proc/self/fd/${fd}`, { read: true }); // the same inode, now known to be a file
  } finally {
    libc().close(fd);
  }
}

/**
 * Reads the regular file `path` without following a link at its last element and without
 * blocking on a FIFO or device; refuses anything else, or more than `maxBytes`.
 *
 * @example
 * ```ts
 * import { readRegularFile } from "./dirfd.ts";
 * const dir = Deno.makeTempDirSync();
 * Deno.writeTextFileSync(`${dir}/a`, "hi");
 * if (new TextDecoder().decode(readRegularFile(`${dir}/a`, 16)) !== "hi") throw new Error();
 * Deno.removeSync(dir, { recursive: true });
 * ```
 */
export function readRegularFile(path: string, maxBytes: number): Uint8Array {
  return readFileAt(AT_FDCWD, path, path, maxBytes);
}
