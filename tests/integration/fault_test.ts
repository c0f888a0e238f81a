/**
 * The product's central promise under `kill -9` (issue 7, point 6): ARCH is killed at each
 * phase of a checkpoint and of a restore, through real Docker, runc and CRIU. After each
 * kill: the container is running or (once its checkpoint is committed) stopped, never left
 * paused; the key holds the previous or the new complete checkpoint; and the next container
 * of the key restores it and goes on from a checkpoint, not from zero.
 *
 * The kill is real (SIGKILL, by the ARCH process itself at the phase a test names in
 * `<stateDir>/fault-injection`, see `src/util/faults.ts`); the recovery is the product's own:
 * the next `arch` command releases what the dead process left paused.
 */

import { deepEqual as assertEquals, ok } from "node:assert/strict";
import type { EmbeddedStack } from "../harness/stack.ts";
import { dockerProgress, fullId, waitTicks } from "./_workload.ts";
import { faultFile, type FaultPoint } from "../../src/util/faults.ts";
import { Registry } from "../../src/registry/registry.ts";
import { archCli, archDockerRun, eventually, stackTest, uniqueName } from "./_env.ts";

const status = async (stack: EmbeddedStack, name: string) =>
  (await stack.docker(["inspect", "-f", "{{.State.Status}}", name])).stdout.trim();

function armFault(stack: EmbeddedStack, point: FaultPoint): void {
  Deno.writeTextFileSync(faultFile(stack.archStateDir), point, { mode: 0o600 });
}

function faultTaken(stack: EmbeddedStack): boolean {
  try {
    Deno.statSync(faultFile(stack.archStateDir));
    return false;
  } catch {
    return true;
  }
}

/** The key's committed checkpoint directory (`current`), if any. */
function current(stack: EmbeddedStack, key: string): string | undefined {
  try {
    return Deno.readLinkSync(`${stack.checkpointRoot}/moby/${key}/current`);
  } catch {
    return undefined;
  }
}

/**
 * Restores `key` into a new container: it must go on from a checkpoint (not from zero), with
 * its first tick in `(after, upTo]`.
 */
async function assertRestores(stack: EmbeddedStack, key: string, after: number, upTo: number): Promise<void> {
  const next = uniqueName("next");
  await stack.docker(archDockerRun(next, key));
  const p = await waitTicks(stack, next, 1);
  assertEquals(p.starts, 0, "restored, not started from zero");
  ok(p.firstTick > after && p.firstTick <= upTo, `goes on from tick ${p.firstTick}, expected in (${after}, ${upTo}]`);
  assertEquals(p.verifyFailures, 0);
  await stack.docker(["rm", "-f", next]);
}

/** Processes whose command line mentions `text` (a killed restore's runc or CRIU left running). */
function processesMentioning(text: string): string[] {
  const out: string[] = [];
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name) || Number(entry.name) === Deno.pid) continue;
    try {
      const cmdline = Deno.readTextFileSync(`/proc/${entry.name}/cmdline`).replaceAll("\0", " ");
      if (cmdline.includes(text)) out.push(`${entry.name}: ${cmdline}`);
    } catch { /* gone */ }
  }
  return out;
}

/** Phases before the commit: the container must come back running, the previous checkpoint stays. */
const BEFORE_COMMIT: FaultPoint[] = [
  "checkpoint-after-pause",
  "checkpoint-during-capture",
  "checkpoint-during-dump",
  "checkpoint-during-fsync",
  "checkpoint-before-commit",
];
/** Phases after the commit: the container must end up stopped, the new checkpoint is current. */
const AFTER_COMMIT: FaultPoint[] = ["checkpoint-after-commit", "checkpoint-before-kill"];

stackTest("kill -9 of arch checkpoint at each phase", async (t, stack) => {
  for (const point of [...BEFORE_COMMIT, ...AFTER_COMMIT]) {
    await t.step(point, async () => {
      const key = uniqueName("fault");
      const name = uniqueName("job");
      await stack.docker(archDockerRun(name, key));
      await waitTicks(stack, name, 5);
      const id = await fullId(stack, name);
      // A previous checkpoint, so that "the previous one stays" can be checked.
      const first = await archCli(stack, ["checkpoint", "--leave-running", id]);
      assertEquals(first.code, 0, first.stdout + first.stderr);
      const previous = current(stack, key);
      ok(previous !== undefined);
      const atPrevious = (await dockerProgress(stack, name)).lastTick; // the previous checkpoint is at or before it
      await waitTicks(stack, name, atPrevious + 5);

      armFault(stack, point);
      const killed = await archCli(stack, ["checkpoint", id]);
      assertEquals(killed.code, 137, `arch was killed at ${point}: ${killed.stdout}${killed.stderr}`);
      ok(faultTaken(stack), "the fault point was reached");

      // The next arch command finds what the dead process left and finishes its job.
      const next = await archCli(stack, ["ls"]);
      assertEquals(next.code, 0, next.stderr);
      const expectStopped = AFTER_COMMIT.includes(point);
      await eventually("released", async () => {
        const s = await status(stack, name);
        return s === (expectStopped ? "exited" : "running") ? s : undefined;
      });
      if (expectStopped) {
        assertEquals(current(stack, key) !== previous, true, "the new checkpoint is current");
      } else {
        assertEquals(current(stack, key), previous, "the previous checkpoint is still current");
        const p = await dockerProgress(stack, name);
        await waitTicks(stack, name, p.lastTick + 3); // and it makes progress again
      }
      const lastRun = (await dockerProgress(stack, name)).lastTick;
      await stack.docker(["rm", "-f", name]);
      if (expectStopped) await assertRestores(stack, key, atPrevious, lastRun + 1); // the new checkpoint
      else await assertRestores(stack, key, 1, atPrevious + 1); // the previous one
    });
  }
});

const RESTORE_PHASES: FaultPoint[] = [
  "restore-during-verify",
  "restore-during-apply",
  "restore-during-runc-restore",
];

stackTest("kill -9 of the runc wrapper at each phase of a restore", async (t, stack) => {
  for (const point of RESTORE_PHASES) {
    await t.step(point, async () => {
      const key = uniqueName("rfault");
      const name = uniqueName("job");
      await stack.docker(archDockerRun(name, key));
      await waitTicks(stack, name, 5);
      const r = await archCli(stack, ["checkpoint", await fullId(stack, name)]);
      assertEquals(r.code, 0, r.stdout + r.stderr);
      const checkpointed = (await dockerProgress(stack, name)).lastTick;
      const committed = current(stack, key);

      armFault(stack, point);
      const victim = uniqueName("victim");
      const run = await stack.docker(archDockerRun(victim, key), { check: false });
      ok(faultTaken(stack), "the fault point was reached");
      ok(run.code !== 0, "the create whose runc was killed fails");
      // Nothing of the killed restore runs on behind the engine's back.
      const victimId = (await stack.docker(["inspect", "-f", "{{.Id}}", victim], { check: false })).stdout.trim();
      await stack.docker(["rm", "-f", victim], { check: false });
      const record = new Registry(stack.archStateDir).list().find((c) => c.id === victimId);
      assertEquals(record, undefined, "no record left behind");
      await eventually(
        "no runc or CRIU of the killed restore left",
        () => Promise.resolve(processesMentioning(victimId).length === 0 ? true : undefined),
      );
      assertEquals(current(stack, key), committed, "the checkpoint is still current");

      await assertRestores(stack, key, 1, checkpointed + 1);
      await stack.docker(["rm", "-f", name]);
    });
  }
});
