/**
 * The embedded stack never leaves anything behind: a start that fails half-way and a stop
 * after a daemon died both end with no process and no mount left of the stack, and a
 * failed start says what failed in one line.
 */

import { deepEqual as assertEquals, ok } from "node:assert/strict";
import { namespaceId, processesInNamespace, processesMentioning, sweepScratch } from "../harness/stack.ts";
import { ENGINES, eventually, ROOT, SKIP, startStack, uniqueName } from "./_env.ts";

const mountsUnder = (dir: string) =>
  Deno.readTextFileSync("/proc/self/mountinfo").split("\n").map((l) => l.split(" ")[4] ?? "")
    .filter((p) => p.startsWith(`${dir}/`));

/** Asserts nothing of a stack created under `parent` (its node: mount namespace `ns`) is left, then removes `parent`. */
function assertNothingLeft(parent: string, ns?: string): void {
  assertEquals(processesMentioning(parent), [], "no process of the stack is left");
  if (ns !== undefined) assertEquals(processesInNamespace(ns), [], "no process is left in the node");
  assertEquals(mountsUnder(parent), [], "no mount of the stack is left");
  assertEquals([...Deno.readDirSync(parent)].map((e) => e.name), [], "the scratch directory is gone");
  Deno.removeSync(parent);
}

for (const engines of ENGINES.length > 0 ? ENGINES : [undefined]) {
  Deno.test({
    name: `embedded stack cleanup [${engines?.name ?? "none"}]`,
    ignore: SKIP,
    sanitizeResources: false,
    sanitizeOps: false,
  }, async (t) => {
    await t.step("a start that fails (docker CLI missing) stops what it started and says so in one line", async () => {
      const parent = Deno.makeTempDirSync({ prefix: "arch-stack-test-" });
      const broken = { ...engines!, docker: `${parent}/no-such-docker` };
      let message = "";
      try {
        await startStack(broken, { scratchParent: parent });
      } catch (error) {
        message = (error as Error).message;
      }
      assertEquals(
        message,
        `cannot start the embedded ${engines!.name} engines: ${parent}/no-such-docker is not installed`,
      );
      assertNothingLeft(parent);
    });

    await t.step("stop after dockerd was killed still removes every container, daemon and mount", async () => {
      const parent = Deno.makeTempDirSync({ prefix: "arch-stack-test-" });
      const stack = await startStack(engines, { scratchParent: parent });
      const marker = uniqueName("marker");
      await stack.docker(["run", "-d", "--network", "none", "arch-test", "sh", "-c", `sleep 1000; echo ${marker}`]);
      await stack.ctr([
        "run",
        "-d",
        "docker.io/library/arch-test:latest",
        uniqueName("c"),
        "sh",
        "-c",
        `sleep 1000; echo ${marker}`,
      ]);
      // `run -d` returns once the task started; its shell may not have exec'd yet.
      await eventually("both containers' processes", () => processesMentioning(marker).length >= 2 || undefined);
      const ns = namespaceId(stack.mountNs);
      ok(ns !== undefined && processesInNamespace(ns).length > 0, "the engines run in the stack's node");
      Deno.kill(stack.dockerdPid, "SIGKILL");
      const problems = await stack.stop();
      ok(problems.every((p) => !p.startsWith("delete leftover") && !p.startsWith("unmount")), problems.join("; "));
      assertEquals(processesMentioning(marker), [], "the containers' processes are gone");
      assertNothingLeft(parent, ns);
    });

    await t.step("a test process killed with SIGKILL: the runner's sweep removes what its stack left", async () => {
      const child = new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", `${ROOT}/tests/fixtures/orphan_stack.ts`, engines!.name],
        stdout: "piped",
        stderr: "null",
      }).spawn();
      const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
      let scratch = "";
      while (!scratch.includes("\n")) {
        const { value, done } = await reader.read();
        if (done) break;
        scratch += value;
      }
      scratch = scratch.trim();
      ok(scratch.includes("arch-stack-"), scratch);
      const containers = processesMentioning("sleep\u00001000").length;
      const ns = namespaceId(`${scratch}/ns/mnt`);
      child.kill("SIGKILL");
      await child.status;
      await reader.cancel();
      ok(ns !== undefined && processesInNamespace(ns).length > 0, "the killed process left its daemons running");
      assertEquals(await sweepScratch(scratch, engines!.runc), []);
      assertEquals(processesMentioning(scratch), []);
      assertEquals(processesInNamespace(ns), [], "no process is left in the node");
      assertEquals(mountsUnder(scratch), []);
      assertEquals(processesMentioning("sleep\u00001000").length, containers - 2, "both containers are gone");
      ok(!(await Deno.stat(scratch).then(() => true, () => false)), "the scratch directory is gone");
    });
  });
}
