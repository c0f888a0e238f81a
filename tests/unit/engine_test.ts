import { deepEqual as assertEquals, ok } from "node:assert/strict";
import { CONTAINERD_CREATE, CONTAINERD_GLOBAL } from "./_argv_fixtures.ts";
import { carriedGlobal, runcArgv, targetOf } from "../../src/runc/client.ts";
import { decodeWaitStatus } from "../../src/exitwatch/pidfd.ts";
import { incompatibility, type ToolVersions } from "../../src/criu/versions.ts";
import { checkRoot, mountsReachingRoot, resolveRoot } from "../../src/config/container_config.ts";
import { parseRuncArgv } from "../../src/runc/argv.ts";
import { HostConfigSchema } from "../../src/config/host_schema.ts";

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

Deno.test("decodeWaitStatus", () => {
  assertEquals(decodeWaitStatus(0), { code: 0 });
  assertEquals(decodeWaitStatus(3 << 8), { code: 3 });
  assertEquals(decodeWaitStatus(9), { code: 137, signal: 9 });
  assertEquals(decodeWaitStatus(15 | 0x80), { code: 143, signal: 15 }); // core dump flag
});

Deno.test("incompatibility", () => {
  const v = (criu: string, cpuArch = "x86_64"): ToolVersions => ({
    arch: { version: "0.1.0" },
    runc: { version: "1.1.15" },
    criu: { version: criu },
    kernel: "6.18",
    cpuArch,
  });
  assertEquals(incompatibility(v("4.1.1"), v("4.1.1")), undefined);
  assertEquals(incompatibility(v("4.0"), v("4.1.1")), undefined);
  ok(incompatibility(v("5.0"), v("4.1.1"))?.includes("CRIU 5.0"));
  ok(incompatibility(v("4.1", "aarch64"), v("4.1"))?.includes("aarch64"));
});

Deno.test("checkRoot: one sentence naming the variable, the value and the fix", async (t) => {
  const dir = Deno.makeTempDirSync();
  try {
    Deno.mkdirSync(`${dir}/allowed/moby`, { recursive: true });
    Deno.mkdirSync(`${dir}/other`);
    Deno.mkdirSync(`${dir}/open`, { mode: 0o777 });
    Deno.chmodSync(`${dir}/open`, 0o777);
    Deno.mkdirSync(`${dir}/tenant`);
    Deno.chownSync(`${dir}/tenant`, 1000, 1000);
    Deno.symlinkSync(`${dir}/other`, `${dir}/escape`);
    const allowed = [`${dir}/allowed`, `${dir}/open`, `${dir}/tenant`, `${dir}/escape`, `${dir}/missing`];
    const V = "ARCH_CHECKPOINT_HOST_PATH";
    await t.step("an allowed root, exactly (a trailing or doubled slash is the same path)", () => {
      assertEquals(checkRoot(`${dir}/allowed`, V, allowed), undefined);
      assertEquals(checkRoot(`${dir}//allowed/`, V, allowed), undefined);
      // a root the admin wrote as a link is the admin's: it resolves once, to its target
      assertEquals(resolveRoot(`${dir}/escape`, V, allowed), { real: `${dir}/other` });
    });
    const refused: [string, string][] = [
      ["relative", "is not an absolute path"],
      [`${dir}/allowed/../other`, 'contains ".."'],
      [`${dir}/missing`, "does not exist"],
      [`${dir}/other`, "is not one of the roots the admin allows"],
      // issue 24 finding 4: a directory below an allowed root (a scope, a key, a checkpoint) is never a root
      [`${dir}/allowed/moby`, "is not one of the roots the admin allows"],
      // a root others could change, or a link, is refused, not used
      [`${dir}/open`, "cannot be used:"],
      [`${dir}/tenant`, "cannot be used:"],
    ];
    for (const [value, why] of refused) {
      await t.step(value, () => {
        const msg = checkRoot(value, V, allowed) ?? "";
        ok(msg.startsWith(`${V}="${value}" ${why}`), msg);
        ok(msg.includes(`use one of the roots the admin allows (host config "checkpointRoots": "${dir}/allowed"`), msg);
      });
    }
    await t.step("roots that nest with another root or ARCH directory are refused", () => {
      const msg = String(resolveRoot(`${dir}/allowed`, V, allowed, "checkpointRoots", [`${dir}/allowed/moby`]));
      ok(msg.includes(`holds "${dir}/allowed/moby"`) && msg.includes("do not nest"), msg);
      const inside = String(resolveRoot(`${dir}/allowed`, V, allowed, "checkpointRoots", [dir]));
      ok(inside.includes(`lies inside "${dir}"`), inside);
    });
    // outside the allowed roots, an existing and a missing path get the same answer
    await t.step("does not reveal whether a host path exists", () => {
      const existing = checkRoot("/etc", V, allowed)!.replace("/etc", "X");
      const missing = checkRoot("/nonexistent-arch-path", V, allowed)!.replace("/nonexistent-arch-path", "X");
      assertEquals(existing, missing);
    });
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("a container that mounts its checkpoint root, or what holds it, is refused", () => {
  const spec = (source: string) => ({ mounts: [{ destination: "/data", type: "bind", source, options: ["rbind"] }] });
  ok(
    mountsReachingRoot(spec("/var/lib/arch/checkpoints/moby"), "/var/lib/arch/checkpoints", "V")?.includes(
      "lies inside",
    ),
  );
  ok(mountsReachingRoot(spec("/var/lib"), "/var/lib/arch/checkpoints", "V")?.includes("holds"));
  assertEquals(mountsReachingRoot(spec("/srv/data"), "/var/lib/arch/checkpoints", "V"), undefined);
  const work = "/mnt/efs/work/moby/k";
  assertEquals(mountsReachingRoot(spec(work), "/mnt/efs", "V", work), undefined); // ARCH's own work dir mount
  ok(mountsReachingRoot(spec("/mnt/efs/work/moby/other"), "/mnt/efs", "V", work) !== undefined);
});

Deno.test("HostConfigSchema defaults and refusals", () => {
  const d = HostConfigSchema.parse({});
  assertEquals([d.stateDir, d.checkpointRoots, d.onRestoreFailure, d.restoreConsumed, d.secretFile], [
    "/run/arch",
    [], // only defaultCheckpointRoot, unless the admin lists more
    "fresh",
    "never",
    "/etc/arch/secret",
  ]);
  assertEquals(HostConfigSchema.safeParse({ restoreConsumed: true }).success, false);
  assertEquals(HostConfigSchema.safeParse({ scope: "a+b" }).success, false);
  assertEquals(HostConfigSchema.safeParse({ stateDir: "relative" }).success, false);
  assertEquals(HostConfigSchema.safeParse({ checkpointRoots: ["/a/../b"] }).success, false);
  assertEquals(HostConfigSchema.safeParse({ unknownField: 1 }).success, false);
});

Deno.test("config.json rewrite keeps 64-bit integers and every other value", async () => {
  const { annotateBundle } = await import("../../src/criu/config.ts");
  const dir = Deno.makeTempDirSync();
  const text =
    '{"process":{"rlimits":[{"type":"RLIMIT_MEMLOCK","hard":18446744073709551615,"soft":18446744073709551615}]},' +
    '"linux":{"resources":{"memory":{"limit":9007199254740993,"swappiness":0.5}}},"annotations":{"org.criu.config":"/x"}}';
  Deno.writeTextFileSync(`${dir}/config.json`, text, { mode: 0o640 });
  annotateBundle(dir, "/var/lib/arch/criu/criu.conf");
  const out = Deno.readTextFileSync(`${dir}/config.json`);
  assertEquals(out, text.replace('"/x"', '"/var/lib/arch/criu/criu.conf"'));
  assertEquals(Deno.statSync(`${dir}/config.json`).mode! & 0o777, 0o640);
  Deno.removeSync(dir, { recursive: true });
});
