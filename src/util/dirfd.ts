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
 *   directory it was given (no symlink followed, no other file system entered), names entries
 *   by the kernel's bytes (getdents64: a name that is not UTF-8 is removed like any other),
 *   holds a bounded number of descriptors however deep the tree (deep directories are moved
 *   up into the tree's top under fresh names), and never loops without progress.
 * - {@link readRegularFile} and {@link openRegularFile} type the file through an `O_PATH`
 *   descriptor taken without following a link, and open it for reading only when it is a
 *   regular file (a FIFO planted in place of a file does not hang ARCH; no device is opened).
 * - {@link Dir.openInRoot} resolves a path inside a directory taken as a root
 *   (`openat2` `RESOLVE_IN_ROOT`), as runc resolves a mount destination in a rootfs.
 * Requires `--allow-ffi` and `/proc`.
 */

import { ArchError } from "./errors.ts";
import { cString, errno, lastError, libc } from "./libc.ts";

const O_RDONLY = 0;
const O_NONBLOCK = 0o4000;
const O_DIRECTORY = 0o200000;
const O_NOFOLLOW = 0o400000;
const O_CLOEXEC = 0o2000000;
const O_PATH = 0o10000000;
const AT_FDCWD = -100;
const AT_REMOVEDIR = 0x200;
/** System call numbers and `struct stat`'s `st_mode` offset: x86_64, else aarch64 (the two release targets). */
const X86_64 = Deno.build.arch === "x86_64";
const SYS_GETDENTS64 = X86_64 ? 217 : 61;
const SYS_FSTAT = X86_64 ? 5 : 80;
const SYS_OPENAT2 = 437; // the same on both
const ST_MODE_OFFSET = X86_64 ? 24 : 16;
const ST_SIZE_OFFSET = 48; // the same on both
const RESOLVE_NO_MAGICLINKS = 0x02;
const RESOLVE_IN_ROOT = 0x10;

const ELOOP = 40;
const ENOTDIR = 20;
const ENOENT = 2;

/** A directory or file ARCH refuses to enter or read: a symbolic link, the wrong type, another file system, too big. */
export class UnsafeEntryError extends ArchError {
  constructor(message: string) {
    super(message, "unsafe-entry");
  }
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

  /** Reads the regular file `name` (see {@link readRegularFile}). */
  readFile(name: string, maxBytes: number): Uint8Array {
    return readFileAt(this.fd, name, `${this.path}/${name}`, maxBytes);
  }

  /**
   * Removes the entry `name` of this directory and, if it is a directory, everything in it
   * (see the module doc). Absent: nothing to do. Throws on the first entry it cannot remove,
   * and when a pass over a directory removes nothing (never loops).
   */
  removeTree(name: string): void {
    const info = this.lstat(name);
    if (info === undefined) return;
    if (!info.isDirectory) {
      Deno.removeSync(this.at(name));
      return;
    }
    // Deep trees are flattened: a directory found at MAX_DEPTH is moved up into `top` under a
    // fresh name and emptied from there, so at most MAX_DEPTH + 1 descriptors are open. Names
    // are the kernel's bytes (getdents64), never a decoded string: a name that is not UTF-8
    // is removed like any other.
    using top = this.child(name, { sameDevice: true });
    const empty = (dir: Dir, depth: number): void => {
      for (;;) {
        const entries = rawEntries(dir.fd);
        if (entries.length === 0) return;
        let removed = 0;
        for (const entry of entries) {
          if (unlinkAt(dir.fd, entry.name, 0)) {
            removed++;
            continue;
          }
          const code = errno(); // Linux: EISDIR for a directory
          if (code === ENOENT) continue; // gone meanwhile
          if (code !== EISDIR && code !== EPERM) {
            throw new Error(`cannot remove an entry of "${dir.path}": ${lastError()}`);
          }
          if (depth >= MAX_DEPTH) {
            moveUp(dir.fd, entry.name, top.fd);
            removed++;
            continue;
          }
          const fd = libc().openat(dir.fd, entry.name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0);
          if (fd < 0) {
            // swapped for a link or a file since the unlink: never followed; the next pass sees what it is now
            if ([ENOENT, ENOTDIR, ELOOP].includes(errno())) continue;
            throw new Error(`cannot open a directory of "${dir.path}": ${lastError()}`);
          }
          using sub = Dir.#checked(fd, `${dir.path}/…`, dir.dev, { sameDevice: true });
          empty(sub, depth + 1);
          if (!unlinkAt(dir.fd, entry.name, AT_REMOVEDIR)) {
            throw new Error(`cannot remove a directory of "${dir.path}": ${lastError()}`);
          }
          removed++;
        }
        if (removed === 0) throw new Error(`cannot empty "${dir.path}": no entry could be removed`);
      }
    };
    empty(top, 0);
    Deno.removeSync(this.at(name));
  }

  /**
   * Opens the directory `path` names inside this directory taken as the root (`openat2` with
   * `RESOLVE_IN_ROOT`): `..` and absolute links stop at this directory, as runc resolves a
   * mount destination inside a container's rootfs; no magic link is followed.
   */
  openInRoot(path: string): Dir {
    const how = new BigUint64Array([
      BigInt(O_RDONLY | O_DIRECTORY | O_CLOEXEC),
      0n,
      BigInt(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS),
    ]);
    const fd = Number(libc().openat2(BigInt(SYS_OPENAT2), BigInt(this.fd), cString(path), how, 24n));
    if (fd < 0) throw new Error(`cannot open "${path}" in "${this.path}": ${lastError()}`);
    return Dir.#checked(fd, `${this.path}${path.startsWith("/") ? "" : "/"}${path}`, undefined, {});
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

const EISDIR = 21;
const EPERM = 1;

/** One directory entry as the kernel gives it: the name's bytes (NUL-terminated, for FFI). */
interface RawEntry {
  readonly name: Uint8Array<ArrayBuffer>;
}

/** The entries of the open directory `fd` but `.` and `..` (getdents64 from its start). */
function rawEntries(fd: number): RawEntry[] {
  const out: RawEntry[] = [];
  const buf = new Uint8Array(64 * 1024);
  const view = new DataView(buf.buffer);
  // a fresh descriptor of the same directory: its offset starts at 0 whatever was read before
  const again = libc().openat(fd, cString("."), O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
  if (again < 0) throw new Error(`cannot list a directory: ${lastError()}`);
  try {
    for (;;) {
      const n = Number(libc().syscallFdBuffer(BigInt(SYS_GETDENTS64), BigInt(again), buf, BigInt(buf.length)));
      if (n < 0) throw new Error(`cannot list a directory: ${lastError()}`);
      if (n === 0) return out;
      for (let at = 0; at < n;) {
        const reclen = view.getUint16(at + 16, true);
        let end = at + 19;
        while (buf[end] !== 0) end++;
        const name = buf.slice(at + 19, end + 1); // with its NUL
        const dot = name.length === 2 && name[0] === 0x2e;
        const dotdot = name.length === 3 && name[0] === 0x2e && name[1] === 0x2e;
        if (!dot && !dotdot) out.push({ name });
        at += reclen;
        if (out.length >= 4096) return out; // bounded memory: the caller lists again
      }
    }
  } finally {
    libc().close(again);
  }
}

function unlinkAt(dirfd: number, name: Uint8Array<ArrayBuffer>, flags: number): boolean {
  return libc().unlinkat(dirfd, name, flags) === 0;
}

/** Moves the directory `name` of `dirfd` into `topfd` under a fresh name (never over an existing entry). */
function moveUp(dirfd: number, name: Uint8Array<ArrayBuffer>, topfd: number): void {
  for (let attempt = 0; attempt < 8; attempt++) {
    const fresh = cString(`.arch-deep-${crypto.randomUUID()}`);
    // a fresh random name in ARCH's own top directory: nothing there to replace
    if (libc().renameat(dirfd, name, topfd, fresh) === 0) return;
  }
  throw new Error(`cannot move a deep directory up: ${lastError()}`);
}

/**
 * A descriptor (`O_PATH`: nothing opened yet, no device touched, no FIFO waited on) of the
 * regular file `name` in `dirfd`, never through a link; refuses anything else.
 */
function regularPathFd(dirfd: number, name: string, what: string): { fd: number; size: number } {
  const fd = libc().openat(dirfd, cString(name), O_PATH | O_NOFOLLOW | O_CLOEXEC, 0);
  if (fd < 0) {
    if (errno() === ENOENT) throw new Deno.errors.NotFound(`"${what}" does not exist`);
    throw new Error(`cannot open "${what}": ${lastError()}`);
  }
  const st = new BigUint64Array(18); // struct stat (144 bytes on x86_64)
  if (Number(libc().syscallFdBuffer(BigInt(SYS_FSTAT), BigInt(fd), st, 0n)) !== 0) {
    libc().close(fd);
    throw new Error(`cannot stat "${what}": ${lastError()}`);
  }
  const view = new DataView(st.buffer);
  const mode = view.getUint32(ST_MODE_OFFSET, true) & 0o170000;
  if (mode !== 0o100000) {
    libc().close(fd);
    throw new UnsafeEntryError(`"${what}" is ${mode === 0o120000 ? "a symbolic link" : "not a regular file"}`);
  }
  return { fd, size: Number(view.getBigInt64(ST_SIZE_OFFSET, true)) };
}

function readFileAt(dirfd: number, name: string, what: string, maxBytes: number): Uint8Array {
  const { fd: pathFd, size } = regularPathFd(dirfd, name, what);
  let fd: number;
  try {
    if (size > maxBytes) throw new UnsafeEntryError(`"${what}" is larger than ${maxBytes} bytes`);
    // the same inode, now known to be a regular file, opened for reading
    fd = libc().openat(AT_FDCWD, cString(`/proc/self/fd/${pathFd}`), O_RDONLY | O_NONBLOCK | O_CLOEXEC, 0);
    if (fd < 0) throw new Error(`cannot open "${what}": ${lastError()}`);
  } finally {
    libc().close(pathFd);
  }
  try {
    const buf = new Uint8Array(size + 1);
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
 * last element, never opening a FIFO or device (refused with {@link UnsafeEntryError}): what
 * is opened is the regular file that was checked, whatever replaces its name afterwards.
 */
export function openRegularFile(path: string): Deno.FsFile {
  const { fd } = regularPathFd(AT_FDCWD, path, path);
  try {
    return Deno.openSync(`/proc/self/fd/${fd}`, { read: true });
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

/** The last `max` bytes of the regular file `path` (opened as {@link openRegularFile} does). */
export function readTail(path: string, max: number): Uint8Array {
  const file = openRegularFile(path);
  try {
    const size = file.statSync().size;
    if (size > max) file.seekSync(size - max, Deno.SeekMode.Start);
    const buf = new Uint8Array(Math.min(size, max));
    let off = 0;
    while (off < buf.length) {
      const n = file.readSync(buf.subarray(off));
      if (n === null) break;
      off += n;
    }
    return buf.subarray(0, off);
  } finally {
    file.close();
  }
}
