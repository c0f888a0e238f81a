/**
 * ARCH under a real Podman (private, `tests/harness/podman.ts`), with real runc, conmon and
 * CRIU: `arch finalize` checkpoints Podman's ARCH containers with the stack's configuration,
 * a new Podman container with the same key resumes the workload where it stopped (not from
 * tick 1, its in-memory checksum verified), a restored container that ends with exit code 0
 * ends its key's data (conmon's exit command deletes it through the wrapper), and a container
 * without ARCH_ENABLE=1 runs as under plain runc. Podman runs on the system's engine
 * generation only (its runc is the system's); it prints its timings as JSON lines.
 */

import { deepEqual as assertEquals, ok } from "node:assert/strict";
import { systemEngines } from "../harness/engines.ts";
import { PrivatePodman } from "../harness/podman.ts";
import { shareMounts } from "../harness/stack.ts";
import { resolveProgram } from "../../src/process/programs.ts";
import { ARCH, archCli, eventually, SKIP, startStack, uniqueName } from "./_env.ts";
import { HOOK_STAGES, hooksDFile } from "../../src/sharedfs/config_json.ts";
import { runCommand } from "../../src/process/exec.ts";
import { SEARCH_PATH } from "../../src/process/programs.ts";
import { parseProgress } from "./_workload.ts";

const WORKLOAD = ["workload", "--interval-ms", "50", "--verify-every", "10"];

const noPodman = resolveProgram("podman") === undefined ? "podman is not installed (run install.ts)" : undefined;
if (noPodman !== undefined && !SKIP && Deno.env.get("CI") === "true") {
  throw new Error(`the podman test cannot run in CI: ${noPodman}`);
}
if (noPodman !== undefined && !SKIP) console.error(`skipping the podman test: ${noPodman}`);

/** `podman run -d` arguments for an ARCH container of the test image with checkpoint key `key`. */
const archRun = (name: string, key: string, cmd = WORKLOAD) => [
  "run",
  "-d",
  "--name",
  name,
  "--env",
  "ARCH_ENABLE=1",
  "--env",
  `ARCH_CHECKPOINT_ID=${key}`,
  "arch-test",
  ...cmd,
];

const progress = async (podman: PrivatePodman, name: string) =>
  parseProgress((await podman.podman(["logs", name])).stdout);

const waitTicks = (podman: PrivatePodman, name: string, atLeast: number) =>
  eventually(`${name} at tick ${atLeast}`, async () => {
    const p = await progress(podman, name);
    return p.lastTick >= atLeast ? p : undefined;
  }, 30_000);

const inspect = async (podman: PrivatePodman, name: string, format: string) =>
  (await podman.podman(["inspect", "--format", format, name])).stdout.trim();

const waitExited = (podman: PrivatePodman, name: string) =>
  eventually(`${name} exited`, async () => {
    const state = await inspect(podman, name, "{{.State.Status}} {{.State.ExitCode}}");
    return state.startsWith("exited ") ? Number(state.split(" ")[1]) : undefined;
  });

async function timed<T>(fn: () => Promise<T>): Promise<[T, number]> {
  const t0 = performance.now();
  const value = await fn();
  return [value, Math.round(performance.now() - t0)];
}

/** ARCH's restore timings (ms) of container `id`, from the stack's log. */
function restoreTimings(archLog: string, id: string): Record<string, number> | undefined {
  for (const line of Deno.readTextFileSync(archLog).split("\n")) {
    if (!line.includes(id) || !line.includes('"restored from checkpoint"')) continue;
    return JSON.parse(line).timings;
  }
  return undefined;
}

Deno.test({
  name: "ARCH under Podman",
  ignore: SKIP || noPodman !== undefined,
  sanitizeResources: false,
  sanitizeOps: false,
}, async (t) => {
  const shared = Deno.makeTempDirSync({ prefix: "arch-podman-shared-" });
  const unshare = shareMounts(shared); // the tmpfs mounted there later must reach the node
  using _ = {
    [Symbol.dispose]: () => {
      unshare();
      Deno.removeSync(shared, { recursive: true });
    },
  };
  await using stack = await startStack(systemEngines(), { archConfigExtra: { sharedFsRoots: [shared] } });
  const podman = await PrivatePodman.start(stack);

  await t.step("arch finalize checkpoints a Podman container; a new container with its key resumes it", async () => {
    const key = uniqueName("pk");
    const first = uniqueName("p1");
    const [, runMs] = await timed(() => podman.podman(archRun(first, key)));
    await waitTicks(podman, first, 10);
    const id = await inspect(podman, first, "{{.Id}}");
    const ls = await archCli(stack, ["ls"]);
    ok(ls.stdout.split("\n").some((l) => l.startsWith("runc ") && l.includes(id) && l.includes(key)), ls.stdout);

    const [r, finalizeMs] = await timed(() => archCli(stack, ["finalize"]));
    assertEquals(r.code, 0, r.stdout + r.stderr);
    const lines = r.stdout.trim().split("\n");
    assertEquals(lines.length, 2, r.stdout);
    ok(r.stdout.startsWith(`ok    runc/${id} key=${key}`), r.stdout);
    ok(lines[1]!.startsWith("finalize: 1 saved, 0 failed, 0 not started in "), r.stdout);
    assertEquals(await waitExited(podman, first), 137, "stopped by ARCH after the commit");
    ok(Deno.readLinkSync(`${stack.checkpointRoot}/runc/${key}/current`).startsWith("ckpt-"));
    const before = await progress(podman, first);

    // Podman shows the wrapper's refusal: it reads runc's --log (runtime_supports_json).
    const refused = await podman.podman(archRun(uniqueName("drained"), key), { check: false });
    ok(refused.code !== 0 && refused.stderr.includes('node is draining after "arch finalize"'), refused.stderr);
    assertEquals((await archCli(stack, ["finalize", "--undo"])).code, 0);

    const second = uniqueName("p2");
    const [, restoreRunMs] = await timed(() => podman.podman(archRun(second, key)));
    const after = await waitTicks(podman, second, before.lastTick + 10);
    assertEquals(after.starts, 0, "no fresh start in the new container");
    assertEquals(after.firstTick, before.lastTick + 1);
    assertEquals(after.verifyFailures, 0);
    // conmon (a subreaper) is the restored process's parent: Podman learns how it ends.
    const [pid, conmon] = (await inspect(podman, second, "{{.State.Pid}} {{.State.ConmonPid}}")).split(" ");
    const ppid = Deno.readTextFileSync(`/proc/${pid}/status`).match(/^PPid:\s+(\d+)$/m)?.[1];
    assertEquals(ppid, conmon);
    const secondId = await inspect(podman, second, "{{.Id}}");
    console.log(JSON.stringify({
      podman: "checkpoint and restore",
      runMs,
      finalizeMs,
      finalizeLine: r.stdout.trim(),
      restoreRunMs,
      restoreTimings: restoreTimings(stack.archLog, secondId),
    }));
    await podman.podman(["rm", "--force", "--time", "0", first, second]);
  });

  await t.step("podman start of the checkpointed container itself resumes it", async () => {
    const name = uniqueName("same");
    await podman.podman(archRun(name, uniqueName("sk")));
    await waitTicks(podman, name, 10);
    assertEquals((await archCli(stack, ["finalize"])).code, 0);
    await waitExited(podman, name);
    assertEquals((await archCli(stack, ["finalize", "--undo"])).code, 0);
    const before = await progress(podman, name);
    await podman.podman(["start", name]);
    const after = await waitTicks(podman, name, before.lastTick + 10);
    assertEquals([after.starts, after.verifyFailures], [1, 0], "one fresh start in the log: the first run's");
    ok(after.ticks.includes(before.lastTick + 1), `resumed at ${before.lastTick + 1}`);
    await podman.podman(["rm", "--force", "--time", "0", name]);
  });

  await t.step("a restored container that exits 0 ends its key's data (through conmon's exit command)", async () => {
    const key = uniqueName("done");
    const cmd = ["workload", "--interval-ms", "50", "--exit-after", "40", "--exit-code", "0"];
    const first = uniqueName("d1");
    await podman.podman(archRun(first, key, cmd));
    await waitTicks(podman, first, 5);
    assertEquals((await archCli(stack, ["finalize"])).code, 0);
    await waitExited(podman, first);
    assertEquals((await archCli(stack, ["finalize", "--undo"])).code, 0);
    const keyDir = `${stack.checkpointRoot}/runc/${key}`;
    ok(Deno.statSync(keyDir).isDirectory, "kept after ARCH's checkpoint stopped the container");
    const second = uniqueName("d2");
    await podman.podman(archRun(second, key, cmd));
    assertEquals(await waitExited(podman, second), 0);
    const p = await progress(podman, second);
    assertEquals([p.starts, p.lastTick], [0, 40]);
    await eventually("the key's data removed", () => Deno.stat(keyDir).then(() => undefined, () => true));
    await podman.podman(["rm", "--force", first, second]);
  });

  await t.step("a container without ARCH_ENABLE=1 runs as under plain runc", async () => {
    const script = "echo out; echo err >&2; cat /etc/image-file; exit 3";
    const runs = await Promise.all([podman.runtime, stack.engines.runc].map(async (runtime) => {
      const r = await podman.podman(["run", "--rm", "arch-test", "sh", "-c", script], { check: false, runtime });
      return [r.code, r.stdout, r.stderr];
    }));
    assertEquals(runs[0], runs[1]);
    assertEquals(runs[0], [3, "out\nshipped with the image\n", "err\n"]);

    const name = uniqueName("plain");
    await podman.podman(["run", "-d", "--name", name, "arch-test", ...WORKLOAD]);
    await waitTicks(podman, name, 3);
    assertEquals((await podman.podman(["exec", name, "cat", "/etc/image-file"])).stdout, "shipped with the image\n");
    const id = await inspect(podman, name, "{{.Id}}");
    ok(!(await archCli(stack, ["ls"])).stdout.includes(id), "not an ARCH container");
    const r = await archCli(stack, ["finalize"]);
    assertEquals([r.code, r.stdout.includes(id)], [0, false], r.stdout + r.stderr);
    assertEquals((await archCli(stack, ["finalize", "--undo"])).code, 0);
    assertEquals(await inspect(podman, name, "{{.State.Running}}"), "true", "finalize leaves it alone");
    await podman.podman(["stop", "--time", "0", name]);
    assertEquals(await waitExited(podman, name), 137);
    await podman.podman(["rm", name]);
  });

  await t.step("timings: podman run --rm, plain runc against ARCH", async () => {
    const modes: [string, string, string[]][] = [
      ["runc", stack.engines.runc, []],
      ["arch", podman.runtime, []],
      ["arch, ARCH_ENABLE=1", podman.runtime, ["--env", "ARCH_ENABLE=1", "--env", "ARCH_CHECKPOINT_ID=bench"]],
    ];
    const ms: Record<string, number[]> = {};
    for (let round = 0; round < 3; round++) {
      for (const [mode, runtime, env] of modes) {
        const [, took] = await timed(() => podman.podman(["run", "--rm", ...env, "arch-test", "true"], { runtime }));
        (ms[mode] ??= []).push(took);
      }
    }
    console.log(JSON.stringify({ podman: "run --rm true, ms per run", ...ms }));
  });

  await t.step(
    "shared-FS mode: Podman runs ARCH's hooks from hooks.d, the job resumes with its work directory",
    async () => {
      // As `arch install` will: one hooks.d file per stage, matching every container.
      for (const stage of HOOK_STAGES) {
        const env = [`ARCH_CONFIG=${stack.archConfig}`, `PATH=${SEARCH_PATH}`];
        Deno.writeTextFileSync(`${podman.hooksDir}/arch-${stage}.json`, hooksDFile(ARCH, stage, env));
      }
      const m = await runCommand({ cmd: "mount", args: ["-t", "tmpfs", "-o", "mode=0755", "arch-shared", shared] });
      assertEquals(m.code, 0, m.stderr);
      try {
        // every container runs the hooks now: one without ARCH is untouched
        const plain = await podman.podman(["run", "--rm", "arch-test", "sh", "-c", "pwd; exit 4"], { check: false });
        assertEquals([plain.code, plain.stdout], [4, "/\n"]);
        const key = uniqueName("psfs");
        const env = ["--env", `ARCH_SHAREDFS_HOST_PATH=${shared}`, "--env", "ARCH_WORKDIR_CONTAINER_PATH=/work"];
        const cmd = [...WORKLOAD, "--state-file", "tick.txt"];
        const first = uniqueName("ps1");
        await podman.podman(archRun(first, key, cmd).toSpliced(2, 0, ...env));
        await waitTicks(podman, first, 10);
        const workdir = `${shared}/work/runc/${key}`;
        const fileTick = () => Number(Deno.readTextFileSync(`${workdir}/tick.txt`).split(" ")[1]);
        ok(fileTick() >= 5, "the job writes into its work directory");
        // the hooks came from hooks.d: the wrapper added none of its own
        const bundle = await inspect(podman, first, "{{.StaticDir}}");
        const hooks = JSON.parse(Deno.readTextFileSync(`${bundle}/config.json`)).hooks as Record<string, unknown[]>;
        assertEquals([hooks.createRuntime?.length, hooks.poststop?.length], [1, 1]);
        assertEquals((await archCli(stack, ["finalize"])).code, 0);
        await waitExited(podman, first);
        assertEquals((await archCli(stack, ["finalize", "--undo"])).code, 0);
        const before = await progress(podman, first);
        const saved = fileTick();
        const second = uniqueName("ps2");
        await podman.podman(archRun(second, key, cmd).toSpliced(2, 0, ...env));
        const after = await waitTicks(podman, second, before.lastTick + 10);
        assertEquals([after.starts, after.firstTick, after.verifyFailures], [0, before.lastTick + 1, 0]);
        await eventually("the work file going on", () => Promise.resolve(fileTick() > saved + 5 ? true : undefined));
        await podman.podman(["rm", "--force", "--time", "0", first, second]);
      } finally {
        await runCommand({ cmd: "umount", args: ["-l", shared] });
      }
    },
  );
});
