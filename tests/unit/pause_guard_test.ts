/**
 * src/checkpoint/pause_guard.ts against a fake runc (`_fake_runc.ts`): `release()` stops or
 * resumes a paused container and never resumes one whose checkpoint is committed, and a
 * `PauseGuard` leaves no marker and no frozen container behind.
 */
import { deepEqual as assertEquals, ok, rejects } from "node:assert/strict";
import { existsSync } from "node:fs";
import { listMarkers, PauseGuard, release } from "../../src/checkpoint/pause_guard.ts";
import type { RuncTarget } from "../../src/runc/client.ts";
import { FakeRunc } from "./_fake_runc.ts";

const target: RuncTarget = { runc: "/fake/runc", global: { root: "/run/fake" }, id: "c1" };

Deno.test("release(stop) kills; a runc that thaws on kill needs no resume", async () => {
  using runc = new FakeRunc("paused");
  assertEquals(await release(target, "stop"), undefined);
  assertEquals(runc.status, "stopped");
  assertEquals(runc.calls, ["kill c1 KILL", "state c1"]);
});

Deno.test("release(stop) resumes after the kill when runc left it paused (runc < 1.1), so the kill lands", async () => {
  using runc = new FakeRunc("paused");
  runc.killLeavesPaused = true;
  assertEquals(await release(target, "stop"), undefined);
  assertEquals(runc.calls, ["kill c1 KILL", "state c1", "resume c1", "state c1"]);
});

Deno.test("release(stop) never resumes a committed container whose kill failed", async () => {
  using runc = new FakeRunc("paused", { kill: "permission denied" });
  const why = await release(target, "stop");
  ok(why?.startsWith("runc kill failed:") && why.includes("permission denied"), String(why));
  assertEquals(runc.status, "paused");
  ok(!runc.calls.some((c) => c.startsWith("resume")), runc.calls.join(", "));
});

Deno.test("release(resume) tries again while the freezer still says paused", async () => {
  let refusals = 3;
  using runc = new FakeRunc("paused", {
    resume: () => refusals-- > 0 ? "container not paused" : undefined,
  });
  assertEquals(await release(target, "resume"), undefined);
  assertEquals(runc.status, "running");
  assertEquals(runc.calls.filter((c) => c.startsWith("resume")).length, 4);
});

Deno.test("release(resume) reports a container it cannot thaw, with runc's words", async () => {
  using runc = new FakeRunc("paused", { resume: "freezer is stuck" });
  const why = await release(target, "resume");
  ok(why?.includes("state paused") && why.includes("freezer is stuck"), String(why));
  assertEquals(runc.status, "paused");
});

Deno.test("release of a container that is gone is done", async () => {
  using _runc = new FakeRunc("gone");
  assertEquals(await release(target, "stop"), undefined);
});

Deno.test("PauseGuard: a failed pause leaves no marker and says runc's reason", async () => {
  const state = Deno.makeTempDirSync({ prefix: "arch-guard-" });
  try {
    using runc = new FakeRunc("running", { pause: "cgroup freezer: device busy" });
    const guard = new PauseGuard(state, "moby", target);
    await rejects(guard.pause(), /cannot pause "c1": .*device busy/);
    assertEquals(listMarkers(state), []);
    assertEquals(runc.status, "running");
  } finally {
    Deno.removeSync(state, { recursive: true });
  }
});

Deno.test("PauseGuard: paused → committed → release stops the container and drops the marker", async () => {
  const state = Deno.makeTempDirSync({ prefix: "arch-guard-" });
  try {
    using runc = new FakeRunc("running");
    const guard = new PauseGuard(state, "moby", target);
    await guard.pause();
    assertEquals(runc.status, "paused");
    assertEquals(listMarkers(state).map((m) => m.phase), ["paused"]);
    assertEquals(guard.action(), "resume");
    guard.committed();
    assertEquals(listMarkers(state).map((m) => m.phase), ["committed"]);
    assertEquals(await guard.release(), undefined);
    assertEquals(runc.status, "stopped");
    assertEquals(listMarkers(state), []);
    ok(!existsSync(`${state}/paused/moby/c1.json`));
  } finally {
    Deno.removeSync(state, { recursive: true });
  }
});

Deno.test("PauseGuard: a release that fails keeps the marker for the next arch command", async () => {
  const state = Deno.makeTempDirSync({ prefix: "arch-guard-" });
  try {
    using runc = new FakeRunc("running", { resume: "freezer is stuck" });
    const guard = new PauseGuard(state, "moby", target);
    await guard.pause();
    ok((await guard.release())?.includes("freezer is stuck"));
    assertEquals(listMarkers(state).length, 1);
    assertEquals(runc.status, "paused");
  } finally {
    Deno.removeSync(state, { recursive: true });
  }
});
