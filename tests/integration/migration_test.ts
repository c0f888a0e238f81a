/**
 * A job moves between two nodes through a real network file system (sshfs over SFTP, each
 * node with its own network namespace, mount, containerd and dockerd: tests/harness/nodes.ts).
 * Node A runs it in shared-FS mode and gets `arch finalize`; a NEW container with the same
 * key on node B resumes it: its memory (the workload's tick counter and checksum go on from
 * the checkpoint) and its work files. Then the faults: two nodes restoring one key at once,
 * and the shared file system disappearing in the middle of a checkpoint.
 *
 * Runs on the system's engine generation only (two nodes cost two stacks).
 */

import { deepEqual as assertEquals, ok } from "node:assert/strict";
import { type Node, TwoNodes } from "../harness/nodes.ts";
import { systemEngines } from "../harness/engines.ts";
import { parseProgress, type Progress } from "./_workload.ts";
import { ARCH, ARCH_RUNC, archCtrRun, archDockerRun, eventually, ROOT, SKIP, uniqueName } from "./_env.ts";

const WORKLOAD = ["workload", "--interval-ms", "50", "--verify-every", "10", "--state-file", "tick.txt"];

const progress = async (node: Node, name: string): Promise<Progress> =>
  parseProgress((await node.docker(["logs", name])).stdout);

const atTick = (node: Node, name: string, tick: number) =>
  eventually(`${name} at tick ${tick}`, async () => {
    const p = await progress(node, name);
    return p.lastTick >= tick ? p : undefined;
  }, 60_000);

const sharedEnv = (shared: string) => [
  "--env",
  `ARCH_SHAREDFS_HOST_PATH=${shared}`,
  "--env",
  "ARCH_WORKDIR_CONTAINER_PATH=/work",
];

const arch = (node: Node, args: string[]) => node.run({ cmd: ARCH, args, timeoutMs: 120_000 }, false);

Deno.test({
  name: "a job moves to another node through the shared file system",
  ignore: SKIP,
  sanitizeResources: false,
  sanitizeOps: false,
}, async (t) => {
  await using nodes = await TwoNodes.start({
    archRunc: ARCH_RUNC,
    engines: systemEngines(),
    workloadSource: `${ROOT}/tests/fixtures/workload.c`,
    imageCache: `${ROOT}/.cache/image`,
    keep: Deno.env.get("ARCH_KEEP_STACK") === "1",
    // a short pause budget, for the test of a file system that stops answering mid-checkpoint
    archConfigExtra: { onConsumedCheckpoint: "refuse", maxPauseSeconds: 15 },
  });
  const { a, b, shared } = nodes;
  /** The host's view of the shared file system (the server's directory). */
  const onServer = (path: string) => `${nodes.export}${path.slice(shared.length)}`;
  const fileTick = (key: string, ns = "moby") => {
    try {
      return Number(Deno.readTextFileSync(onServer(`${shared}/work/${ns}/${key}/tick.txt`)).split(" ")[1]);
    } catch {
      return 0;
    }
  };

  await t.step("docker: finalize on node A, a new container on node B resumes memory and files", async () => {
    const key = uniqueName("move");
    const first = uniqueName("on-a");
    await a.docker(archDockerRun(first, key, sharedEnv(shared), WORKLOAD));
    await atTick(a, first, 10);
    const before = fileTick(key);
    const r = await arch(a, ["finalize"]);
    try {
      assertEquals(r.code, 0, r.stdout + r.stderr);
      const saved = (await progress(a, first)).lastTick;
      // the dump can catch the work file between the job's fopen("w") and its write (read as NaN)
      const after = fileTick(key);
      const savedFile = Number.isFinite(after) ? after : before;
      ok(savedFile >= 5, "the job wrote into its work directory on the shared FS");
      ok(Deno.readLinkSync(onServer(`${shared}/checkpoint/moby/${key}/current`)).startsWith("ckpt-"));
      const second = uniqueName("on-b");
      await b.docker(archDockerRun(second, key, sharedEnv(shared), WORKLOAD));
      const resumed = await atTick(b, second, saved + 10);
      const log = () => Deno.readTextFileSync(b.stack.archLog).trim().split("\n").slice(-8).join("\n");
      assertEquals(resumed.starts, 0, `restored on node B, not started fresh; node B's ARCH log:\n${log()}`);
      ok(resumed.firstTick > saved - 3 && resumed.firstTick <= saved + 1, JSON.stringify({ saved, resumed }));
      assertEquals(resumed.verifyFailures, 0, "its memory came back intact");
      await eventually(
        "the job writing its work file from node B",
        () => fileTick(key) > savedFile + 5 ? true : undefined,
      );
      await b.docker(["rm", "-f", second]);
    } finally {
      // lifted whatever happened: a node left draining would fail every later step
      assertEquals((await arch(a, ["finalize", "--undo"])).code, 0);
    }
  });

  await t.step("containerd: the same through ctr", async () => {
    const key = uniqueName("move-ctr");
    const run = (id: string) => {
      const argv = archCtrRun(id, key, WORKLOAD);
      argv.splice(argv.indexOf("--env"), 0, ...sharedEnv(shared));
      return argv.map((arg) => (arg === ARCH_RUNC ? ARCH_RUNC : arg));
    };
    const id = uniqueName("ctr-a");
    await a.ctr(run(id));
    let before = 0;
    await eventually("ticks in the work file", () => (before = fileTick(key, "default")) >= 10 || undefined, 60_000);
    const r = await arch(a, ["finalize"]);
    try {
      assertEquals(r.code, 0, r.stdout + r.stderr);
      // The dump can catch the file between the job's fopen("w") and its write (read as NaN):
      // then the last tick read before the finalize is the saved one, within a few.
      const after = fileTick(key, "default");
      const saved = Number.isFinite(after) ? after : before;
      await b.ctr(run(uniqueName("ctr-b")));
      try {
        await eventually(
          "the job going on from node B",
          () => fileTick(key, "default") > saved + 5 ? true : undefined,
          60_000,
        );
      } catch (error) {
        // Say what node B did (its tasks, ARCH's last log lines).
        const tasks = (await b.ctr(["tasks", "ls"], { check: false })).stdout.trim();
        const log = Deno.readTextFileSync(b.stack.archLog).trim().split("\n").slice(-12).join("\n");
        throw new Error(
          `${(error as Error).message} (saved tick ${saved}, now ${
            fileTick(key, "default")
          })\ntasks:\n${tasks}\nlog:\n${log}`,
        );
      }
      ok(fileTick(key, "default") < saved + 300, "from the checkpoint, not from a fresh start");
      // and restored, not started fresh after a failed restore (which would also tick past `saved`)
      const kept = [...Deno.readDirSync(onServer(`${shared}/checkpoint/default/${key}`))].map((e) => e.name);
      ok(!kept.some((n) => n.startsWith("quarantine-")), `no failed restore: ${kept.join(" ")}`);
    } finally {
      // lifted whatever happened: a node left draining would fail every later step
      assertEquals((await arch(a, ["finalize", "--undo"])).code, 0);
    }
  });

  await t.step("two nodes restore one key at once: exactly one wins, the other is refused", async () => {
    const key = uniqueName("race");
    const name = uniqueName("race-0");
    await a.docker(archDockerRun(name, key, sharedEnv(shared), WORKLOAD));
    await atTick(a, name, 5);
    const id = (await a.docker(["inspect", "-f", "{{.Id}}", name])).stdout.trim();
    const r = await arch(a, ["checkpoint", id]);
    assertEquals(r.code, 0, r.stdout + r.stderr);
    const [na, nb] = [uniqueName("race-a"), uniqueName("race-b")];
    const results = await Promise.all([
      a.docker(archDockerRun(na, key, sharedEnv(shared), WORKLOAD), { check: false }),
      b.docker(archDockerRun(nb, key, sharedEnv(shared), WORKLOAD), { check: false }),
    ]);
    const won = results.filter((x) => x.code === 0).length;
    const logs = () =>
      [a, b].map((n) => Deno.readTextFileSync(n.stack.archLog).trim().split("\n").slice(-6).join("\n")).join("\n");
    assertEquals(won, 1, results.map((x) => x.stderr).join("\n") + `\nARCH's logs:\n${logs()}`);
    const loser = results.find((x) => x.code !== 0)!;
    ok(/was already restored by container ".*" on node "node-[ab]"/.test(loser.stderr), loser.stderr);
    assertEquals(loser.stderr.match(/arch: /g)?.length, 1, loser.stderr);
    const [winnerNode, winner] = results[0]!.code === 0 ? [a, na] : [b, nb];
    const p = await atTick(winnerNode, winner, 10);
    assertEquals(p.starts, 0, "the winner resumed the checkpoint");
    await a.docker(["rm", "-f", name, na], { check: false });
    await b.docker(["rm", "-f", nb], { check: false });
  });

  await t.step(
    "the shared FS disappears during a checkpoint: the job keeps running, nothing half-committed",
    async () => {
      const key = uniqueName("lost");
      const name = uniqueName("lost-a");
      await a.docker(archDockerRun(name, key, [...sharedEnv(shared)], [...WORKLOAD, "--mem", "256"]));
      await atTick(a, name, 3);
      const id = (await a.docker(["inspect", "-f", "{{.Id}}", name])).stdout.trim();
      const keyDir = onServer(`${shared}/checkpoint/moby/${key}`);
      const good = await arch(a, ["checkpoint", "--leave-running", id]);
      assertEquals(good.code, 0, good.stdout + good.stderr);
      const before = Deno.readLinkSync(`${keyDir}/current`);
      const checkpointing = arch(a, ["checkpoint", id]);
      await eventually(
        "the dump writing into the shared FS",
        () => [...Deno.readDirSync(keyDir)].some((e) => e.name.startsWith(".tmp-")) ? true : undefined,
        60_000,
      );
      await a.killSharedFs();
      const failed = await checkpointing;
      ok(failed.code !== 0, "the checkpoint failed");
      ok(/^FAIL {2}moby\/\S+ key=\S+: /.test(failed.stdout), failed.stdout + failed.stderr);
      console.log(JSON.stringify({ sharedFsLost: failed.stdout.trim() }));
      const status = (await a.docker(["inspect", "-f", "{{.State.Status}}", name])).stdout.trim();
      assertEquals(status, "running", "the job keeps running, not paused, not stopped");
      const ticking = (await progress(a, name)).lastTick;
      await atTick(a, name, ticking + 5);
      assertEquals(Deno.readLinkSync(`${keyDir}/current`), before, "the previous checkpoint stays current");
      await a.remountSharedFs();
      ok(await a.sharedFsAnswers(), "the shared FS is back");
      await a.docker(["rm", "-f", name]);
    },
  );

  await t.step(
    "the shared FS stops answering mid-checkpoint: the container is released within its pause budget",
    async () => {
      const key = uniqueName("hung");
      const name = uniqueName("hung-a");
      // Progress only on stdout (a job writing to the dead file system would stop by itself), and
      // 200 MiB in its writable layer: the link is cut while tar writes them to the shared FS.
      const job = "dd if=/dev/zero of=/layer.bin bs=1M count=200 2>/dev/null && exec workload --interval-ms 50";
      await a.docker(archDockerRun(name, key, sharedEnv(shared), ["sh", "-c", job]));
      await atTick(a, name, 3);
      const id = (await a.docker(["inspect", "-f", "{{.Id}}", name])).stdout.trim();
      const keyDir = onServer(`${shared}/checkpoint/moby/${key}`);
      const checkpointing = arch(a, ["checkpoint", id]);
      await eventually(
        "the layer archive being written into the shared FS",
        () => {
          try {
            const tmp = [...Deno.readDirSync(keyDir)].find((e) => e.name.startsWith(".tmp-"));
            return tmp !== undefined && Deno.statSync(`${keyDir}/${tmp.name}/rootfs.tar`).size > 0 ? true : undefined;
          } catch {
            return undefined;
          }
        },
        60_000,
      );
      await a.setLink(false); // every access to the shared FS on node A blocks from now on, as on a hard NFS mount
      const cut = Date.now();
      try {
        const frozenAt = (await progress(a, name)).lastTick;
        await atTick(a, name, frozenAt + 20); // ticking again: released although the checkpoint is stuck
        const released = Date.now() - cut;
        const stuck = await checkpointing;
        ok(stuck.code !== 0, "the stuck checkpoint was killed");
        console.log(
          JSON.stringify({ pauseBudgetSeconds: 15, releasedAfterMs: released, checkpoint: stuck.signal ?? stuck.code }),
        );
        ok(released < 60_000, `released after ${released} ms`);
      } finally {
        await a.setLink(true);
      }
      // TCP's retransmission backoff: the file system answers again within seconds of the link
      await eventually("the shared FS answering again", async () => (await a.sharedFsAnswers()) || undefined, 90_000);
      ok(!(await Deno.lstat(`${keyDir}/current`).then(() => true, () => false)), "nothing committed");
      // the container stays released once the file system answers again
      const after = (await progress(a, name)).lastTick;
      await atTick(a, name, after + 20);
      const ls = await arch(a, ["recover"]);
      assertEquals(ls.code, 0);
      await a.docker(["rm", "-f", name]);
    },
  );
});
