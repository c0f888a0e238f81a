/**
 * Shared-FS mode on one node, through the real engines: the job's work directory on the
 * shared file system (a tmpfs mounted for the test stands in for it here; the two-node test
 * uses a real network file system), mounted at the container path and made its working
 * directory, checkpoints beside it, and a new container of the key resuming both its memory
 * and its files. Then every bad input, refused with one sentence and nothing created.
 */

import { deepEqual as assertEquals, ok } from "node:assert/strict";
import type { EmbeddedStack } from "../harness/stack.ts";
import { archCli, archCtrRun, archDockerRun, eventually, sharedScratch, stackTest, uniqueName } from "./_env.ts";
import { dockerProgress, fullId, waitTicks } from "./_workload.ts";
import { runCommand } from "../../src/process/exec.ts";

const base = sharedScratch("arch-sharedfs-test-");
/** The shared file system's mount point (a tmpfs while a test runs). */
const SHARED = `${base}/shared`;
/** An allowed shared file system that is never mounted. */
const UNMOUNTED = `${base}/unmounted`;

async function withSharedFs(fn: () => Promise<void>): Promise<void> {
  Deno.mkdirSync(SHARED, { recursive: true, mode: 0o755 });
  Deno.mkdirSync(UNMOUNTED, { recursive: true, mode: 0o755 });
  const m = await runCommand({ cmd: "mount", args: ["-t", "tmpfs", "-o", "mode=0755,size=2g", "arch-shared", SHARED] });
  if (m.code !== 0) throw new Error(`cannot mount the test's shared file system: ${m.stderr}`);
  try {
    await fn();
  } finally {
    await runCommand({ cmd: "umount", args: ["-l", SHARED] });
  }
}

const sharedEnv = (path = SHARED, work = "/work") => [
  "--env",
  `ARCH_SHAREDFS_HOST_PATH=${path}`,
  "--env",
  `ARCH_WORKDIR_CONTAINER_PATH=${work}`,
];

const exists = (path: string) => Deno.lstat(path).then(() => true, () => false);

/** The tick the workload last wrote into its work directory (`--state-file tick.txt`, relative to its cwd). */
const fileTick = (workdir: string) => {
  try {
    return Number(Deno.readTextFileSync(`${workdir}/tick.txt`).split(" ")[1]);
  } catch {
    return 0;
  }
};

const WORKLOAD = ["workload", "--interval-ms", "50", "--verify-every", "10", "--state-file", "tick.txt"];

stackTest("shared-FS mode", async (t, stack: EmbeddedStack) => {
  await withSharedFs(async () => {
    await t.step("docker: the job's work directory is mounted, its cwd, its user's, and resumes with it", async () => {
      const key = uniqueName("sfs");
      const workdir = `${SHARED}/work/moby/${key}`;
      const first = uniqueName("sfs-a");
      await stack.docker(archDockerRun(first, key, [...sharedEnv(), "--user", "0:0"], WORKLOAD));
      await waitTicks(stack, first, 5);
      const info = Deno.lstatSync(workdir);
      assertEquals([info.isDirectory, info.uid, info.mode! & 0o777], [true, 0, 0o700]);
      ok(fileTick(workdir) >= 3, "the workload writes tick.txt in its working directory, the work directory");
      // the job's own working directory (`docker exec` gets the image's, not the job's)
      const cwdOf = async (name: string) =>
        (await stack.docker(["exec", name, "readlink", "/proc/1/cwd"])).stdout.trim();
      assertEquals(await cwdOf(first), "/work");
      const r = await archCli(stack, ["checkpoint", await fullId(stack, first)]);
      assertEquals(r.code, 0, r.stdout + r.stderr);
      ok(Deno.readLinkSync(`${SHARED}/checkpoint/moby/${key}/current`).startsWith("ckpt-"));
      const atCheckpoint = (await dockerProgress(stack, first)).lastTick;
      const fileAtCheckpoint = fileTick(workdir);
      assertEquals(await exists(workdir), true, "a checkpoint keeps the work directory");

      const second = uniqueName("sfs-b");
      await stack.docker(archDockerRun(second, key, [...sharedEnv(), "--user", "0:0"], WORKLOAD));
      const resumed = await waitTicks(stack, second, atCheckpoint + 5);
      const log = () => Deno.readTextFileSync(stack.archLog).trim().split("\n").slice(-15).join("\n");
      assertEquals(resumed.starts, 0, `restored, not started fresh; ARCH's log:\n${log()}`);
      ok(resumed.firstTick > atCheckpoint - 3 && resumed.firstTick <= atCheckpoint + 1, JSON.stringify(resumed));
      assertEquals(resumed.verifyFailures, 0);
      await eventually(
        "the restored job writing its work file again",
        () => fileTick(workdir) > fileAtCheckpoint ? true : undefined,
      );
      assertEquals(await cwdOf(second), "/work");
      await stack.docker(["rm", "-f", first, second]);
    });

    await t.step("ctr: the same through containerd (hooks put into config.json by the wrapper)", async () => {
      const key = uniqueName("sfs-ctr");
      const workdir = `${SHARED}/work/default/${key}`;
      const id = uniqueName("sfs-c1");
      const run = archCtrRun(id, key, WORKLOAD);
      run.splice(run.indexOf("--env"), 0, ...sharedEnv());
      await stack.ctr(run);
      await eventually("tick.txt in the work directory", () => fileTick(workdir) >= 3 ? true : undefined);
      const r = await archCli(stack, ["checkpoint", `default/${id}`]);
      assertEquals(r.code, 0, r.stdout + r.stderr);
      const saved = fileTick(workdir);
      await stack.ctr(["tasks", "delete", id], { check: false });
      await stack.ctr(["containers", "delete", id], { check: false });
      const id2 = uniqueName("sfs-c2");
      const run2 = archCtrRun(id2, key, WORKLOAD);
      run2.splice(run2.indexOf("--env"), 0, ...sharedEnv());
      await stack.ctr(run2);
      await eventually(
        "the restored job goes on writing its work file",
        () => fileTick(workdir) > saved + 3 ? true : undefined,
      );
      ok(fileTick(workdir) < saved + 200, "it went on from the checkpoint, not from a fresh start");
      await stack.ctr(["tasks", "kill", "--signal", "SIGKILL", id2], { check: false });
    });

    await t.step("exit 0 keeps the work directory unless the host configuration asks", async () => {
      const job = async (key: string) => {
        const name = uniqueName("sfs-done");
        await stack.docker(
          archDockerRun(name, key, sharedEnv(), ["workload", "--interval-ms", "20", "--exit-after", "3"], false),
        );
        await stack.docker(["rm", name]);
      };
      const kept = uniqueName("sfs-kept");
      await job(kept);
      assertEquals(await exists(`${SHARED}/work/moby/${kept}`), true);
      const config = JSON.parse(Deno.readTextFileSync(stack.archConfig));
      Deno.writeTextFileSync(stack.archConfig, JSON.stringify({ ...config, removeWorkdirOnSuccess: true }));
      try {
        const removed = uniqueName("sfs-removed");
        await job(removed);
        await eventually(
          "the finished job's work directory removed",
          async () => await exists(`${SHARED}/work/moby/${removed}`) ? undefined : true,
        );
        // a failing job keeps it, whatever the configuration
        const failed = uniqueName("sfs-failed");
        const name = uniqueName("sfs-fail");
        await stack.docker(
          archDockerRun(name, failed, sharedEnv(), ["workload", "--exit-after", "2", "--exit-code", "3"], false),
          { check: false },
        );
        await stack.docker(["rm", name]);
        assertEquals(await exists(`${SHARED}/work/moby/${failed}`), true);
      } finally {
        Deno.writeTextFileSync(stack.archConfig, JSON.stringify(config));
      }
    });

    await t.step("another image asking for a job's key does not get its work directory", async () => {
      const key = uniqueName("sfs-victim");
      const workdir = `${SHARED}/work/moby/${key}`;
      await stack.docker(
        archDockerRun(uniqueName("sfs-v"), key, sharedEnv(), ["sh", "-c", "echo secret > result"], false),
      );
      assertEquals(Deno.readTextFileSync(`${workdir}/result`), "secret\n");
      const base = uniqueName("sfs-base");
      await stack.docker(["run", "--name", base, "--network", "none", "arch-test", "touch", "/other-image"]);
      const other = uniqueName("arch-other");
      await stack.docker(["commit", base, other]);
      const argv = archDockerRun(uniqueName("sfs-thief"), key, sharedEnv(), ["cat", "result"], false)
        .map((arg) => (arg === "arch-test" ? other : arg));
      const r = await stack.docker(argv, { check: false });
      ok(r.code !== 0 && /belongs to a job of another image/.test(r.stderr), r.stdout + r.stderr);
      ok(!r.stdout.includes("secret"));
      assertEquals(Deno.readTextFileSync(`${workdir}/result`), "secret\n", "left as it was");
      await stack.docker(["rm", "-f", base]);
    });

    await t.step("bad input: one sentence in docker run's output, nothing created", async () => {
      const cases: [string, string[], RegExp][] = [
        [
          "relative container path",
          sharedEnv(SHARED, "work"),
          /ARCH_WORKDIR_CONTAINER_PATH="work" is not an absolute path/,
        ],
        ["container path /", sharedEnv(SHARED, "/"), /ARCH_WORKDIR_CONTAINER_PATH="\/" would hide/],
        ["under /proc", sharedEnv(SHARED, "/proc/x"), /is under \/proc/],
        ["under /sys", sharedEnv(SHARED, "/sys"), /is under \/sys/],
        ["under /dev", sharedEnv(SHARED, "/dev/shm/w"), /is under \/dev/],
        ["shared path without container path", ["--env", `ARCH_SHAREDFS_HOST_PATH=${SHARED}`], /needs ARCH_WORKDIR/],
        [
          "not an allowed shared FS",
          sharedEnv("/var/tmp"),
          /ARCH_SHAREDFS_HOST_PATH="\/var\/tmp" is not one of the roots the admin allows/,
        ],
        ["shared FS not mounted", sharedEnv(UNMOUNTED), /is not mounted on this node/],
      ];
      for (const [what, env, expected] of cases) {
        const key = uniqueName("sfs-bad");
        const r = await stack.docker(archDockerRun(uniqueName("sfs-bad"), key, env, ["true"], false), { check: false });
        ok(r.code !== 0, `${what}: refused`);
        ok(expected.test(r.stderr), `${what}: ${r.stderr}`);
        assertEquals(r.stderr.match(/arch: /g)?.length, 1, `${what}: one sentence: ${r.stderr}`);
        assertEquals(await exists(`${SHARED}/work/moby/${key}`), false, `${what}: no work directory`);
        assertEquals([...Deno.readDirSync(UNMOUNTED)], [], `${what}: nothing written into the unmounted mount point`);
      }
    });

    await t.step("a container that is not ARCH's is untouched by the hooks and the shared-FS variables", async () => {
      const r = await stack.docker([
        "run",
        "--rm",
        "--runtime",
        "arch",
        "--network",
        "none",
        ...sharedEnv(),
        "arch-test",
        "sh",
        "-c",
        "pwd",
      ]);
      assertEquals(r.stdout.trim(), "/");
      assertEquals(await exists(`${SHARED}/work`), true); // made by the ARCH jobs above, nothing new
    });
  });
}, { archConfigExtra: { sharedFsRoots: [SHARED, UNMOUNTED] } });
