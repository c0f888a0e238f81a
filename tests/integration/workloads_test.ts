/**
 * Jobs that hold kernel objects a plain checkpoint trips over (`tests/fixtures/job_workloads.c`),
 * through Docker with runtime `arch` and no user flag: checkpoint, then a NEW container of the
 * same key must go on from where the job was (its tick counter grows past its value before the
 * checkpoint, with no fresh start), and its object must still behave (no `verify FAIL`):
 * locks still held, the unlinked file's content intact, SQLite's rows all there and
 * `integrity_check` ok. The program is static and bind-mounted at /tools, like the tenant's tools.
 */

import { deepEqual as assertEquals, ok } from "node:assert/strict";
import type { EmbeddedStack } from "../harness/stack.ts";
import { archCli, archDockerRun, sharedScratch, stackTest, uniqueName } from "./_env.ts";
import { dockerProgress, fullId, waitTicks } from "./_workload.ts";
import { mustRun } from "../../src/process/exec.ts";

const base = sharedScratch("arch-workloads-test-");
const TOOLS_DIR = `${base}/tools`;

async function buildJobs(): Promise<void> {
  Deno.mkdirSync(TOOLS_DIR, { recursive: true, mode: 0o755 });
  await mustRun({
    cmd: "gcc",
    args: [
      "-static",
      "-O2",
      "-s",
      "-o",
      `${TOOLS_DIR}/job_workloads`,
      new URL("../fixtures/job_workloads.c", import.meta.url).pathname,
      "-lsqlite3",
      "-lm",
      "-lpthread",
    ],
  });
}

/** Runs `mode` in a container of key `key`, checkpoints it at tick 20, restores it into a new container. */
async function carried(stack: EmbeddedStack, mode: string): Promise<void> {
  const key = uniqueName(`job-${mode}`);
  const tools = ["-v", `${TOOLS_DIR}:/tools:ro`];
  const first = uniqueName(`${mode}-1`);
  await stack.docker(archDockerRun(first, key, tools, ["/tools/job_workloads", mode]));
  const running = await waitTicks(stack, first, 20);
  assertEquals(running.verifyFailures, 0, `${mode} misbehaves before any checkpoint`);
  // What a user runs once when adopting ARCH for a job: it says yes, and the job runs on.
  const dry = await archCli(stack, ["checkpoint", "--dry-run", await fullId(stack, first)]);
  assertEquals(dry.code, 0, `arch checkpoint --dry-run of the ${mode} job: ${dry.stdout}${dry.stderr}`);
  ok(/can be checkpointed: .* MiB, dump .* s, paused .* s; dry run: nothing kept/.test(dry.stdout), dry.stdout);
  console.log(`${mode}: ${dry.stdout.trim()}`); // the measured size, dump and pause, in the CI log
  const goesOn = await waitTicks(stack, first, running.lastTick + 10);
  assertEquals([goesOn.starts, goesOn.verifyFailures], [1, 0], `${mode} after the dry run`);
  const r = await archCli(stack, ["checkpoint", await fullId(stack, first)]);
  assertEquals(r.code, 0, `arch checkpoint of the ${mode} job: ${r.stdout}${r.stderr}`);
  const before = await dockerProgress(stack, first);

  const second = uniqueName(`${mode}-2`);
  await stack.docker(archDockerRun(second, key, tools, ["/tools/job_workloads", mode]));
  const after = await waitTicks(stack, second, before.lastTick + 20);
  assertEquals(after.starts, 0, `the ${mode} job started afresh instead of being restored`);
  ok(after.firstTick > 1 && after.firstTick <= before.lastTick + 1, `${mode}: first tick ${after.firstTick}`);
  assertEquals(after.verifyFailures, 0, `${mode}: ${(await stack.docker(["logs", second])).stdout}`);
  await stack.docker(["rm", "-f", first, second]);
}

/**
 * A job CRIU cannot checkpoint (it holds open a deleted file larger than the host's
 * `ghostFileLimitBytes`, 64 MiB by default) is refused with CRIU's cause in one sentence, runs
 * on, and the key's last failure shows in `arch ls --checkpoints` and `arch inspect`.
 */
async function refusedWithItsCause(stack: EmbeddedStack): Promise<void> {
  const key = uniqueName("job-bigghost");
  const name = uniqueName("bigghost");
  await stack.docker(
    archDockerRun(name, key, ["-v", `${TOOLS_DIR}:/tools:ro`], ["/tools/job_workloads", "ghost", "96"]),
  );
  const before = await waitTicks(stack, name, 10);
  const r = await archCli(stack, ["checkpoint", await fullId(stack, name)]);
  assertEquals(r.code, 1, r.stdout + r.stderr);
  ok(/holds open a deleted file \("\/tmp\/job\.ghost", 96\.0 MiB\).*"ghostFileLimitBytes"/.test(r.stdout), r.stdout);
  ok(r.stdout.includes("the job keeps running, nothing was saved"), r.stdout);
  const after = await waitTicks(stack, name, before.lastTick + 10);
  assertEquals([after.starts, after.verifyFailures], [1, 0], "the job runs on, untouched");
  const ls = await archCli(stack, ["ls", "--checkpoints"]);
  ok(
    new RegExp(`last checkpoint of \\S+/${key} failed at .* \\(checkpoint-dump\\): .*ghostFileLimitBytes`).test(
      ls.stdout,
    ),
    ls.stdout,
  );
  const inspect = await archCli(stack, ["inspect", key]);
  assertEquals(inspect.code, 2, "no checkpoint to show: a usage error");
  ok(/its last checkpoint failed at .*\(checkpoint-dump\): .*ghostFileLimitBytes/.test(inspect.stderr), inspect.stderr);
  await stack.docker(["rm", "-f", name]);
}

stackTest("workloads a plain checkpoint trips over are carried with no user flag", async (t, stack) => {
  for (const mode of ["locks", "sqlite", "ghost", "timerfd", "inotify"]) {
    await t.step(mode, () => carried(stack, mode));
  }
  await t.step(
    "a deleted file above the ghost limit: refused with CRIU's cause, the job runs on, ls and inspect show it",
    () => refusedWithItsCause(stack),
  );
});

if (base !== "/nonexistent") await buildJobs();
