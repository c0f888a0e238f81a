/**
 * Task-aware checkpoints through Docker with runtime `arch` (docs/task-aware.md), with the
 * example jobs of the docs (busybox shell loops):
 *
 * - told before: a job with `ARCH_NOTIFY_SIGNAL` flushes its state when told, says ready, and
 *   only then is dumped; a NEW container of its key resumes from the dump (no fresh start,
 *   its counter goes on) and is told it was restored (`ARCH_RESTORED_SIGNAL`);
 * - saves itself: a job exiting with `ARCH_CHECKPOINT_EXIT_CODE` has its files committed as a
 *   task checkpoint; the next container of its key starts fresh from its image with those
 *   files and `ARCH_RESTORED=task`, and its exit 0 ends the key;
 * - attacks: an answer planted as a symbolic link or a FIFO is no answer (the checkpoint goes
 *   on after the timeout, nothing followed, nothing hangs); a job that exits with its code and
 *   a layer above the limit is not saved, and the key's previous checkpoint stays current.
 */

import { deepEqual as assertEquals, ok } from "node:assert/strict";
import type { EmbeddedStack } from "../harness/stack.ts";
import { archCli, archCtrRun, archDockerRun, eventually, stackTestOnV1AndV2, uniqueName } from "./_env.ts";
import { dockerProgress, fullId, waitTicks } from "./_workload.ts";

/** The notify example job: counts, and on SIGUSR1 writes its count to /tmp/flushed and says ready. */
const NOTIFY_JOB = [
  "echo start",
  "n=0",
  `trap 'echo "$n" > /tmp/flushed; echo "told $(cat /run/arch/notice) at $n"; touch /run/arch/ready' USR1`,
  `trap 'echo "restored at $n"' USR2`,
  `while true; do n=$((n+1)); echo "tick $n"; sleep 0.1; done`,
].join("\n");

/** The exit-code example job: works in steps kept in /state/step, and yields (exit 42) after step 3. */
const EXIT_CODE_JOB = [
  `[ "$ARCH_RESTORED" = task ] && echo "resumed from step $(cat /state/step)"`,
  "mkdir -p /state; step=$(cat /state/step 2>/dev/null || echo 0)",
  `while [ "$step" -lt 6 ]; do`,
  `  step=$((step+1)); echo "$step" > /state/step; echo "step $step"`,
  `  [ "$step" = 3 ] && exit 42`,
  "done",
  "echo done",
].join("\n");

const logs = async (stack: EmbeddedStack, name: string) => (await stack.docker(["logs", name])).stdout;
const lastTick = (text: string) => Number(text.match(/tick (\d+)\n(?![\s\S]*tick)/)?.[1] ?? 0);

async function toldBeforeAndAfter(stack: EmbeddedStack): Promise<void> {
  const key = uniqueName("notify");
  const env = ["--env", "ARCH_NOTIFY_SIGNAL=SIGUSR1", "--env", "ARCH_NOTIFY_TIMEOUT=10"];
  const restoredEnv = [...env, "--env", "ARCH_RESTORED_SIGNAL=SIGUSR2"];
  const first = uniqueName("notify-1");
  await stack.docker(archDockerRun(first, key, restoredEnv, ["sh", "-c", NOTIFY_JOB]));
  await eventually("20 ticks", async () => lastTick(await logs(stack, first)) >= 20 ? true : undefined);
  const r = await archCli(stack, ["checkpoint", await fullId(stack, first)]);
  assertEquals(r.code, 0, r.stdout + r.stderr);
  ok(/\(job ready after \d+\.\d\d s\)/.test(r.stdout), r.stdout);
  console.log(`notify: ${r.stdout.trim().replace(/ -> \S+/, "")}`); // the measured wait, in the CI log
  const before = await logs(stack, first);
  const told = before.match(/told checkpoint at (\d+)/);
  ok(told !== null, `the job read ARCH's notice: ${before}`);
  const saved = lastTick(before);
  ok(saved >= Number(told[1]), `dumped after the job said ready (told at ${told[1]}, last tick ${saved})`);
  const event = (await eventsOf(stack, key)).find((e) => e.kind === "checkpoint");
  assertEquals((event?.notify as { answer?: string })?.answer, "ready", JSON.stringify(event));
  ok(typeof (event?.timings as Record<string, number>)?.notify === "number", JSON.stringify(event));

  const second = uniqueName("notify-2");
  await stack.docker(archDockerRun(second, key, restoredEnv, ["sh", "-c", NOTIFY_JOB]));
  const after = await eventually("the restored job ticks on", async () => {
    const text = await logs(stack, second);
    return lastTick(text) >= saved + 10 ? text : undefined;
  });
  ok(!after.includes("start"), `restored, not started afresh: ${after.slice(0, 200)}`);
  ok(/restored at \d+/.test(after), `told it was restored: ${after.slice(0, 300)}`);
  const flushed = (await stack.docker(["exec", second, "cat", "/tmp/flushed"])).stdout.trim();
  assertEquals(flushed, told[1], "the state it flushed when told is in the restored container");
  await stack.docker(["rm", "-f", first, second]);
}

async function plantedAnswers(stack: EmbeddedStack): Promise<void> {
  for (const plant of ["ln -s /etc/shadow /run/arch/ready", "mkfifo /run/arch/ready"]) {
    const key = uniqueName("planted");
    const name = uniqueName("planted");
    const job = `trap '${plant}' USR1; echo start; while true; do echo tick; sleep 0.1; done`;
    const env = ["--env", "ARCH_NOTIFY_SIGNAL=USR1", "--env", "ARCH_NOTIFY_TIMEOUT=1"];
    await stack.docker(archDockerRun(name, key, env, ["sh", "-c", job]));
    await eventually("a tick", async () => (await logs(stack, name)).includes("tick") ? true : undefined);
    const r = await archCli(stack, ["checkpoint", "--leave-running", await fullId(stack, name)]);
    assertEquals(r.code, 0, `${plant}: ${r.stdout}${r.stderr}`);
    ok(/\(no answer from the job in 1\.\d\d s\)/.test(r.stdout), `${plant}: ${r.stdout}`);
    const event = (await eventsOf(stack, key)).find((e) => e.kind === "checkpoint");
    ok(/not a regular file|symbolic link/.test(String((event?.notify as { problem?: string })?.problem)), plant);
    await stack.docker(["rm", "-f", name]);
  }
}

async function savesItself(stack: EmbeddedStack): Promise<void> {
  const key = uniqueName("exitcode");
  const env = ["--env", "ARCH_CHECKPOINT_EXIT_CODE=42"];
  const first = uniqueName("exitcode-1");
  const one = await stack.docker(archDockerRun(first, key, env, ["sh", "-c", EXIT_CODE_JOB], false), {
    check: false,
  });
  assertEquals(one.code, 42, one.stdout + one.stderr);
  assertEquals(one.stdout.trim().split("\n"), ["step 1", "step 2", "step 3"]);
  const saved = (await eventsOf(stack, key)).find((e) => e.kind === "checkpoint" && e.task === true);
  assertEquals(saved?.result, "ok", JSON.stringify(saved));
  console.log(`task checkpoint: ${saved?.bytes} bytes in ${saved?.durationMs} ms`);
  const ls = await archCli(stack, ["inspect", key]);
  assertEquals(ls.code, 0, ls.stdout + ls.stderr);

  const second = uniqueName("exitcode-2");
  const two = await stack.docker(archDockerRun(second, key, env, ["sh", "-c", EXIT_CODE_JOB], false), {
    check: false,
  });
  assertEquals(two.code, 0, two.stdout + two.stderr);
  assertEquals(two.stdout.trim().split("\n"), ["resumed from step 3", "step 4", "step 5", "step 6", "done"]);
  const gone = await archCli(stack, ["inspect", key]);
  assertEquals(gone.code, 2, `exit 0 ends the key: ${gone.stdout}${gone.stderr}`);
  await stack.docker(["rm", "-f", first, second]);
}

async function tooBigToSave(stack: EmbeddedStack): Promise<void> {
  const key = uniqueName("exitbig");
  const env = ["--env", "ARCH_CHECKPOINT_EXIT_CODE=42"];
  const small = uniqueName("exitbig-1");
  const step = "mkdir -p /state; echo one > /state/step; exit 42";
  assertEquals(
    (await stack.docker(archDockerRun(small, key, env, ["sh", "-c", step], false), { check: false })).code,
    42,
  );
  const first = (await archCli(stack, ["inspect", "--json", key])).stdout;
  // 48 MiB of files against a 32 MiB limit: not saved, one sentence, the previous checkpoint stays.
  const config = JSON.parse(Deno.readTextFileSync(stack.archConfig));
  Deno.writeTextFileSync(stack.archConfig, JSON.stringify({ ...config, maxCheckpointBytes: 32 * 2 ** 20 }));
  try {
    const big = uniqueName("exitbig-2");
    const fill = "head -c 50331648 /dev/urandom > /big; exit 42";
    const r = await stack.docker(archDockerRun(big, key, env, ["sh", "-c", fill], false), { check: false });
    assertEquals(r.code, 42);
    const failed = (await eventsOf(stack, key)).filter((e) => e.kind === "checkpoint" && e.task === true).at(-1);
    assertEquals(failed?.result, "failed", JSON.stringify(failed));
    ok(/not saved: .*maxCheckpointBytes/.test(String(failed?.error)), String(failed?.error));
    assertEquals(failed?.code, "task-checkpoint-size");
    await stack.docker(["rm", "-f", big]);
  } finally {
    Deno.writeTextFileSync(stack.archConfig, JSON.stringify(config));
  }
  const still = (await archCli(stack, ["inspect", "--json", key])).stdout;
  assertEquals(
    JSON.parse(still).checkpoint.name,
    JSON.parse(first).checkpoint.name,
    "the previous checkpoint stays current",
  );
  await stack.docker(["rm", "-f", small]);
}

/** A job CRIU refuses (it holds open a deleted 96 MiB file, above the ghost limit) that can save itself. */
const UNDUMPABLE_JOB = [
  "step=$(cat /tmp/step 2>/dev/null || echo 0)",
  `[ "$ARCH_RESTORED" = task ] && echo "resumed at $step"`,
  "exec 3>/tmp/big; head -c 100663296 /dev/zero >&3; rm /tmp/big",
  `trap 'if [ "$(cat /run/arch/notice)" = exit ]; then echo "$step" > /tmp/step; echo "saved at $step"; exit 42; fi; ` +
  `touch /run/arch/ready' USR1`,
  `while true; do step=$((step+1)); echo "tick $step"; sleep 0.1; done`,
].join("\n");

async function finalizeFallsBack(stack: EmbeddedStack): Promise<void> {
  const key = uniqueName("fallback");
  const env = ["--env", "ARCH_NOTIFY_SIGNAL=SIGUSR1", "--env", "ARCH_NOTIFY_TIMEOUT=5"];
  env.push("--env", "ARCH_CHECKPOINT_EXIT_CODE=42");
  const first = uniqueName("fallback-1");
  await stack.docker(archDockerRun(first, key, env, ["sh", "-c", UNDUMPABLE_JOB]));
  await eventually("10 ticks", async () => lastTick(await logs(stack, first)) >= 10 ? true : undefined);
  const r = await archCli(stack, ["finalize", "--deadline", "60"]);
  console.log(r.stdout.trim()); // the fallback's line, in the CI log
  try {
    assertEquals(r.code, 0, r.stdout + r.stderr);
    ok(
      /task checkpoint \(the job saved itself and exited in .*; the dump had failed: .*ghostFileLimitBytes/.test(
        r.stdout,
      ),
      r.stdout,
    );
    ok(r.stdout.includes("finalize: 1 saved, 0 failed"), r.stdout);
  } finally {
    await archCli(stack, ["finalize", "--undo"]);
  }
  const saved = (await logs(stack, first)).match(/saved at (\d+)/)?.[1];
  ok(saved !== undefined, await logs(stack, first));
  const second = uniqueName("fallback-2");
  await stack.docker(archDockerRun(second, key, env, ["sh", "-c", UNDUMPABLE_JOB]));
  const resumed = await eventually(
    "the job resumes",
    async () => (await logs(stack, second)).match(/resumed at (\d+)/) ?? undefined,
  );
  assertEquals(resumed[1], saved, "a fresh process on the files the job saved");
  await stack.docker(["rm", "-f", first, second]);
}

/**
 * The request example job: counts, asks for a checkpoint (`$1`: continue or stop) at tick 20,
 * waits for the answer, prints it, and (with `$2` = flood) asks again at once, then with a
 * link where the request goes.
 */
const REQUEST_JOB = [
  "echo start; n=0",
  `ask() { rm -f /run/arch/result; $1; while [ ! -f /run/arch/result ]; do sleep 0.1; done; ` +
  `echo "answer $(cat /run/arch/result) at $n"; }`,
  `while true; do n=$((n+1)); echo "tick $n"`,
  `  if [ $n = 20 ]; then ask "eval echo $1 > /run/arch/request"`,
  `    if [ "$2" = flood ]; then ask "eval echo continue > /run/arch/request"; ` +
  `ask "ln -s /etc/shadow /run/arch/request"; fi; fi`,
  "  sleep 0.1; done",
].join("\n");

async function jobAsks(stack: EmbeddedStack, kind: "continue" | "stop"): Promise<void> {
  const key = uniqueName(`ask-${kind}`);
  const env = ["--env", "ARCH_CHECKPOINT_REQUESTS=1"];
  const first = uniqueName(`ask-${kind}-1`);
  const job = ["sh", "-c", REQUEST_JOB, "job", kind, kind === "continue" ? "flood" : "-"];
  await stack.docker(archDockerRun(first, key, env, job));
  let answered: string;
  if (kind === "continue") {
    answered = await eventually("its answers", async () => {
      const text = await logs(stack, first);
      return /answer refused .*plain file/.test(text) && lastTick(text) >= 30 ? text : undefined;
    }, 30_000);
    ok(/answer ok ckpt-\S+ at 20\n/.test(answered), answered);
    ok(
      /answer refused the last request was \d+ s ago.*"checkpointRequests.minIntervalSeconds"/.test(answered),
      answered,
    );
    const running = await stack.docker(["inspect", "-f", "{{.State.Running}}", first]);
    assertEquals(running.stdout.trim(), "true", "checkpoint and go on: the job runs on");
    await stack.docker(["rm", "-f", first]);
  } else {
    const code = await stack.docker(["wait", first]);
    answered = await logs(stack, first);
    ok(!answered.includes("answer"), `stopped by its checkpoint before any answer: ${answered}`);
    ok(code.stdout.trim() !== "0", code.stdout);
  }
  const event = (await eventsOf(stack, key)).find((e) => e.kind === "checkpoint");
  assertEquals([event?.result, event?.requested], ["ok", true], JSON.stringify(event));
  console.log(`requested (${kind}): ${event?.durationMs} ms, ${JSON.stringify(event?.timings)}`);
  const second = uniqueName(`ask-${kind}-2`);
  await stack.docker(archDockerRun(second, key, env, ["sh", "-c", REQUEST_JOB, "job", "-", "-"]));
  const after = await eventually("the restored job", async () => {
    const text = await logs(stack, second);
    return lastTick(text) >= 30 ? text : undefined;
  });
  ok(!after.includes("start"), `resumed, not started afresh: ${after.slice(0, 200)}`);
  // The restored job is the first one at its request (with the first one's arguments), told it was restored.
  ok(/^answer restored ckpt-\S+ at 20\n/.test(after), after.slice(0, 200));
  await stack.docker(["rm", "-f", second]);
}

async function requestsNotAllowed(stack: EmbeddedStack): Promise<void> {
  const config = JSON.parse(Deno.readTextFileSync(stack.archConfig));
  Deno.writeTextFileSync(stack.archConfig, JSON.stringify({ ...config, checkpointRequests: { allowed: false } }));
  try {
    const name = uniqueName("ask-no");
    const job = ["sh", "-c", REQUEST_JOB, "job", "stop", "-"];
    await stack.docker(archDockerRun(name, uniqueName("ask-no"), ["--env", "ARCH_CHECKPOINT_REQUESTS=1"], job));
    const text = await eventually("the refusal", async () => {
      const t = await logs(stack, name);
      return t.includes("answer") ? t : undefined;
    });
    ok(/answer refused checkpoint requests are not allowed on this node/.test(text), text);
    await stack.docker(["rm", "-f", name]);
  } finally {
    Deno.writeTextFileSync(stack.archConfig, JSON.stringify(config));
  }
}

async function templates(stack: EmbeddedStack): Promise<void> {
  const source = uniqueName("warm-src");
  const sourceKey = uniqueName("warm-src");
  await stack.docker(archDockerRun(source, sourceKey));
  await waitTicks(stack, source, 20);
  const c = await archCli(stack, ["checkpoint", "--leave-running", await fullId(stack, source)]);
  assertEquals(c.code, 0, c.stdout + c.stderr);
  const saved = (await dockerProgress(stack, source)).lastTick;
  const name = uniqueName("warm");
  const p = await archCli(stack, ["publish", sourceKey, name]);
  assertEquals(p.code, 0, p.stdout + p.stderr);
  ok(p.stdout.includes(`as template "${name}"`), p.stdout);
  // gc never removes a template's checkpoint, whatever it is asked.
  const gc = await archCli(stack, ["gc", "--include-current", "--keep", "0", "--older-than", "1m"]);
  assertEquals(gc.code, 0, gc.stdout + gc.stderr);
  const ls = await archCli(stack, ["ls", "--checkpoints"]);
  ok(new RegExp(`moby +template:${name} +committed`).test(ls.stdout), ls.stdout);
  const inspect = await archCli(stack, ["inspect", `template:${name}`]);
  assertEquals(inspect.code, 0, inspect.stdout + inspect.stderr);

  // As many containers as ask, each of its own key, start where the template was.
  const warm = [uniqueName("warm-1"), uniqueName("warm-2")];
  const warmKeys = warm.map(() => uniqueName("warm-key"));
  for (const [i, w] of warm.entries()) {
    await stack.docker(archDockerRun(w, warmKeys[i]!, ["--env", `ARCH_RESTORE_FROM=${name}`]));
  }
  for (const k of warmKeys) {
    const e = (await eventsOf(stack, k)).find((e) => e.kind === "restore");
    assertEquals([e?.result, e?.template], ["ok", name], JSON.stringify(e));
    console.log(`template restore: ${e?.bytes} bytes in ${e?.durationMs} ms, ${JSON.stringify(e?.timings)}`);
  }
  for (const w of warm) {
    const after = await waitTicks(stack, w, saved + 10);
    assertEquals(after.starts, 0, `${w} started afresh instead of from the template`);
    ok(after.firstTick > 1 && after.firstTick <= saved + 1, `${w}: first tick ${after.firstTick}, saved ${saved}`);
    assertEquals(after.verifyFailures, 0);
  }
  // A name that is not published: one sentence, nothing started.
  const none = await stack.docker(
    archDockerRun(uniqueName("warm-none"), uniqueName("warm-key"), ["--env", "ARCH_RESTORE_FROM=nope"]),
    { check: false },
  );
  ok(none.code !== 0 && /ARCH_RESTORE_FROM="nope": there is no such template/.test(none.stderr), none.stderr);
  const un = await archCli(stack, ["unpublish", name]);
  assertEquals(un.code, 0, un.stdout + un.stderr);
  const gone = await archCli(stack, ["inspect", `template:${name}`]);
  assertEquals(gone.code, 2, gone.stdout + gone.stderr);
  await stack.docker(["rm", "-f", source, ...warm]);
}

async function askThroughContainerd(stack: EmbeddedStack): Promise<void> {
  const id = uniqueName("ask-ctr");
  const log = `${stack.scratch}/${id}.log`;
  const args = archCtrRun(id, uniqueName("ask-ctr"), ["sh", "-c", REQUEST_JOB, "job", "continue", "-"], log);
  args.splice(2, 0, "--env", "ARCH_CHECKPOINT_REQUESTS=1");
  await stack.ctr(args);
  const text = await eventually("the answer through containerd", async () => {
    const t = await Deno.readTextFile(log).catch(() => "");
    return /answer ok ckpt-\S+ at 20\n/.test(t) && lastTick(t) >= 25 ? t : undefined;
  }, 30_000);
  ok(text.includes("start"), text.slice(0, 100));
  await stack.ctr(["task", "kill", "-s", "SIGKILL", id], { check: false });
}

/** The events file's records of checkpoint key `key` (host config `eventsFile`, default beside the log). */
function eventsOf(stack: EmbeddedStack, key: string): Promise<Record<string, unknown>[]> {
  let text = "";
  try {
    text = Deno.readTextFileSync(`${stack.scratch}/arch/events.jsonl`);
  } catch { /* none yet */ }
  return Promise.resolve(
    text.split("\n").filter((l) => l.trim() !== "").map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((e) => e.key === key),
  );
}

stackTestOnV1AndV2("task-aware checkpoints: told before and after, asked for, saved by exit code", async (t, stack) => {
  await t.step(
    "a job told before its checkpoint says ready, resumes in a new container, is told after",
    () => toldBeforeAndAfter(stack),
  );
  await t.step(
    "an answer planted as a link or a FIFO is no answer, and nothing follows or hangs on it",
    () => plantedAnswers(stack),
  );
  await t.step(
    "a job exiting with its code resumes from its files in a new container; exit 0 ends the key",
    () => savesItself(stack),
  );
  await t.step(
    "a job asks 'checkpoint and go on': it runs on, a flood and a planted link are refused, a new container resumes",
    () => jobAsks(stack, "continue"),
  );
  await t.step(
    "a job asks 'checkpoint and stop': it stops, a new container resumes from its request",
    () => jobAsks(stack, "stop"),
  );
  await t.step(
    "through containerd (ctr) too, a job asks and is answered, and runs on",
    () => askThroughContainerd(stack),
  );
  await t.step(
    "where the admin does not allow requests, a request is refused with why",
    () => requestsNotAllowed(stack),
  );
  await t.step(
    "a published template starts containers of other keys where it was; gc keeps it",
    () => templates(stack),
  );
  await t.step(
    "finalize takes the task path for a job CRIU cannot dump, and a new container resumes on its files",
    () => finalizeFallsBack(stack),
  );
  await t.step(
    "a job exiting with its code and a layer above the limit is not saved; the last checkpoint stays",
    () => tooBigToSave(stack),
  );
}, { archConfigExtra: { checkpointRequests: { allowed: true, minIntervalSeconds: 60, concurrency: 2 } } });
