/**
 * How much a checkpoint of a running container will hold besides its writable layer: its
 * memory, and the files its processes hold open after deleting them, which CRIU copies in.
 * The space budget and the finalize plan use these before CRIU runs. (What a checkpoint did
 * hold is the size of its page images: `criu/images.ts`.)
 */

import { readCgroupFile } from "../util/cgroups.ts";
import { openFds } from "../process/tree.ts";

/**
 * Bytes CRIU will write for the container whose init is `pid`: anonymous plus shared memory of
 * its memory cgroup and the cgroups below it, as the kernel counts them once (`memory.stat`:
 * v2 `anon` + `shmem`, v1 `total_rss` + `total_shmem`), so shared memory mapped by many
 * processes is not counted once per process; the init's own RssAnon + RssShmem when the
 * cgroup cannot be read; `undefined` when nothing can.
 */
export function memoryToDump(pid: number): number | undefined {
  // v1 `total_*` counts the cgroups below too; v2 `memory.stat` always does.
  const text = readCgroupFile(pid, "memory", { v1: "memory.stat", v2: "memory.stat" });
  if (text !== undefined) {
    const v1 = /^total_rss /m.test(text);
    const keys = v1 ? ["total_rss", "total_shmem"] : ["anon", "shmem"];
    const values = keys.map((k) => text.match(new RegExp(`^${k} (\\d+)$`, "m"))?.[1]);
    if (values.every((v) => v !== undefined)) return values.reduce((n, v) => n + Number(v), 0);
  }
  try {
    const status = Deno.readTextFileSync(`/proc/${pid}/status`);
    return ["RssAnon", "RssShmem"].reduce((n, field) => {
      const m = status.match(new RegExp(`^${field}:\\s+(\\d+) kB`, "m"));
      return n + (m ? Number(m[1]) * 1024 : 0);
    }, 0);
  } catch {
    return undefined;
  }
}

/**
 * Bytes of the deleted-but-open regular files of the container whose init is `init` that CRIU
 * will copy into the checkpoint (each at most `limit`, CRIU's ghost-file limit; a larger one
 * fails the dump anyway), counted once per file.
 */
export function deletedOpenBytes(init: number, limit: number): number {
  const seen = new Set<string>();
  let total = 0;
  for (const fd of openFds(init)) {
    // Only a deleted file is stat'ed (the link says so), never a live one on a file system that may hang.
    if (!fd.link.endsWith(" (deleted)")) continue;
    try {
      const info = Deno.statSync(fd.path);
      const id = `${info.dev}:${info.ino}`;
      if (!info.isFile || info.nlink !== 0 || seen.has(id)) continue;
      seen.add(id);
      if (info.size <= limit) total += info.size;
    } catch { /* closed meanwhile */ }
  }
  return total;
}
