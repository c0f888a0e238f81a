import { deepEqual as assertEquals, ok } from "node:assert/strict";
import { recoverPaused } from "../../src/checkpoint/pause_guard.ts";
import { isAlive, processStartTime } from "../../src/process/liveness.ts";

/**
 * An ARCH process that is alive but stuck (a file system that stopped answering) must not
 * keep a container frozen: past the deadline in its pause marker, recovery kills it and
 * releases the container; before it, a live owner is left alone. runc is a stub that says
 * the container is gone (what happens to the container is the integration tests' part).
 */
Deno.test("recoverPaused: a live owner past its pause budget is killed, one within it is left alone", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "arch-pause-budget-" });
  const owners: Deno.ChildProcess[] = [];
  try {
    const runc = `${dir}/runc`;
    Deno.writeTextFileSync(runc, "#!/bin/sh\necho 'container does not exist' >&2\nexit 1\n", { mode: 0o755 });
    const marker = (id: string, deadline: number) => {
      const owner = new Deno.Command("sleep", { args: ["60"] }).spawn();
      owners.push(owner);
      Deno.mkdirSync(`${dir}/state/paused/moby`, { recursive: true });
      const identity = { pid: owner.pid, start: processStartTime(owner.pid) };
      Deno.writeTextFileSync(
        `${dir}/state/paused/moby/${id}.json`,
        JSON.stringify({
          namespace: "moby",
          id,
          root: "/run/runc",
          owner: identity,
          phase: "paused",
          keepRunning: false,
          since: new Date().toISOString(),
          deadline,
        }),
      );
      return identity;
    };
    const overdue = marker("stuck", Date.now() - 1_000);
    const busy = marker("working", Date.now() + 60_000);
    const lines = await recoverPaused(`${dir}/state`, runc);
    ok(lines.some((l) => /moby\/stuck: process \d+ kept it paused past its budget, killed/.test(l)), lines.join("\n"));
    assertEquals((await owners[0]!.status).signal, "SIGKILL");
    ok(isAlive(busy), "an owner within its budget keeps working");
    assertEquals([...Deno.readDirSync(`${dir}/state/paused/moby`)].map((e) => e.name), ["working.json"]);
    ok(!isAlive(overdue));
  } finally {
    for (const owner of owners) {
      try {
        owner.kill("SIGKILL");
      } catch { /* gone */ }
      await owner.status;
    }
    Deno.removeSync(dir, { recursive: true });
  }
});
