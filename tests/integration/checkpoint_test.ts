/**
 * Checkpoint and automatic restore through the real engines, with real runc and CRIU.
 * Every case asserts continuity: after the restore the workload's tick counter goes on
 * from where the checkpoint stopped it (not from 1) and its in-memory checksum verifies.
 */

import { deepEqual as assertEquals, ok } from "node:assert/strict";
import type { EmbeddedStack } from "../../src/stack/stack.ts";
import { archCli, ARCH_RUNC, eventually, SKIP, startStack, uniqueName } from "./_env.ts";

const IMAGE = "arch-test";
const CTR_IMAGE = "docker.io/library/arch-test:latest";

interface Progress {
  readonly starts: number;
  readonly lastTick: number;
  readonly ticks: number[];
  readonly verifyFailures: number;
}

function progress(logs: string): Progress {
  const lines = logs.split("\n");
  const ticks = lines.filter((l) => l.startsWith("tick ")).map((l) => Number(l.split(" ")[1]));
  return {
    starts: lines.filter((l) => l.startsWith("start ")).length,
    lastTick: ticks.at(-1) ?? 0,
    ticks,
    verifyFailures: lines.filter((l) => l.startsWith("verify FAIL")).length,
  };
}

const dockerLogs = async (stack: EmbeddedStack, name: string) => progress((await stack.docker(["logs", name])).stdout);

async function waitTicks(stack: EmbeddedStack, name: string, atLeast: number): Promise<Progress> {
  return await eventually(`${name} at tick ${atLeast}`, async () => {
    const p = await dockerLogs(stack, name);
    return p.lastTick >= atLeast ? p : undefined;
  });
}

function dockerRunArgs(name: string, key: string, extra: string[] = [], cmd: string[] = []): string[] {
  return [
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
    `ARCH_CHECKPOINT_ID=${key}`,
    ...extra,
    IMAGE,
    ...(cmd.length ? cmd : ["workload", "--interval-ms", "50", "--verify-every", "10"]),
  ];
}

async function fullId(stack: EmbeddedStack, name: string): Promise<string> {
  return (await stack.docker(["inspect", "-f", "{{.Id}}", name])).stdout.trim();
}

async function archCheckpoint(stack: EmbeddedStack, id: string) {
  const r = await archCli(stack, ["checkpoint", id]);
  return r;
}

Deno.test({ name: "checkpoint and restore", ignore: SKIP, sanitizeResources: false, sanitizeOps: false }, async (t) => {
  await using stack = await startStack();

  await t.step("docker: checkpoint, then docker start resumes the same container", async () => {
    const name = uniqueName("same");
    await stack.docker(dockerRunArgs(name, uniqueName("k")));
    await waitTicks(stack, name, 15);
    const id = await fullId(stack, name);
    const r = await archCheckpoint(stack, id);
    assertEquals(r.code, 0, r.stdout + r.stderr);
    ok(r.stdout.startsWith("ok "), r.stdout);
    const before = await dockerLogs(stack, name);
    assertEquals((await stack.docker(["inspect", "-f", "{{.State.Running}}", name])).stdout.trim(), "false");
    await stack.docker(["start", name]);
    const after = await waitTicks(stack, name, before.lastTick + 15);
    assertEquals(after.starts, 1, "the workload started only once");
    ok(after.ticks.includes(before.lastTick + 1), `resumed at ${before.lastTick + 1}`);
    assertEquals(after.verifyFailures, 0);
    ok(after.ticks.filter((n) => n === before.lastTick).length <= 2);
    await stack.docker(["rm", "-f", name]);
  });
});
