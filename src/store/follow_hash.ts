/**
 * Hashes files while another process is still appending to them, so that when the writer is
 * done only the tail is left to hash: {@link HashFollower} follows the files of one directory
 * whose names match a pattern (CRIU's page images, `criu/pages-<n>.img`, see
 * `checkpoint/checkpoint.ts`), polling every few milliseconds, and reads each file only up to
 * its current size.
 *
 * Precondition (the caller's to establish): the writer only appends. A byte, once written,
 * is never rewritten, the file is never truncated, and a followed path is never replaced by
 * another file. CRIU 4.x dumping to local images meets it for page images: each `pages-<n>.img`
 * is created once (`O_CREAT|O_TRUNC`, a fresh id per dump) and written only by `splice()` at
 * the file position (`write_pages_loc` in `criu/page-xfer.c`, through `open_page_local_xfer`
 * for process memory and shared memory alike), with no seek, truncate or hole punch. That
 * holds for the dump ARCH asks for (`runc checkpoint --leave-running --image-path`, its CRIU
 * configuration: `runc/client.ts`, `criu/config.ts`); it was checked against CRIU
 * 4.2 for options ARCH does not use: hole punching only touches a parent dump's images with
 * `--auto-dedup`/`criu dedup`, and `--page-server`, `--lazy-pages`, `--pre-dump` and image
 * streaming write pages elsewhere or otherwise. Re-check before passing any of them.
 *
 * Guarantees:
 * - {@link HashFollower.finish}, called once the writer has exited, reads every matching file
 *   to EOF and returns its size and sha256, the same as `sha256File` on the finished file
 *   (under the precondition). It checks what it can: the bytes hashed equal the file's final
 *   size and the path still names the file that was read; a file that fails the check, or
 *   that the follower could not read, is hashed again from its start (the result is then
 *   right whatever happened, only slower).
 * - {@link HashFollower.abort} stops following (after a `finish` under way, if any, has
 *   ended); it never rejects. After `finish` or `abort` has settled, no timer, read or open
 *   file of the follower is left, and no promise of it can still reject.
 */

import { createHash, type Hash } from "node:crypto";
import { sha256File } from "./manifest.ts";

/** Size and sha256 of one file, as `sha256File` gives them. */
export interface Digest {
  readonly size: number;
  readonly sha256: string;
}

interface Followed {
  readonly file: Deno.FsFile;
  readonly hash: Hash;
  /** Bytes hashed so far (the file's read position). */
  size: number;
}

const CHUNK = 4 << 20;

/** Follows the files of `<root>/<sub>` whose names match a pattern; see the module doc. */
export class HashFollower {
  readonly #root: string;
  readonly #sub: string;
  readonly #match: RegExp;
  readonly #intervalMs: number;
  readonly #files = new Map<string, Followed>();
  readonly #buf = new Uint8Array(CHUNK);
  readonly #loop: Promise<void>;
  #stopping = false;
  #closed = false;
  #wake: (() => void) | undefined;
  #failed: unknown;
  #finishing: Promise<unknown> | undefined;
  /** Bytes hashed while the writer was still writing (before `finish`). */
  followedBytes = 0;
  /** Bytes hashed by `finish` (the tail). */
  tailBytes = 0;
  /** Files `finish` had to hash again from their start. */
  rehashed = 0;

  /** Starts following `<root>/<sub>/<name>` for names matching `match`; `<root>/<sub>` may not exist yet. */
  constructor(root: string, sub: string, match: RegExp, intervalMs = 10) {
    this.#root = root;
    this.#sub = sub;
    this.#match = match;
    this.#intervalMs = intervalMs;
    this.#loop = this.#run().catch((error) => {
      this.#failed = error;
    });
  }

  async #run(): Promise<void> {
    while (!this.#stopping) {
      const progressed = await this.#catchUp(false);
      if (progressed || this.#stopping) continue;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, this.#intervalMs);
        this.#wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.#wake = undefined;
    }
  }

  /** Opens new matching files and hashes what is there (to EOF when `toEof`); true if it read anything. */
  async #catchUp(toEof: boolean): Promise<boolean> {
    let names: string[] = [];
    try {
      names = [...Deno.readDirSync(`${this.#root}/${this.#sub}`)]
        .filter((e) => e.isFile && this.#match.test(e.name))
        .map((e) => e.name);
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    }
    for (const name of names.sort()) {
      const rel = `${this.#sub}/${name}`;
      if (this.#files.has(rel)) continue;
      const file = await Deno.open(`${this.#root}/${rel}`, { read: true });
      if (this.#closed) { // aborted while opening
        file.close();
        return false;
      }
      this.#files.set(rel, { file, hash: createHash("sha256"), size: 0 });
    }
    let progressed = false;
    for (const f of this.#files.values()) {
      // Never past the size seen now: what is below it is written for good (see the precondition).
      const end = toEof ? Infinity : (await f.file.stat()).size;
      while (f.size < end && (toEof || !this.#stopping)) {
        const n = await f.file.read(this.#buf.subarray(0, Math.min(CHUNK, end - f.size)));
        if (n === null) break; // EOF (below `end` only if the file shrank: finish() sees it)
        f.hash.update(this.#buf.subarray(0, n));
        f.size += n;
        if (toEof) this.tailBytes += n;
        else this.followedBytes += n;
        progressed = true;
      }
    }
    return progressed;
  }

  async #stop(): Promise<void> {
    this.#stopping = true;
    this.#wake?.();
    await this.#loop;
  }

  #closeAll(): void {
    this.#closed = true;
    for (const f of this.#files.values()) {
      try {
        f.file.close();
      } catch { /* already closed */ }
    }
  }

  /**
   * Once the writer has exited: reads every matching file to EOF and returns each one's size
   * and sha256, by path relative to the root (`<sub>/<name>`). A matching file it could not
   * open is missing from the map (the caller hashes it), and so is one removed meanwhile. Throws only if a file cannot be read
   * at all; call once.
   */
  finish(): Promise<Map<string, Digest>> {
    if (this.#closed || this.#finishing !== undefined) {
      return Promise.reject(new Error("the hash follower was already finished or aborted"));
    }
    const finishing = this.#finish();
    this.#finishing = finishing.catch(() => {});
    return finishing;
  }

  async #finish(): Promise<Map<string, Digest>> {
    await this.#stop();
    const out = new Map<string, Digest>();
    try {
      if (this.#failed === undefined) {
        try {
          await this.#catchUp(true);
        } catch (error) {
          this.#failed = error;
        }
      }
      for (const [rel, f] of this.#files) {
        const path = `${this.#root}/${rel}`;
        let named: Deno.FileInfo;
        try {
          named = await Deno.stat(path);
        } catch (error) {
          if (error instanceof Deno.errors.NotFound) continue; // removed: not the caller's to list
          throw error;
        }
        let intact = this.#failed === undefined;
        if (intact) {
          const read = await f.file.stat();
          intact = read.size === f.size && named.size === f.size && read.ino === named.ino && read.dev === named.dev;
        }
        if (intact) out.set(rel, { size: f.size, sha256: f.hash.digest("hex") });
        else {
          this.rehashed++;
          out.set(rel, await sha256File(path));
        }
      }
    } finally {
      this.#closeAll();
    }
    return out;
  }

  /** Stops following (the writer failed): closes every file. Never rejects; idempotent. */
  async abort(): Promise<void> {
    if (this.#finishing !== undefined) await this.#finishing; // let it end: it closes every file
    if (this.#closed) return;
    await this.#stop();
    this.#closeAll();
  }
}
