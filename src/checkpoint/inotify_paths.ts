/**
 * Lets CRIU checkpoint inotify watches on file systems it cannot open by file handle (the
 * container's overlay rootfs): before the dump, ARCH finds the path of every watched inode of
 * the container's processes and hands the list to CRIU as its inode reverse-map cache
 * (`irmap-cache` in CRIU's work directory), which CRIU reads before it scans anything. CRIU
 * checks each entry (same device and inode at that path in the container) before it uses it,
 * and records the path in the checkpoint, as it would have after a scan of its own. Without
 * it, CRIU only scans a few fixed directories (`/etc`, `/var/log`, ...) and fails the dump
 * ("fsnotify: Can't dump that handle").
 *
 * How: the watches are read from `/proc/<pid>/fdinfo` of every process of the container (the
 * init process and its descendants); each watched inode is searched, by inode number, below
 * the mount point of its file system in the container (from the container's own mountinfo;
 * see {@link findWatchedPaths}).
 *
 * Guarantees: read-only; each search is a child process killed after
 * {@link SEARCH_TIMEOUT_MS}, so a huge tree or a file system that stopped answering never
 * holds up ARCH's other checkpoints. The container's files belong to a tenant who may swap a
 * directory for a link while the search runs: the search starts from a descriptor opened
 * inside the container's root and follows no link below it. A wrong entry does no harm:
 * CRIU uses an entry only if the path has that device and inode in the container.
 *
 * Format (CRIU `images/fh.proto`, `criu/include/magic.h`): the service magic 0x55105940, the
 * irmap-cache magic 0x57004059, then `irmap_cache_entry { dev = 1 (kernel dev_t), inode = 2,
 * path = 3 }` messages, each after its u32 length.
 */

import { encodeVarint } from "../criu/protobuf.ts";
import { runCommand } from "../process/exec.ts";
import { Dir } from "../util/dirfd.ts";
import { openFds } from "../process/tree.ts";

/** One watched inode: its file system's device (kernel encoding, as fdinfo and CRIU write it) and inode number. */
export interface WatchedInode {
  readonly sdev: number;
  readonly ino: bigint;
}

/**
 * The inodes an fdinfo text's inotify watches name (`inotify wd:1 ino:2a sdev:800003 ...`).
 *
 * @example
 * ```ts
 * import { inotifyWatches } from "./inotify_paths.ts";
 * const w = inotifyWatches("pos:\t0\ninotify wd:1 ino:2a sdev:800003 mask:100 ignored_mask:0\n");
 * if (w.length !== 1 || w[0]!.ino !== 0x2an || w[0]!.sdev !== 0x800003) throw new Error();
 * ```
 */
export function inotifyWatches(fdinfo: string): WatchedInode[] {
  return [...fdinfo.matchAll(/^inotify wd:[0-9a-f]+ ino:([0-9a-f]+) sdev:([0-9a-f]+)\b/gm)].map((m) => ({
    ino: BigInt(`0x${m[1]}`),
    sdev: Number.parseInt(m[2]!, 16),
  }));
}

/** Every inode the inotify instances of the container whose init is `init` watch. */
export function containerWatches(init: number): WatchedInode[] {
  const out = new Map<string, WatchedInode>();
  for (const fd of openFds(init)) {
    if (fd.link !== "anon_inode:inotify") continue;
    try {
      for (const w of inotifyWatches(Deno.readTextFileSync(fd.infoPath))) out.set(`${w.sdev}:${w.ino}`, w);
    } catch { /* closed meanwhile */ }
  }
  return [...out.values()];
}

/** The kernel's dev_t (fdinfo, CRIU) of a userspace st_dev (glibc `makedev`). */
export function kernelDev(stDev: number): number {
  const dev = BigInt(stDev);
  const major = ((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn);
  const minor = (dev & 0xffn) | ((dev >> 12n) & ~0xffn);
  return Number((major << 20n) | minor);
}

/** Mount points (container paths) of each device, from the container's mountinfo. */
function mountPoints(init: number): Map<number, string[]> {
  const out = new Map<number, string[]>();
  for (const line of Deno.readTextFileSync(`/proc/${init}/mountinfo`).split("\n")) {
    const f = line.split(" ");
    const [major, minor] = (f[2] ?? "").split(":").map(Number);
    if (major === undefined || minor === undefined || f[4] === undefined) continue;
    const dev = ((major << 20) | minor) >>> 0;
    const point = f[4].replace(/\\([0-7]{3})/g, (_, o) => String.fromCharCode(parseInt(o, 8)));
    out.set(dev, [...(out.get(dev) ?? []), point]);
  }
  return out;
}

/** How long one search (one file system of the container) may take; the container waits, paused. */
export const SEARCH_TIMEOUT_MS = 10_000;

/**
 * The container path of each of `wanted` (those found). Each file system is searched by
 * `find` in a child process, bounded in time, from its mount point in the container opened
 * inside the container's root (`openat2` `RESOLVE_IN_ROOT`: a link the tenant planted on the
 * way cannot lead out), never crossing into another file system (`-xdev`) and never following
 * a link below it.
 */
export async function findWatchedPaths(init: number, wanted: readonly WatchedInode[]): Promise<Map<string, string>> {
  const found = new Map<string, string>();
  const points = mountPoints(init);
  using root = Dir.open(`/proc/${init}/root/.`);
  for (const dev of new Set(wanted.map((w) => w.sdev))) {
    const inodes = [...new Set(wanted.filter((w) => w.sdev === dev).map((w) => w.ino))];
    for (const point of points.get(dev) ?? []) {
      if (inodes.every((ino) => found.has(`${dev}:${ino}`))) break;
      let start: Dir;
      try {
        start = root.openInRoot(point);
      } catch {
        continue;
      }
      try {
        if (kernelDev(start.dev) !== dev) continue; // not the watched file system after all
        const match = inodes.flatMap((ino, i) => [...(i > 0 ? ["-o"] : []), "-inum", String(ino)]);
        const r = await runCommand({
          cmd: "find",
          args: ["-H", `/proc/${Deno.pid}/fd/${start.fd}`, "-xdev", "(", ...match, ")", "-printf", "%i\\t%P\\0"],
          timeoutMs: SEARCH_TIMEOUT_MS,
        });
        for (const hit of r.stdout.split("\0")) {
          const tab = hit.indexOf("\t");
          if (tab < 0) continue;
          const rel = hit.slice(tab + 1);
          const path = rel === "" ? point : `${point === "/" ? "" : point}/${rel}`;
          found.set(`${dev}:${BigInt(hit.slice(0, tab))}`, path);
        }
      } catch {
        /* find could not run: these watches stay unresolved */
      } finally {
        start.close();
      }
    }
  }
  return found;
}

const SERVICE_MAGIC = 0x55105940;
const IRMAP_CACHE_MAGIC = 0x57004059;

/** CRIU's `irmap-cache` image of `entries` (device, inode, container path). */
export function irmapCacheImage(entries: readonly { sdev: number; ino: bigint; path: string }[]): Uint8Array {
  const out: number[] = [];
  const u32 = (n: number) => out.push(n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff);
  u32(SERVICE_MAGIC);
  u32(IRMAP_CACHE_MAGIC);
  for (const e of entries) {
    const path = new TextEncoder().encode(e.path);
    const msg = [
      0x08,
      ...encodeVarint(BigInt(e.sdev)),
      0x10,
      ...encodeVarint(e.ino),
      0x1a,
      ...encodeVarint(BigInt(path.length)),
      ...path,
    ];
    u32(msg.length);
    out.push(...msg);
  }
  return new Uint8Array(out);
}

/**
 * Writes CRIU's irmap cache into `workDir` for the inotify watches of the container whose
 * init is `init`; returns how many watched inodes it found a path for, and how many not
 * (CRIU then fails the dump with its own cause). Writes nothing when there is no watch.
 */
export async function prepareInotifyPaths(
  init: number,
  workDir: string,
): Promise<{ found: number; missing: number }> {
  const watches = containerWatches(init);
  if (watches.length === 0) return { found: 0, missing: 0 };
  const paths = await findWatchedPaths(init, watches);
  const entries = watches.flatMap((w) => {
    const path = paths.get(`${w.sdev}:${w.ino}`);
    return path === undefined ? [] : [{ ...w, path }];
  });
  if (entries.length > 0) {
    Deno.mkdirSync(workDir, { recursive: true, mode: 0o700 });
    Deno.writeFileSync(`${workDir}/irmap-cache`, irmapCacheImage(entries), { mode: 0o600 });
  }
  return { found: entries.length, missing: watches.length - entries.length };
}
