/**
 * What ECS and AWS Batch add to a container, through Docker on its default layout: `--init`
 * (ECS `initProcessEnabled` bind-mounts `docker-init` as the container's init), a log driver
 * other than json-file (`local`, `none`), and a restart policy on a node that `arch finalize`
 * drained (no restart storm, no checkpoint lost, and the exit status a Batch `evaluateOnExit`
 * rule sees: 137, the SIGKILL that stops a saved container).
 */

import { deepEqual as assertEquals, ok } from "node:assert/strict";
import { archCli, archDockerRun, eventually, stackTest, uniqueName } from "./_env.ts";
import { dockerProgress, parseProgress, waitTicks } from "./_workload.ts";

const JOB = ["workload", "--interval-ms", "50", "--verify-every", "10"];

stackTest("what ECS and AWS Batch add to a container", async (t, stack) => {
  const finalize = async (saved: number) => {
    const r = await archCli(stack, ["finalize"]);
    assertEquals(r.code, 0, r.stdout + r.stderr);
    ok(new RegExp(`^finalize: ${saved} saved, 0 failed, 0 not started in `, "m").test(r.stdout), r.stdout);
  };
  const undo = async () => assertEquals((await archCli(stack, ["finalize", "--undo"])).code, 0);

  await t.step("docker run --init: the job under docker-init is saved and resumes in a new container", async () => {
    const key = uniqueName("init");
    const first = uniqueName("i1");
    await stack.docker(archDockerRun(first, key, ["--init"]));
    await waitTicks(stack, first, 10);
    const tree = (await stack.docker(["top", first, "-o", "pid,comm"])).stdout;
    ok(/docker-init/.test(tree) && /workload/.test(tree), tree);
    await finalize(1);
    await undo();
    const before = await dockerProgress(stack, first);
    const second = uniqueName("i2");
    await stack.docker(archDockerRun(second, key, ["--init"]));
    const after = await waitTicks(stack, second, before.lastTick + 5);
    assertEquals([after.starts, after.verifyFailures], [0, 0], "restored, its memory intact");
    // A tick line still in the pipe at the dump comes back with it (CRIU restores pipe data).
    ok(
      after.firstTick >= before.lastTick - 2 && after.firstTick <= before.lastTick + 1,
      JSON.stringify({ before, after }),
    );
    await stack.docker(["rm", "-f", first, second]);
  });

  await t.step("--log-driver local and none: saved and resumed", async () => {
    for (const driver of ["local", "none"]) {
      const key = uniqueName(`log-${driver}`);
      const first = uniqueName(`${driver}1`);
      // The tick also goes to a file in the writable layer: with "none" there are no logs to read.
      const job = [...JOB, "--state-file", "/tick.txt"];
      const tick = async (name: string) =>
        Number((await stack.docker(["exec", name, "cat", "/tick.txt"], { check: false })).stdout.split(" ")[1] ?? 0);
      await stack.docker(archDockerRun(first, key, ["--log-driver", driver], job));
      // A lower bound of the saved tick, read while it runs (the file of the stopped container may be
      // caught truncated between fopen and write): the job ticked at least this far before the freeze.
      const saved = await eventually(`${first} at tick 10`, async () => {
        const n = await tick(first);
        return n >= 10 ? n : undefined;
      }, 30_000);
      await finalize(1);
      await undo();
      ok(saved >= 10, `saved tick ${saved}`);
      const second = uniqueName(`${driver}2`);
      await stack.docker(archDockerRun(second, key, ["--log-driver", driver], job));
      // A fresh start would count from 1: at once past the saved tick means resumed.
      const resumed = await eventually(`${second} going on`, async () => {
        const n = await tick(second);
        return n > saved ? n : undefined;
      });
      ok(resumed > saved && resumed < saved + 100, JSON.stringify({ driver, saved, resumed }));
      if (driver === "local") {
        // Restored (no "start" line), from about the saved tick: the file is written after the line
        // is printed, and a line still in the pipe at the dump comes back with it.
        const p = await dockerProgress(stack, second);
        assertEquals(p.starts, 0, "restored, not started");
        ok(p.firstTick >= saved - 1 && p.firstTick < saved + 100, JSON.stringify({ saved, first: p.firstTick }));
      }
      await stack.docker(["rm", "-f", first, second]);
    }
  });

  await t.step(
    "--restart always / on-failure on a drained node: exit 137, no restart storm, the checkpoint kept, resumed later",
    async () => {
      const names: string[] = [];
      const keys: string[] = [];
      for (const policy of ["always", "on-failure:5"]) {
        const name = uniqueName("rs"), key = uniqueName("rk");
        names.push(name);
        keys.push(key);
        await stack.docker(archDockerRun(name, key, ["--restart", policy]));
      }
      for (const n of names) await waitTicks(stack, n, 10);
      const logBefore = Deno.readTextFileSync(stack.archLog).length;
      await finalize(2);
      const saved = await Promise.all(names.map(async (n) => (await dockerProgress(stack, n)).lastTick));
      // Docker restarts them by its policy; ARCH refuses while the node drains. Watch 10 s.
      await new Promise((r) => setTimeout(r, 10_000));
      const refused = Deno.readTextFileSync(stack.archLog).slice(logBefore).split("\n")
        .filter((l) => l.includes("node is draining")).length;
      ok(refused <= 2 * 8, `${refused} refused creates in 10 s: Docker backs off, no storm`);
      const states: string[] = [];
      for (const n of names) {
        const state = (await stack.docker(["inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", n])).stdout.trim();
        states.push(state);
        ok(/^(exited|restarting) 137$/.test(state), `${n}: ${state}`);
      }
      console.log(
        JSON.stringify({ restartPolicies: ["always", "on-failure:5"], refusedCreatesIn10s: refused, states }),
      );
      const checkpoints = JSON.parse((await archCli(stack, ["ls", "--checkpoints", "--json"])).stdout) as {
        key: string;
        status: string;
      }[];
      for (const key of keys) {
        assertEquals(checkpoints.filter((c) => c.key === key).map((c) => c.status), ["committed"], key);
      }
      // The drain lifted (or the node rebooted, on a real one): a start resumes each job.
      await undo();
      for (const [i, n] of names.entries()) {
        await stack.docker(["start", n], { check: false }); // Docker may have restarted it already
        await waitTicks(stack, n, saved[i]! + 5);
        const p = parseProgress((await stack.docker(["logs", n])).stdout);
        ok(p.ticks.includes(saved[i]! + 1), `${n} went on from tick ${saved[i]}`);
        assertEquals(p.starts, 1, `${n} was restored, not started again`);
      }
      await stack.docker(["rm", "-f", ...names]);
    },
  );
});
