/**
 * `deno task demo` (README: `scripts/run demo`): ARCH's main job on the embedded stack.
 *
 * A private containerd and dockerd start with an `arch` runtime (dist/arch-runc). A stateful
 * batch container (its progress lives only in memory) runs with ARCH_ENABLE=1; a spot
 * notice arrives and `arch finalize` checkpoints it and stops it; then a NEW container with
 * the same ARCH_CHECKPOINT_ID starts — on this node after the drain is lifted, as it would
 * on another node — and resumes where the first one stopped, memory verified. Everything
 * is cleaned up at the end.
 */

import { archCli, archDockerRun, eventually, startStack } from "../tests/integration/_env.ts";
import { describeEngines } from "../tests/harness/engines.ts";

const say = (msg: string) => console.log(`\n== ${msg}`);
const lastLines = (text: string, n: number) => text.trim().split("\n").slice(-n).map((l) => `   ${l}`).join("\n");

async function demo(): Promise<void> {
  await using stack = await startStack();
  say(`embedded stack up (scratch ${stack.scratch}; ${describeEngines(stack.engines)})`);

  const run = (name: string) =>
    stack.docker(
      archDockerRun(name, "demo-job", [], ["workload", "--mem", "64", "--interval-ms", "200", "--verify-every", "5"]),
    );
  const logsOf = async (name: string) => (await stack.docker(["logs", name])).stdout;
  const lastTick = (logs: string) =>
    Number(logs.trim().split("\n").filter((l) => l.startsWith("tick ")).at(-1)?.split(" ")[1] ?? 0);

  say(
    "1. a batch job starts: docker run --runtime arch -e ARCH_ENABLE=1 -e ARCH_CHECKPOINT_ID=demo-job arch-test workload",
  );
  await run("batch-1");
  const before = await eventually("progress", async () => {
    const logs = await logsOf("batch-1");
    return lastTick(logs) >= 12 ? logs : undefined;
  });
  console.log(lastLines(before, 4));

  say("2. spot notice: arch finalize (checkpoint every ARCH container on the node, stop it, drain the node)");
  const fin = await archCli(stack, ["finalize"]);
  console.log(fin.stdout.trimEnd().split("\n").map((l) => `   ${l}`).join("\n"));
  const stoppedAt = lastTick(await logsOf("batch-1"));
  console.log(`   batch-1 stopped at tick ${stoppedAt}`);

  say("3. while draining, a restart here is refused (the checkpoint is kept for the next node)");
  const refused = await stack.docker(["start", "batch-1"], { check: false });
  console.log(`   docker start batch-1 -> exit ${refused.code}: ${refused.stderr.trim().split("\n")[0]}`);

  say("4. the job is scheduled again (new container, same ARCH_CHECKPOINT_ID); here: after arch finalize --undo");
  await archCli(stack, ["finalize", "--undo"]);
  await stack.docker(["rm", "batch-1"]);
  await run("batch-2");
  const after = await eventually("resumed progress", async () => {
    const logs = await logsOf("batch-2");
    return lastTick(logs) >= stoppedAt + 8 ? logs : undefined;
  });
  console.log(lastLines(after, 4));
  const first = after.trim().split("\n")[0];
  const fresh = after.split("\n").some((l) => l.startsWith("start "));
  console.log(`\n   before: stopped at tick ${stoppedAt}; after: first line "${first}"`);
  console.log(
    fresh
      ? "   RESULT: the new container started from zero (restore did not happen)"
      : `   RESULT: the new container resumed at tick ${stoppedAt + 1}, its 64 MiB of memory verified ("verify ok")`,
  );

  say("5. arch ls");
  console.log((await archCli(stack, ["ls"])).stdout.trimEnd());
  say("cleaning up");
}

try {
  await demo();
} catch (error) {
  // One line, not a stack trace: the stack has already been torn down.
  console.error(`\ndemo failed: ${error instanceof Error ? error.message : String(error)}`);
  Deno.exit(1);
}
