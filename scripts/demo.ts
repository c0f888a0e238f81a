/**
 * `deno task demo` (README: `scripts/run demo`): ARCH's main job on the embedded stack.
 *
 * Starts a private containerd and dockerd whose `arch` runtime is dist/arch-runc, runs a
 * stateful batch container with ARCH_ENABLE=1 through Docker and through containerd, shows
 * its progress, and what ARCH recorded about it (`arch ls`); then cleans everything up.
 */

import { startStack } from "../tests/integration/_env.ts";
import { archCli, eventually } from "../tests/integration/_env.ts";

const say = (msg: string) => console.log(`\n== ${msg}`);

await using stack = await startStack();
say(`embedded stack up: containerd ${stack.containerdSock}, dockerd ${stack.dockerSock}`);

const name = "arch-demo";
say("docker run --runtime arch -e ARCH_ENABLE=1 -e ARCH_CHECKPOINT_ID=demo-job arch-test workload");
await stack.docker([
  "run",
  "-d",
  "--name",
  name,
  "--network",
  "none",
  "--runtime",
  "arch",
  "--env",
  "ARCH_ENABLE=1",
  "--env",
  "ARCH_CHECKPOINT_ID=demo-job",
  "arch-test",
  "workload",
  "--interval-ms",
  "200",
]);
const progress = await eventually("progress", async () => {
  const lines = (await stack.docker(["logs", name])).stdout.trim().split("\n");
  return lines.length >= 6 ? lines : undefined;
});
console.log(progress.map((l) => `  ${l}`).join("\n"));

say("ctr run --runc-binary dist/arch-runc --env ARCH_ENABLE=1 (containerd)");
await stack.ctr([
  "run",
  "-d",
  "--runc-binary",
  stack.archRunc,
  "--env",
  "ARCH_ENABLE=1",
  "docker.io/library/arch-test:latest",
  "arch-demo-ctr",
  "workload",
]);

say("arch ls: the ARCH-enabled containers on this node and their checkpoint keys");
console.log((await archCli(stack, ["ls"])).stdout);

say("cleaning up");
await stack.docker(["rm", "-f", name]);
console.log((await archCli(stack, ["ls"])).stdout);
