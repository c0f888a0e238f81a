/**
 * A process's cgroup files on cgroup v1, v2 and the hybrid of both: where a controller's file
 * is is read from mountinfo (v1 hierarchies by their controllers, the v2 hierarchy wherever it
 * is mounted: `/sys/fs/cgroup` on a unified node, `/sys/fs/cgroup/unified` on a hybrid one) and
 * from `/proc/<pid>/cgroup`, never assumed. A controller bound to a v1 hierarchy is read there
 * (on a hybrid node the v2 hierarchy holds no controller); otherwise the v2 file is used.
 *
 * Guarantees: read-only, never throws; `undefined` when the file cannot be found or read (a
 * controller not enabled on v2, a process gone).
 */

import { parseMountinfo } from "./mounts.ts";

/** Where the cgroup hierarchies are mounted. */
export interface CgroupMounts {
  /** v1 controller (`memory`, `freezer`, `pids`, …) → mount point. */
  readonly v1: ReadonlyMap<string, string>;
  /** The v2 (unified) hierarchy's mount point, if mounted. */
  readonly v2?: string;
}

/**
 * The cgroup mounts of a mountinfo text (the first mount of each hierarchy wins).
 *
 * @example
 * ```ts
 * import { cgroupMounts } from "./cgroups.ts";
 * const m = cgroupMounts(
 *   "30 25 0:26 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n" +
 *     "31 25 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n",
 * );
 * if (m.v1.get("memory") !== "/sys/fs/cgroup/memory" || m.v2 !== "/sys/fs/cgroup/unified") throw new Error();
 * ```
 */
export function cgroupMounts(mountinfo: string): CgroupMounts {
  const v1 = new Map<string, string>();
  let v2: string | undefined;
  for (const line of mountinfo.split("\n")) {
    const fields = line.split(" ");
    const dash = fields.indexOf("-");
    if (dash < 6) continue;
    const fstype = fields[dash + 1];
    const [m] = parseMountinfo(line);
    if (m === undefined) continue;
    if (fstype === "cgroup2") v2 ??= m.mountPoint;
    else if (fstype === "cgroup") {
      for (const option of (fields[dash + 3] ?? "").split(",")) {
        if (!v1.has(option) && !["rw", "ro"].includes(option) && !option.includes("=")) v1.set(option, m.mountPoint);
      }
    }
  }
  return v2 !== undefined ? { v1, v2 } : { v1 };
}

/**
 * The path of a cgroup file of `pid`: `names.v1` in its `controller` v1 cgroup when that
 * controller is on a v1 hierarchy, else `names.v2` in its v2 cgroup. Pure (given the texts).
 *
 * @example
 * ```ts
 * import { cgroupFileOf, cgroupMounts } from "./cgroups.ts";
 * const v2 = cgroupMounts("40 1 0:30 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
 * const path = cgroupFileOf("0::/docker/abc\n", v2, "memory", { v1: "memory.usage_in_bytes", v2: "memory.current" });
 * if (path !== "/sys/fs/cgroup/docker/abc/memory.current") throw new Error();
 * ```
 */
export function cgroupFileOf(
  procCgroup: string,
  mounts: CgroupMounts,
  controller: string,
  names: { readonly v1: string; readonly v2: string },
): string | undefined {
  const lines = procCgroup.split("\n");
  const v1Mount = mounts.v1.get(controller);
  if (v1Mount !== undefined) {
    const line = lines.find((l) => l.split(":")[1]?.split(",").includes(controller));
    if (line !== undefined) return `${v1Mount}${line.slice(line.indexOf(":", line.indexOf(":") + 1) + 1)}/${names.v1}`;
  }
  const unified = lines.find((l) => l.startsWith("0::"));
  if (mounts.v2 !== undefined && unified !== undefined) {
    return `${mounts.v2.replace(/\/$/, "")}${unified.slice(3)}/${names.v2}`;
  }
  return undefined;
}

let cachedMounts: CgroupMounts | undefined;

/** Reads a cgroup file of `pid` (see {@link cgroupFileOf}); `undefined` if it cannot. */
export function readCgroupFile(
  pid: number,
  controller: string,
  names: { readonly v1: string; readonly v2: string },
): string | undefined {
  try {
    // Read once per process: a finalize asks for hundreds of containers.
    const mounts = cachedMounts ??= cgroupMounts(Deno.readTextFileSync("/proc/self/mountinfo"));
    const path = cgroupFileOf(Deno.readTextFileSync(`/proc/${pid}/cgroup`), mounts, controller, names);
    return path === undefined ? undefined : Deno.readTextFileSync(path);
  } catch {
    return undefined;
  }
}
