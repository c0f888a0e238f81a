/**
 * `arch watch` end to end: the built `dist/arch watch --provider aws` against a local IMDSv2
 * server and an embedded stack (one engine generation) with one running ARCH container.
 * When the server starts serving a spot notice, the watcher runs `arch finalize` itself: the
 * container is checkpointed (committed) and stopped, `watch.json` says what happened, the
 * notice is not finalized twice, and a new container with the same key resumes the workload
 * where it stopped. SIGTERM ends the watcher cleanly and leaves no process behind.
 */

import { deepEqual, equal, ok } from "node:assert/strict";
import { ARCH, archCli, archDockerRun, ENGINES, eventually, SKIP, startStack, uniqueName } from "./_env.ts";
import { dockerProgress, waitTicks } from "./_workload.ts";
import { AwsImds, sleep } from "../harness/metadata_servers.ts";
import { readStatus, statusPath } from "../../src/spot/status.ts";
import type { WatcherStatus } from "../../src/spot/loop.ts";

const alive = (pid: number) => {
  try {
    return !Deno.readTextFileSync(`/proc/${pid}/stat`).split(") ")[1]!.startsWith("Z");
  } catch {
    return false;
  }
};

Deno.test({
  name: "arch watch: an AWS spot notice finalizes the node; a new container with the key resumes",
  ignore: SKIP,
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  await using stack = await startStack(ENGINES[0]);
  await using imds = new AwsImds();
  const key = uniqueName("watch");
  const first = uniqueName("w1");
  await stack.docker(archDockerRun(first, key));
  await waitTicks(stack, first, 10);

  // In the node (nsenter execs it: the watcher's pid is the child's).
  const watcher = new Deno.Command("nsenter", {
    args: [...stack.nsenter, "--", ARCH, "watch", "--provider", "aws", "--endpoint", imds.url, "--interval", "0.5"],
    env: { ARCH_CONFIG: stack.archConfig },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const file = statusPath(stack.archStateDir);
  let stopped = false;
  try {
    await eventually("the watcher's first poll", () => readStatus(file)?.lastPollAt != null ? true : undefined, 30_000);
    equal(readStatus(file)?.pid, watcher.pid);

    const noticeTime = new Date(Date.now() + 120_000).toISOString();
    const servedAt = Date.now();
    imds.instanceAction = { action: "terminate", time: noticeTime };
    const status = await eventually<WatcherStatus>("finalize by the watcher", () => {
      const s = readStatus(file);
      return s?.finalize?.endedAt != null ? s : undefined;
    }, 90_000);
    console.log(JSON.stringify({
      noticeToFinalizeMs: Date.parse(status.finalize!.startedAt) - servedAt,
      finalizeMs: Date.parse(status.finalize!.endedAt!) - Date.parse(status.finalize!.startedAt),
    }));
    deepEqual([status.provider, status.lastError, status.finalize!.exitCode], ["aws", null, 0], JSON.stringify(status));
    equal(status.notice?.kind, "terminate");
    equal(status.notice?.time, new Date(noticeTime).toISOString());
    deepEqual(status.finalized, [status.notice!.id], "the status remembers the finalized notice");
    const deadline = status.notice!.deadlineSeconds!;
    ok(deadline > 105 && deadline <= 115, `deadline ${deadline} ≈ 120 s - 5 s margin - the time to notice`);

    const finalizeLines = Deno.readTextFileSync(stack.archLog).split("\n").filter((l) => l.includes("finalize: "));
    equal(
      (await stack.docker(["inspect", "-f", "{{.State.Running}}", first])).stdout.trim(),
      "false",
      finalizeLines.join("\n"),
    );
    const current = Deno.readLinkSync(`${stack.checkpointRoot}/moby/${key}/current`);
    ok(current.startsWith("ckpt-"), `committed checkpoint: ${current}`);

    // The notice is still served: more polls, no second finalize.
    const polledAt = status.lastPollAt!;
    await eventually("more polls", () => (readStatus(file)?.lastPollAt ?? "") > polledAt ? true : undefined);
    await sleep(1_500);
    equal(readStatus(file)?.finalize?.startedAt, status.finalize!.startedAt, "finalize ran once for the notice");

    // SIGTERM: a clean stop, nothing left running.
    watcher.kill("SIGTERM");
    const out = await watcher.output();
    stopped = true;
    const stdout = new TextDecoder().decode(out.stdout);
    equal(out.code, 0, new TextDecoder().decode(out.stderr));
    ok(stdout.includes(`terminate notice aws:instance-action:terminate:`), stdout);
    ok(stdout.includes("arch finalize ended with exit code 0"), stdout);
    ok(stdout.trimEnd().endsWith("watcher stopped"), stdout);
    ok(!alive(watcher.pid), "the watcher is gone");
    const log = Deno.readTextFileSync(stack.archLog);
    ok(log.includes('"component":"watch"') && log.includes("arch finalize ended with exit code 0"));

    // Continuity: once the drain is lifted (as on a new node), a new container resumes.
    const before = await dockerProgress(stack, first);
    equal((await archCli(stack, ["finalize", "--undo"])).code, 0);
    const second = uniqueName("w2");
    await stack.docker(archDockerRun(second, key));
    const after = await waitTicks(stack, second, before.lastTick + 10);
    deepEqual([after.starts, after.firstTick, after.verifyFailures], [0, before.lastTick + 1, 0]);
    await stack.docker(["rm", "-f", first, second]);
  } finally {
    if (!stopped) {
      try {
        watcher.kill("SIGKILL");
      } catch { /* gone */ }
      await watcher.output().catch(() => {});
    }
  }
});
