/**
 * Where checkpoints live and how they are committed.
 *
 * Layout under a checkpoint root (local mode: `ARCH_CHECKPOINT_HOST_PATH`):
 *
 *     <root>/<namespace>/<key>/
 *         current -> ckpt-<stamp>      the committed checkpoint (a symlink)
 *         ckpt-<stamp>/                manifest.json, criu/, rootfs.tar
 *         .tmp-<stamp>/                being written; never taken for a checkpoint
 *         quarantine-<stamp>/          a checkpoint whose restore failed, kept to inspect
 *
 * Guarantees: a checkpoint becomes visible only by the atomic rename of the `current`
 * symlink, after its files and directory are fsync'ed; the previous checkpoint of the key
 * stays current until then. Directories are 0700 and files 0600 (images hold memory and
 * secrets). Namespace and key must be safe single path elements, so nothing built from
 * them can leave `<root>`.
 */

import { isSafeSegment } from "../util/paths.ts";
import { fsyncPath } from "../util/fsync.ts";

export class KeyStore {
  readonly dir: string;

  constructor(readonly root: string, readonly namespace: string, readonly key: string) {
    if (!isSafeSegment(namespace)) throw new Error(`unsafe namespace "${namespace}"`);
    if (!isSafeSegment(key)) throw new Error(`unsafe checkpoint key "${key}"`);
    this.dir = `${root}/${namespace}/${key}`;
  }

  /** Creates the key directory (0700) and a fresh temporary checkpoint directory in it. */
  beginCheckpoint(): string {
    Deno.mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    Deno.chmodSync(`${this.root}/${this.namespace}`, 0o700);
    Deno.chmodSync(this.dir, 0o700);
    const tmp = `${this.dir}/.tmp-${stamp()}`;
    Deno.mkdirSync(tmp, { mode: 0o700 });
    return tmp;
  }

  /**
   * Makes `tmp` the committed checkpoint: every file and directory in it must already be
   * durable ({@link makeDurable}); rename it to `ckpt-<stamp>`, point `current` at it
   * atomically, fsync the key directory, then remove the checkpoint it replaced. Returns the
   * committed directory.
   */
  commit(tmp: string): string {
    privateTree(tmp);
    fsyncPath(tmp);
    const name = `ckpt-${stamp()}`;
    const final = `${this.dir}/${name}`;
    Deno.renameSync(tmp, final);
    const previous = this.currentPath();
    const link = `${this.dir}/.current-${stamp()}`;
    Deno.symlinkSync(name, link);
    Deno.renameSync(link, `${this.dir}/current`);
    fsyncPath(this.dir);
    if (previous !== undefined && previous !== final) Deno.removeSync(previous, { recursive: true });
    return final;
  }

  /**
   * Takes the key's exclusive lock (flock on `<key>/.lock`), waiting for a holder to finish:
   * two checkpoints of one key never interleave. Released when the returned handle is disposed.
   */
  async lock(): Promise<Disposable> {
    Deno.mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    const file = await Deno.open(`${this.dir}/.lock`, { read: true, write: true, create: true, mode: 0o600 });
    await file.lock(true);
    return { [Symbol.dispose]: () => file.close() };
  }

  /** Removes an uncommitted temporary directory (after a failure). */
  abort(tmp: string): void {
    Deno.removeSync(tmp, { recursive: true });
  }

  /** The committed checkpoint directory, if any. */
  currentPath(): string | undefined {
    try {
      const target = Deno.readLinkSync(`${this.dir}/current`);
      if (!isSafeSegment(target) || !target.startsWith("ckpt-")) return undefined;
      return `${this.dir}/${target}`;
    } catch {
      return undefined;
    }
  }

  /** Moves the current checkpoint aside (`quarantine-<stamp>`) and unpublishes it. */
  quarantine(): string | undefined {
    const current = this.currentPath();
    if (current === undefined) return undefined;
    const dest = `${this.dir}/quarantine-${stamp()}`;
    Deno.removeSync(`${this.dir}/current`);
    Deno.renameSync(current, dest);
    fsyncPath(this.dir);
    return dest;
  }

  /** Marks the current checkpoint consumed (restored once). */
  markConsumed(): void {
    const current = this.currentPath();
    if (current !== undefined) {
      Deno.writeTextFileSync(`${current}/consumed`, new Date().toISOString() + "\n", { mode: 0o600 });
    }
  }

  isConsumed(): boolean {
    const current = this.currentPath();
    if (current === undefined) return false;
    try {
      Deno.statSync(`${current}/consumed`);
      return true;
    } catch {
      return false;
    }
  }

  /** Removes everything of this key. */
  removeAll(): void {
    Deno.removeSync(this.dir, { recursive: true });
  }
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
 * writes faster than the kernel's lazy writeback would start on its own).
 */
export async function flushWhile(dir: string, until: Promise<unknown>, intervalMs = 250): Promise<void> {
  let done = false;
  const finished = until.then(() => (done = true), () => (done = true));
  while (!done) {
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([finished, new Promise((r) => (timer = setTimeout(r, intervalMs)))]);
    clearTimeout(timer);
    if (done) return;
    try {
      await makeDurable(dir);
    } catch {
      // files come and go while CRIU writes; the final makeDurable is the one that counts
    }
  }
}
