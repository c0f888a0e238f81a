/**
 * src/cli/doctor.ts: `arch doctor`'s kernel, engine and watcher checks, against files in a
 * temporary directory.
 */

import { deepEqual as assertEquals, ok } from "node:assert/strict";
import {
  containerdCheck,
  dockerCheck,
  enginePaths,
  kernelCheck,
  podmanCheck,
  watcherCheck,
} from "../../src/cli/doctor.ts";

Deno.test("arch doctor: kernel, engines and watcher checks", async (t) => {
  const dir = Deno.makeTempDirSync({ prefix: "arch-doctor-" });
  try {
    await t.step("kernel: pidfd exit info needs 6.15; soft-dirty is a note", () => {
      assertEquals(kernelCheck("6.14.2", true).status, "warn");
      const k = kernelCheck("6.18.0", false);
      assertEquals(k.status, "ok");
      ok(k.detail.includes("no soft-dirty tracking"), k.detail);
    });
    await t.step("containerd: a BinaryName naming arch-runc in any TOML file", () => {
      Deno.mkdirSync(`${dir}/containerd/conf.d`, { recursive: true });
      Deno.writeTextFileSync(`${dir}/containerd/config.toml`, 'version = 2\nimports = ["conf.d/*.toml"]\n');
      assertEquals(containerdCheck(`${dir}/containerd`).status, "warn");
      ok(containerdCheck(`${dir}/nothing`).detail.includes('run "arch install containerd"'));
      Deno.writeTextFileSync(`${dir}/arch-runc`, "", { mode: 0o755 });
      Deno.writeTextFileSync(
        `${dir}/containerd/conf.d/arch.toml`,
        `[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.arch.options]\n  BinaryName = "${dir}/arch-runc"\n`,
      );
      assertEquals(containerdCheck(`${dir}/containerd`).status, "ok");
    });
    await t.step("docker: runtimes.*.path arch-runc, default runtime said", () => {
      const path = `${dir}/daemon.json`;
      assertEquals(dockerCheck(path).status, "warn");
      Deno.writeTextFileSync(path, "{ not json");
      ok(dockerCheck(path).detail.includes("not readable JSON"));
      Deno.writeTextFileSync(path, JSON.stringify({ runtimes: { arch: { path: `${dir}/arch-runc` } } }));
      const c = dockerCheck(path);
      assertEquals(c.status, "ok");
      ok(c.detail.includes("--runtime arch"), c.detail);
      Deno.writeTextFileSync(path, JSON.stringify({ runtimes: { arch: { path: "/nope/arch-runc" } } }));
      assertEquals(dockerCheck(path).status, "warn");
    });
    await t.step("podman: both hooks.d files", () => {
      Deno.mkdirSync(`${dir}/hooks.d`);
      assertEquals(podmanCheck([`${dir}/hooks.d`]).status, "warn");
      Deno.writeTextFileSync(`${dir}/hooks.d/arch-createRuntime.json`, "{}");
      ok(podmanCheck([`${dir}/hooks.d`]).detail.startsWith("only arch-createRuntime.json"));
      Deno.writeTextFileSync(`${dir}/hooks.d/arch-poststop.json`, "{}");
      assertEquals(podmanCheck([`${dir}/none`, `${dir}/hooks.d`]).status, "ok");
    });
    await t.step("watcher: alive and polled within 30 s, else a warning", () => {
      const file = `${dir}/watch.json`;
      const now = Date.now();
      assertEquals(watcherCheck(file, now).status, "warn");
      const status = (pid: number, lastPollAt: string) =>
        Deno.writeTextFileSync(file, JSON.stringify({ pid, provider: "aws", startedAt: "", lastPollAt }));
      status(Deno.pid, new Date(now - 5_000).toISOString());
      assertEquals(watcherCheck(file, now).status, "ok");
      status(Deno.pid, new Date(now - 60_000).toISOString());
      ok(watcherCheck(file, now).detail.includes("last polled 1m ago"));
      status(2 ** 22 + 1, new Date(now).toISOString());
      ok(watcherCheck(file, now).detail.includes("is gone"));
    });
    await t.step("paths overridable through the environment", () => {
      const env = new Map([["ARCH_DOCTOR_DOCKER_CONFIG", "/x/d.json"], ["ARCH_DOCTOR_HOOKS_DIRS", "/a:/b"]]);
      const p = enginePaths((n) => env.get(n));
      assertEquals([p.containerdDir, p.dockerConfig, p.hooksDirs], ["/etc/containerd", "/x/d.json", ["/a", "/b"]]);
    });
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
