/** Cgroup files found on v1, hybrid and unified (v2) nodes, from mountinfo and /proc/<pid>/cgroup. */

import { deepEqual as assertEquals, ok } from "node:assert/strict";
import { cgroupFileOf, cgroupMounts, readCgroupFile } from "../../src/util/cgroups.ts";

const HYBRID = [
  "30 25 0:26 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory",
  "31 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct",
  "32 25 0:28 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd",
  "33 25 0:29 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate",
].join("\n");
const UNIFIED = "40 1 0:30 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
const MEMORY = { v1: "memory.usage_in_bytes", v2: "memory.current" };

Deno.test("cgroup files on each layout", async (t) => {
  const cases: [string, string, string, string | undefined][] = [
    [
      "hybrid: memory on v1",
      HYBRID,
      "9:memory:/docker/c1\n1:name=systemd:/docker/c1\n0::/docker/c1\n",
      "/sys/fs/cgroup/memory/docker/c1/memory.usage_in_bytes",
    ],
    ["unified: v2 wherever it is mounted", UNIFIED, "0::/docker/c1\n", "/sys/fs/cgroup/docker/c1/memory.current"],
    [
      "hybrid, controller not on v1: the v2 file",
      HYBRID.split("\n").slice(1).join("\n"),
      "0::/c1\n",
      "/sys/fs/cgroup/unified/c1/memory.current",
    ],
    ["no hierarchy for it", "", "9:memory:/c1\n", undefined],
  ];
  for (const [name, mountinfo, proc, want] of cases) {
    await t.step(name, () => assertEquals(cgroupFileOf(proc, cgroupMounts(mountinfo), "memory", MEMORY), want));
  }
  assertEquals(cgroupMounts(HYBRID).v1.get("cpuacct"), "/sys/fs/cgroup/cpu,cpuacct");
  ok(!cgroupMounts(HYBRID).v1.has("name=systemd"));
});

Deno.test("this process's memory cgroup file, where this machine has one, is read", () => {
  const mounts = cgroupMounts(Deno.readTextFileSync("/proc/self/mountinfo"));
  const path = cgroupFileOf(Deno.readTextFileSync("/proc/self/cgroup"), mounts, "memory", MEMORY);
  const exists = path !== undefined && (() => {
    try {
      return Deno.statSync(path).isFile;
    } catch {
      return false; // a v2 root cgroup has no memory.current
    }
  })();
  const text = readCgroupFile(Deno.pid, "memory", MEMORY);
  assertEquals(text !== undefined, exists, String(path));
  if (text !== undefined) ok(Number(text.trim()) > 0, text);
});
