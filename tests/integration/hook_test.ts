/**
 * The OCI hook role as runc runs it (`dist/arch hook <stage>`, state on stdin, environment
 * from the hook entry), attacked with what a hostile container controls: its config.json
 * (environment, annotations) and nothing else. No engine needed: the registry record that
 * the wrapper writes at create is written here the same way.
 */

import { deepEqual as assertEquals, ok } from "node:assert/strict";
import { ARCH, SKIP } from "./_env.ts";
import { Registry } from "../../src/registry/registry.ts";
import { mustRun } from "../../src/process/exec.ts";

interface Run {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

async function hook(config: string, stage: string, stdin: string): Promise<Run> {
  const child = new Deno.Command(ARCH, {
    args: ["hook", stage],
    env: { ARCH_CONFIG: config, PATH: "/usr/sbin:/usr/bin:/sbin:/bin" },
    clearEnv: true,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(stdin));
  await writer.close();
  const out = await child.output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test({ name: "arch hook: what a hostile container controls cannot steer it", ignore: SKIP }, async (t) => {
  const dir = Deno.makeTempDirSync({ prefix: "arch-hook-test-" });
  try {
    const shared = `${dir}/shared`; // "/" is the mount point the records name: always mounted
    Deno.mkdirSync(`${shared}/work/moby/victim`, { recursive: true, mode: 0o700 });
    const config = `${dir}/config.json`;
    Deno.writeTextFileSync(
      config,
      JSON.stringify({
        runc: "/usr/sbin/runc",
        stateDir: `${dir}/run`,
        logFile: `${dir}/arch.log`,
        sharedFsRoots: ["/"],
        removeWorkdirOnSuccess: true,
      }),
      { mode: 0o644 },
    );
    const bundle = (name: string, env: string[], annotations: Record<string, string> = {}) => {
      const path = `${dir}/bundles/${name}`;
      Deno.mkdirSync(path, { recursive: true });
      Deno.writeTextFileSync(`${path}/config.json`, JSON.stringify({ process: { env }, annotations }));
      return path;
    };
    const state = (id: string, path: string, status = "creating") =>
      JSON.stringify({ ociVersion: "1.0.2", id, status, pid: Deno.pid, bundle: path });
    const sharedEnv = ["ARCH_ENABLE=1", `ARCH_SHAREDFS_HOST_PATH=${shared}`, "ARCH_WORKDIR_CONTAINER_PATH=/work"];
    // the victim: an ARCH shared-FS container the wrapper recorded
    const victimBundle = bundle("victim", sharedEnv, { "org.arch.namespace": "moby" });
    const victimRecord = {
      namespace: "moby",
      id: "victim",
      root: "/run/docker/runtime-runc/moby",
      bundle: victimBundle,
      key: "victim",
      scope: "moby",
      checkpointRoot: `${shared}/checkpoint`,
      sharedFs: { root: shared, mountPoint: "/", containerPath: "/work", workdir: `${shared}/work/moby/victim` },
      createdAt: new Date().toISOString(),
    };
    new Registry(`${dir}/run`).put(victimRecord);

    await t.step("containers without ARCH, and input that is not a state: exit 0, silent", async () => {
      for (const stage of ["createRuntime", "poststop"]) {
        for (const input of ["", "not json", state("plain", bundle("plain", ["PATH=/bin"]))]) {
          assertEquals(await hook(config, stage, input), { code: 0, stdout: "", stderr: "" }, `${stage} ${input}`);
        }
      }
      // local mode needs no hook either
      const local = state("local", bundle("local", ["ARCH_ENABLE=1"]));
      assertEquals((await hook(config, "createRuntime", local)).code, 0);
    });

    await t.step("a shared-FS container the wrapper did not record is refused with one sentence", async () => {
      const r = await hook(config, "createRuntime", state("stray", bundle("stray", sharedEnv)));
      assertEquals(r.code, 1);
      ok(/^arch: ARCH_SHAREDFS_HOST_PATH needs ARCH as the container's runtime/.test(r.stderr), r.stderr);
      assertEquals(r.stderr.trim().split("\n").length, 1);
    });

    await t.step("a forged namespace annotation and another container's id do not reach its record", async () => {
      // same id as the victim, its own bundle: the record's bundle does not match
      const forged = bundle("forged", sharedEnv, { "org.arch.namespace": "moby" });
      const r = await hook(config, "createRuntime", state("victim", forged));
      assertEquals(r.code, 1, r.stderr);
      const bad = await hook(
        config,
        "createRuntime",
        state("victim", bundle("dots", sharedEnv, { "org.arch.namespace": "../x" })),
      );
      assertEquals(bad.code, 1, bad.stderr);
      // and poststop of the forged container never removes the victim's work directory
      const post = await hook(config, "poststop", state("victim", forged, "stopped"));
      assertEquals(post.code, 0);
      ok(Deno.statSync(`${shared}/work/moby/victim`).isDirectory, "the victim's work directory is still there");
    });

    // What runc has mounted when it runs the hook (the "container" is this test process: its root is the host's).
    const view = `${victimBundle}/rootfs/work`;
    Deno.mkdirSync(view, { recursive: true });
    const mountAtView = (source: string) => mustRun({ cmd: "mount", args: ["--bind", source, view] });
    const unmountView = () => mustRun({ cmd: "umount", args: [view] });

    await t.step("what runc mounted at the work path must be the key's work directory", async () => {
      // finding 1 of issue 24: a path element replaced between ARCH's check and runc's mount
      Deno.mkdirSync(`${dir}/elsewhere`);
      await mountAtView(`${dir}/elsewhere`);
      try {
        const r = await hook(config, "createRuntime", state("victim", victimBundle));
        assertEquals(r.code, 1);
        ok(/the directory mounted at "\/work" is not ".*\/work\/moby\/victim"/.test(r.stderr), r.stderr);
      } finally {
        await unmountView();
      }
      const nothing = await hook(config, "createRuntime", state("victim", victimBundle));
      assertEquals(nothing.code, 1, "nothing mounted: refused");
      // The image's own link at the work path, aimed at the host's work directory: resolved inside
      // the rootfs as runc resolves mount destinations, so it does not pass for the mount.
      Deno.removeSync(view);
      Deno.symlinkSync(`${shared}/work/moby/victim`, view);
      try {
        const r = await hook(config, "createRuntime", state("victim", victimBundle));
        assertEquals(r.code, 1, r.stderr);
      } finally {
        Deno.removeSync(view);
        Deno.mkdirSync(view);
      }
    });

    await t.step("the recorded container passes; a vanished work directory refuses it", async () => {
      await mountAtView(`${shared}/work/moby/victim`);
      try {
        assertEquals((await hook(config, "createRuntime", state("victim", victimBundle))).code, 0);
      } finally {
        await unmountView();
      }
      Deno.renameSync(`${shared}/work/moby/victim`, `${shared}/work/moby/victim.moved`);
      const r = await hook(config, "createRuntime", state("victim", victimBundle));
      assertEquals(r.code, 1);
      ok(
        /cannot give the container its work directory: the work directory .* cannot be found/.test(r.stderr),
        r.stderr,
      );
      Deno.renameSync(`${shared}/work/moby/victim.moved`, `${shared}/work/moby/victim`);
    });

    await t.step(
      "poststop keeps the work directory when the exit status is unknown, even when removal is on",
      async () => {
        const r = await hook(config, "poststop", state("victim", victimBundle, "stopped"));
        assertEquals([r.code, r.stderr], [0, ""]);
        ok(Deno.statSync(`${shared}/work/moby/victim`).isDirectory);
        new Registry(`${dir}/run`).put({ ...victimRecord, exit: { code: 0 } });
        assertEquals((await hook(config, "poststop", state("victim", victimBundle, "stopped"))).code, 0);
        ok(!Deno.readDirSync(`${shared}/work/moby`).some((e) => e.name === "victim"), "removed after exit 0");
      },
    );

    await t.step("an unknown stage is one sentence and a failure", async () => {
      const r = await hook(config, "prestart", "{}");
      assertEquals(r.code, 1);
      ok(/unknown hook stage "prestart"/.test(r.stderr), r.stderr);
    });
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
