/**
 * Where checkpoints live and how they are committed.
 *
 * Layout under a checkpoint root:
 *
 *     <root>/<scope>/<key>/
 *         current -> ckpt-<stamp>      the committed checkpoint (a symlink)
 *         ckpt-<stamp>/                manifest.json, manifest.hmac, criu/, rootfs.tar
 *         .tmp-<stamp>/                being written; never taken for a checkpoint
 *         .claim/                      the key's claim (`claim.ts`) while an operation runs
 *         quarantine-<stamp>/          a checkpoint whose restore failed, kept to inspect
 *
 * Guarantees: a checkpoint becomes visible only by the atomic rename of the `current`
 * symlink, after its files and directory are fsync'ed; the previous checkpoint of the key
 * stays current until then. Directories are 0700 and files 0600 (images hold memory and
 * secrets). Scope and key must be safe single path elements, and the directories down to
 * the key's are entered without following symlinks (`safe_dir.ts`). Operations that change
 * a key run under its claim; a key is deleted by renaming it away first, so it vanishes at
 * once for everyone. Every removal works from directory descriptors (`util/dirfd.ts`): it
 * never follows a link and never leaves the tree it was given.
 */

import {
  CHECKPOINT_PREFIX,
  CONSUMED_FILE,
  CURRENT_LINK,
  CURRENT_TMP_PREFIX,
  QUARANTINE_PREFIX,
  REMOVED_PREFIX,
  TMP_PREFIX,
} from "./layout.ts";
import { isSafeSegment } from "../util/paths.ts";
import { fsyncPath } from "../util/fsync.ts";
import { beneath } from "./safe_dir.ts";
import { Dir } from "../util/dirfd.ts";
import { whilePending } from "../util/while_pending.ts";
import { type Claim, CLAIM_DIR, claimKey, type ClaimOptions } from "./claim.ts";

/**
 * Why `key` may not be a checkpoint key although it is a safe path element: it begins with
 * `.` or is, or begins like, a name the store creates in a scope or key directory (so a key
 * directory could be taken for another key's entry); `undefined` if it may.
 *
 * @example
 * ```ts
 * import { reservedKeyProblem } from "./store.ts";
 * if (reservedKeyProblem("job-7") !== undefined || reservedKeyProblem("ckpt-1") === undefined) throw new Error();
 * ```
 */
export function reservedKeyProblem(key: string): string | undefined {
  if (key.startsWith(".")) return `it begins with "."`;
  if (key === CURRENT_LINK || key === CLAIM_DIR) return `it is "${key}", a name ARCH uses inside a key directory`;
  for (const prefix of [CHECKPOINT_PREFIX, QUARANTINE_PREFIX, TMP_PREFIX, CURRENT_TMP_PREFIX, REMOVED_PREFIX]) {
    if (key.startsWith(prefix)) return `it begins with "${prefix}", which ARCH uses for its own directories`;
  }
  return undefined;
}

/** The checkpoints of one key, `<root>/<scope>/<key>` (see the module doc); throws on an unsafe scope or key. */
export class KeyStore {
  readonly dir: string;

  constructor(readonly root: string, readonly scope: string, readonly key: string) {
    if (!isSafeSegment(scope)) throw new Error(`unsafe key scope "${scope}"`);
    if (!isSafeSegment(key)) throw new Error(`unsafe checkpoint key "${key}"`);
    this.dir = `${root}/${scope}/${key}`;
  }

  /** Whether the key's directory exists (checked component by component, never through a symlink). */
  exists(): boolean {
    return beneath(this.root, [this.scope, this.key], false) !== undefined;
  }

  /** Creates the key's directory (0700, component by component) if needed. */
  ensure(): void {
    beneath(this.root, [this.scope, this.key], true);
  }

  /**
   * The key's directory (or, with `parent`, its scope directory) held by descriptor, entered
   * from the root without following a link and checked root-only at each step; `undefined` if
   * it does not exist.
   */
  open(parent = false): Dir | undefined {
    using root = Dir.open(this.root, { rootOnly: true });
    return root.descend(parent ? [this.scope] : [this.scope, this.key], { rootOnly: true, sameDevice: true });
  }

  /** Removes the entry `name` of the key directory (a whole tree), from descriptors only (`util/dirfd.ts`). */
  #removeEntry(name: string): void {
    using dir = this.open();
    dir?.removeTree(name);
  }

  /** Takes the key's claim (creating the key directory if `create`). */
  async claim(op: string, options: ClaimOptions & { create?: boolean }): Promise<Claim> {
    if (options.create) this.ensure();
    else if (!this.exists()) throw new Deno.errors.NotFound(`no checkpoint key "${this.key}"`);
    return await claimKey(this.dir, op, options);
  }

  /**
   * A fresh temporary checkpoint directory. Under the claim: leftovers of writers that died
   * (`.tmp-*`) are removed first.
   */
  beginCheckpoint(): string {
    this.ensure();
    {
      using dir = this.open()!;
      for (const name of dir.names()) if (name.startsWith(TMP_PREFIX)) dir.removeTree(name);
    }
    const tmp = `${this.dir}/${TMP_PREFIX}${stamp()}`;
    Deno.mkdirSync(tmp, { mode: 0o700 });
    return tmp;
  }

  /**
   * Makes `tmp` the committed checkpoint: every file and directory in it must already be
   * durable ({@link makeDurable}); rename it to `ckpt-<stamp>`, point `current` at it
   * atomically, fsync the key directory, then remove the checkpoint it replaced. Returns the
   * committed directory.
   */
  commit(tmp: string, name = newCheckpointName()): string {
    if (!name.startsWith(CHECKPOINT_PREFIX) || !isSafeSegment(name)) throw new Error(`bad checkpoint name "${name}"`);
    privateTree(tmp);
    fsyncPath(tmp);
    const final = `${this.dir}/${name}`;
    Deno.renameSync(tmp, final);
    const previous = this.currentPath();
    const link = `${this.dir}/${CURRENT_TMP_PREFIX}${stamp()}`;
    Deno.symlinkSync(name, link);
    Deno.renameSync(link, `${this.dir}/${CURRENT_LINK}`); // the commit point
    try {
      fsyncPath(this.dir);
      if (previous !== undefined && previous !== final) this.#removeEntry(previous.slice(this.dir.length + 1));
    } catch { /* committed; a leftover previous checkpoint is only space (removed with the key) */ }
    return final;
  }

  /** Removes an uncommitted temporary directory (after a failure). */
  abort(tmp: string): void {
    if (!tmp.startsWith(`${this.dir}/`)) throw new Error(`"${tmp}" is not in key directory "${this.dir}"`);
    this.#removeEntry(tmp.slice(this.dir.length + 1));
  }

  /** The committed checkpoint directory, if any (a real directory named by `current`). */
  currentPath(): string | undefined {
    try {
      const target = Deno.readLinkSync(`${this.dir}/${CURRENT_LINK}`);
      if (!isSafeSegment(target) || !target.startsWith(CHECKPOINT_PREFIX)) return undefined;
      const info = Deno.lstatSync(`${this.dir}/${target}`);
      return info.isDirectory ? `${this.dir}/${target}` : undefined;
    } catch {
      return undefined;
    }
  }

  /** Moves the current checkpoint aside (`quarantine-<stamp>`) and unpublishes it. */
  quarantine(): string | undefined {
    const current = this.currentPath();
    if (current === undefined) return undefined;
    const dest = `${this.dir}/${QUARANTINE_PREFIX}${stamp()}`;
    Deno.removeSync(`${this.dir}/${CURRENT_LINK}`);
    Deno.renameSync(current, dest);
    fsyncPath(this.dir);
    return dest;
  }

  /**
   * Marks the current checkpoint consumed (restored once) by `by` (for the message another
   * container of the key gets); durable before it returns.
   */
  markConsumed(by: { container: string; node: string } = { container: "?", node: "?" }): void {
    const current = this.currentPath();
    if (current !== undefined) {
      try {
        const text = JSON.stringify({ at: new Date().toISOString(), ...by }) + "\n";
        // createNew: O_EXCL, so a planted `consumed` symlink is never written through
        Deno.writeTextFileSync(`${current}/consumed`, text, {
          mode: 0o600,
          createNew: true,
        });
      } catch (error) {
        if (!(error instanceof Deno.errors.AlreadyExists)) throw error;
      }
      if (Deno.lstatSync(`${current}/consumed`).isFile) fsyncPath(`${current}/consumed`); // never open a planted FIFO
      fsyncPath(current);
    }
  }

  /** Who restored the current checkpoint, as words (`by container "c1" on node "n1" at ...`). */
  consumedBy(): string | undefined {
    const current = this.currentPath();
    if (current === undefined) return undefined;
    try {
      // a regular file of at most 1 KiB, never through a link, never blocking on a FIFO (`util/dirfd.ts`)
      using dir = Dir.open(current);
      const bytes = dir.readFile(CONSUMED_FILE, 1024);
      const { at, container, node } = JSON.parse(new TextDecoder().decode(bytes)) as Record<
        string,
        unknown
      >;
      const q = (v: unknown) => JSON.stringify(String(v).slice(0, 128)).replace(/[\u007f-\u009f]/g, "?"); // C1 too
      const time = String(at).slice(0, 40).replace(/[^0-9A-Za-z:.+-]/g, ""); // an ISO time: nothing else shown
      return `by container ${q(container)} on node ${q(node)} at ${time}`;
    } catch {
      return undefined;
    }
  }

  isConsumed(): boolean {
    const current = this.currentPath();
    if (current === undefined) return false;
    try {
      Deno.lstatSync(`${current}/consumed`);
      return true;
    } catch {
      return false;
    }
  }

  /**
   * Removes everything of this key: renamed away first (atomic: from then on the key has no
   * checkpoint for anyone, and its claim went with it), then deleted.
   */
  removeAll(): void {
    // From the scope directory's descriptor: whatever is renamed or exchanged on the way
    // afterwards, the rename and the removal stay inside this key's scope directory.
    using scopeDir = this.open(true);
    if (scopeDir === undefined || scopeDir.lstat(this.key) === undefined) return;
    const aside = `${REMOVED_PREFIX}${stamp()}`;
    scopeDir.rename(this.key, aside);
    fsyncPath(scopeDir.at());
    scopeDir.removeTree(aside);
  }
}

/** A fresh name for a committed checkpoint directory (`ckpt-<stamp>`). */
export function newCheckpointName(): string {
  return `${CHECKPOINT_PREFIX}${stamp()}`;
}

let counter = 0;
function stamp(): string {
  return `${new Date().toISOString().replace(/[-:.]/g, "")}-${Deno.pid}-${counter++}`;
}

/** Makes every directory below `dir` 0700 and every file 0600 (CRIU and tar honour the umask). */
function privateTree(dir: string): void {
  Deno.chmodSync(dir, 0o700);
  for (const entry of Deno.readDirSync(dir)) {
    const path = `${dir}/${entry.name}`;
    if (entry.isDirectory) privateTree(path);
    else if (entry.isFile) Deno.chmodSync(path, 0o600);
  }
}

/**
 * fsyncs every regular file and directory below `dir`, then `dir` itself. Async: the syncs
 * run on Deno's blocking pool, so hashing can go on at the same time.
 */
export async function makeDurable(dir: string): Promise<void> {
  const syncs: Promise<void>[] = [];
  for (const entry of Deno.readDirSync(dir)) {
    const path = `${dir}/${entry.name}`;
    if (entry.isDirectory) syncs.push(makeDurable(path));
    else if (entry.isFile) syncs.push(syncFile(path));
  }
  await Promise.all(syncs);
  await syncFile(dir);
}

async function syncFile(path: string): Promise<void> {
  const file = await Deno.open(path, { read: true });
  try {
    await file.sync();
  } finally {
    file.close();
  }
}

/**
 * Starts writing back the dirty pages of the files below `dir` every `intervalMs` until
 * `until` settles, so that the final {@link makeDurable} has little left to flush (CRIU
 * writes faster than the kernel's lazy writeback would start on its own). A write-back error
 * one of these fsyncs sees is thrown once `until` settles: Linux reports it to the fsync that
 * saw it, not again to the final one's fresh descriptors, so swallowing it here would let a
 * checkpoint commit without the durability it claims.
 */
export async function flushWhile(dir: string, until: Promise<unknown>, intervalMs = 250): Promise<void> {
  let failure: unknown;
  await whilePending(until, intervalMs, async () => {
    try {
      await makeDurable(dir);
    } catch (error) {
      // Files come and go while CRIU writes (not found: fine); anything else is a real failure.
      if (!(error instanceof Deno.errors.NotFound)) failure ??= error;
    }
  });
  if (failure !== undefined) throw failure;
}
