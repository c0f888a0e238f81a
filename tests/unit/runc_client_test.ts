/**
 * src/runc/client.ts: the runc client's argv builders (the global flags every call on a
 * container repeats from its create, never its log; the translation of a containerd/Docker
 * create into `runc restore`), and its one error type, against a fake runc.
 */

import { deepEqual as assertEquals, ok, rejects } from "node:assert/strict";
import { CONTAINERD_CREATE, CONTAINERD_GLOBAL } from "./_argv_fixtures.ts";
import { carriedGlobal, Runc, runcArgv, RuncError, runcStatuses, targetOf } from "../../src/runc/client.ts";
import { ArchError } from "../../src/util/errors.ts";
import { FakeRunc, SPAWN_FAILS } from "./_fake_runc.ts";
import { parseRuncArgv } from "../../src/runc/argv.ts";

Deno.test("every runc call ARCH makes on a container repeats the create's global flags, never its log", () => {
  const parsed = parseRuncArgv([...CONTAINERD_GLOBAL, "--systemd-cgroup", "create", "--bundle", "/b", "c1"]);
  if (!parsed.ok) throw new Error(parsed.reason);
  const target = targetOf("/usr/sbin/runc", { root: "/r", id: "c1", runcGlobal: carriedGlobal(parsed.call.global) });
  for (const argv of [runcArgv.pause(target), runcArgv.kill(target), runcArgv.checkpoint(target, "/i", "/w")]) {
    ok(argv.includes("--systemd-cgroup"), argv.join(" "));
    ok(!argv.includes("--log"), argv.join(" "));
    assertEquals(argv.slice(argv.indexOf("--root"), argv.indexOf("--root") + 2), ["--root", "/r"]);
  }
  // a record of an older ARCH (root only) still works
  assertEquals(runcArgv.state(targetOf("/usr/sbin/runc", { root: "/r", id: "c1" })), ["--root", "/r", "state", "c1"]);
});

Deno.test("runcArgv.restore translates a containerd/Docker create into runc restore", async (t) => {
  const cases: [string, string[], string[]][] = [
    [
      "containerd create",
      CONTAINERD_CREATE,
      [
        ...CONTAINERD_GLOBAL,
        "restore",
        "--detach",
        "--bundle",
        "/b",
        "--pid-file",
        "/b/init.pid",
        "--image-path",
        "/i",
        "--work-path",
        "/w",
        "c1",
      ],
    ],
    [
      "tty, no-pivot kept; no-new-keyring and preserve-fds dropped",
      [
        "--systemd-cgroup",
        "create",
        "--console-socket",
        "/s.sock",
        "--no-pivot",
        "--no-new-keyring",
        "--preserve-fds",
        "1",
        "-b",
        "/b",
        "c1",
      ],
      [
        "--systemd-cgroup",
        "restore",
        "--detach",
        "--bundle",
        "/b",
        "--console-socket",
        "/s.sock",
        "--no-pivot",
        "--image-path",
        "/i",
        "--work-path",
        "/w",
        "c1",
      ],
    ],
  ];
  for (const [name, argv, expected] of cases) {
    await t.step(name, () => {
      const parsed = parseRuncArgv(argv);
      if (!parsed.ok) throw new Error(parsed.reason);
      assertEquals(runcArgv.restore(parsed.call, "/i", "/w"), expected);
    });
  }
});

Deno.test("a failed runc command is one RuncError: argv, status, stderr tail, notExist, a stable code", async () => {
  using _runc = new FakeRunc("gone");
  const client = new Runc({ runc: "/fake/runc", global: { root: "/r", "systemd-cgroup": true }, id: "c1" });
  const error = await client.pause().catch((e) => e);
  ok(error instanceof RuncError && error instanceof ArchError);
  assertEquals(error.argv, ["/fake/runc", "--root", "/r", "--systemd-cgroup", "pause", "c1"]);
  assertEquals([error.status, error.signal, error.code, error.notExist], [1, null, "runc-pause", true]);
  ok(error.message.startsWith("runc pause failed: ") && error.message.includes("does not exist"), error.message);
});

Deno.test("status(): gone when runc says so, undefined when runc cannot tell", async () => {
  const client = new Runc({ runc: "/fake/runc", global: { root: "/r" }, id: "c1" });
  {
    using _runc = new FakeRunc("gone");
    assertEquals(await client.status(), "gone");
  }
  {
    using _runc = new FakeRunc("paused");
    assertEquals(await client.status(), "paused");
  }
  {
    using _runc = new FakeRunc("running", { state: "read /run/r/c1/state.json: input/output error" });
    assertEquals(await client.status(), undefined);
  }
});

Deno.test("RuncError.of: a timeout (SIGKILL) is a failure; exit 0 is none", () => {
  const error = RuncError.of(["runc", "checkpoint", "c1"], { code: 137, signal: "SIGKILL", stdout: "", stderr: "" });
  ok(error !== undefined && error.message === "runc checkpoint failed: killed by SIGKILL", String(error?.message));
  assertEquals(RuncError.of(["runc", "state", "c1"], { code: 0, signal: null, stdout: "{}", stderr: "" }), undefined);
});

Deno.test("a runc that cannot be started is no answer: status() and runcStatuses() throw, never say unknown or gone", async () => {
  const target = { runc: "/fake/runc", global: { root: "/r" }, id: "c1" };
  {
    using _runc = new FakeRunc("running", { state: SPAWN_FAILS, list: SPAWN_FAILS });
    await rejects(new Runc(target).status(), Deno.errors.PermissionDenied);
    await rejects(runcStatuses([target], 1000), Deno.errors.PermissionDenied);
  }
  {
    // runc answers, but its list is no JSON array: each container is asked on its own
    using runc = new FakeRunc("paused", { list: () => undefined });
    runc.listOutput = '{"not": "a list"}';
    assertEquals(await runcStatuses([target], 1000), ["paused"]);
  }
});
