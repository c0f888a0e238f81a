/**
 * Reading the test workload's progress (its `start`/`tick N` lines) from a Docker container,
 * for the tests that assert continuity across a checkpoint and a restore.
 */

import type { EmbeddedStack } from "../harness/stack.ts";
import { eventually } from "./_env.ts";

export interface Progress {
  /** `start` lines: 0 after a restore, 1 after a fresh start. */
  readonly starts: number;
  readonly firstTick: number;
  readonly lastTick: number;
  readonly verifyFailures: number;
}

/** The workload's progress in its output (any engine's logs), every tick included. */
export function parseProgress(logs: string): Progress & { readonly ticks: number[] } {
  const lines = logs.split("\n");
  const ticks = lines.filter((l) => l.startsWith("tick ")).map((l) => Number(l.split(" ")[1]));
  return {
    starts: lines.filter((l) => l.startsWith("start ")).length,
    firstTick: ticks[0] ?? 0,
    lastTick: ticks.at(-1) ?? 0,
    verifyFailures: lines.filter((l) => l.startsWith("verify FAIL")).length,
    ticks,
  };
}

/** The workload's progress in the logs of Docker container `name`. */
export async function dockerProgress(stack: EmbeddedStack, name: string): Promise<Progress> {
  return parseProgress((await stack.docker(["logs", name])).stdout);
}

/** Waits until container `name` has reached tick `atLeast`. */
export const waitTicks = (stack: EmbeddedStack, name: string, atLeast: number): Promise<Progress> =>
  eventually(`${name} at tick ${atLeast}`, async () => {
    const p = await dockerProgress(stack, name);
    return p.lastTick >= atLeast ? p : undefined;
  }, 30_000);

/** Docker's full id of container `name` (what `arch checkpoint` takes). */
export const fullId = async (stack: EmbeddedStack, name: string): Promise<string> =>
  (await stack.docker(["inspect", "-f", "{{.Id}}", name])).stdout.trim();
