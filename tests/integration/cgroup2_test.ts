/**
 * cgroup v2, as production nodes run it (Amazon Linux 2023 ECS/Batch AMIs, Bottlerocket, Ubuntu
 * ≥ 22.04): the stack's node mounts the unified hierarchy at `/sys/fs/cgroup` (`stack.ts`,
 * `cgroup2`), so runc, containerd and dockerd run in unified mode and `runc pause` freezes through
 * `cgroup.freeze`. A Docker job and a ctr job are finalized and resume in new containers. This
 * machine's controllers stay bound to v1, so no container here asks for limits, and the finalize
 * estimate falls back to the init's RSS (the v2 `memory.stat` path itself is unit-tested,
 * `tests/unit/cgroups_test.ts`).
 */

import { deepEqual as assertEquals, ok } from "node:assert/strict";
import { archCli, archCtrRun, archDockerRun, eventually, stackTest, uniqueName } from "./_env.ts";
import { dockerProgress, fullId, parseProgress, waitTicks } from "./_workload.ts";

stackTest("cgroup v2: finalize and resume through Docker and containerd", async (t, stack) => {
  await t.step("the node is unified: runc puts the container in a v2 cgroup only", async () => {
    const fs = await stack.run({ cmd: "stat", args: ["-f", "-c", "%T", "/sys/fs/cgroup"] });
    assertEquals(fs.stdout.trim(), "cgroup2fs");
    const name = uniqueName("v2");
    await stack.docker(archDockerRun(name, uniqueName("k")));
    await waitTicks(stack, name, 2);
    const pid = (await stack.docker(["inspect", "-f", "{{.State.Pid}}", name])).stdout.trim();
    // Read in the node: its cgroup view is the unified hierarchy.
    const cgroup = (await stack.run({ cmd: "cat", args: [`/proc/${pid}/cgroup`] })).stdout;
    const unified = cgroup.split("\n").find((l) => l.startsWith("0::"));
    ok(unified !== undefined && unified.length > 4, cgroup);
    const frozen = await stack.run({ cmd: "cat", args: [`/sys/fs/cgroup${unified.slice(3)}/cgroup.freeze`] });
    assertEquals(frozen.stdout.trim(), "0");
    await stack.docker(["rm", "-f", name]);
  });

  await t.step("arch finalize saves a Docker and a ctr job; new containers resume them", async () => {
    const key = uniqueName("v2d"), ctrKey = uniqueName("v2c");
    const first = uniqueName("d1");
    await stack.docker(archDockerRun(first, key));
    const ctrFirst = uniqueName("c1"), ctrLog = `${stack.scratch}/${ctrFirst}.log`;
    const job = ["workload", "--interval-ms", "50", "--verify-every", "10"];
    await stack.ctr(archCtrRun(ctrFirst, ctrKey, job, ctrLog));
    await waitTicks(stack, first, 10);
    const ctrTicks = async (log: string) => parseProgress(await Deno.readTextFile(log).catch(() => ""));
    await eventually("the ctr job's ticks", async () => (await ctrTicks(ctrLog)).lastTick >= 10 || undefined);
    const ls = JSON.parse((await archCli(stack, ["ls", "--json"])).stdout) as { id: string; protection: string }[];
    assertEquals(
      ls.filter((r) => r.protection === "protected").map((r) => r.id).sort(),
      [await fullId(stack, first), ctrFirst].sort(),
    );

    const fin = await archCli(stack, ["finalize"]);
    assertEquals(fin.code, 0, fin.stdout + fin.stderr);
    ok(/^finalize: 2 saved, 0 failed, 0 not started in /m.test(fin.stdout), fin.stdout);
    assertEquals((await archCli(stack, ["finalize", "--undo"])).code, 0);
    const before = await dockerProgress(stack, first);
    const ctrBefore = await ctrTicks(ctrLog);

    const second = uniqueName("d2");
    await stack.docker(archDockerRun(second, key));
    const after = await waitTicks(stack, second, before.lastTick + 5);
    assertEquals([after.starts, after.firstTick, after.verifyFailures], [0, before.lastTick + 1, 0]);
    await stack.ctr(["tasks", "delete", ctrFirst], { check: false });
    const ctrSecond = uniqueName("c2"), ctrLog2 = `${stack.scratch}/${ctrSecond}.log`;
    await stack.ctr(archCtrRun(ctrSecond, ctrKey, job, ctrLog2));
    const ctrAfter = await eventually("the ctr job going on", async () => {
      const p = await ctrTicks(ctrLog2);
      return p.lastTick >= ctrBefore.lastTick + 5 ? p : undefined;
    });
    assertEquals([ctrAfter.starts, ctrAfter.ticks[0]], [0, ctrBefore.lastTick + 1]);
    await stack.docker(["rm", "-f", first, second]);
  });
}, { cgroup2: true });
