/**
 * `arch install` / `arch uninstall` against the real engines of both generations, run as the
 * built `dist/arch` with every path pointed into a scratch directory:
 * - docker: a user's daemon.json gets the `arch` runtime as Docker's default; `docker run`
 *   without `--runtime` of an ARCH container goes through ARCH (checkpoint, and a new
 *   container of its key resumes the workload), a plain container still runs; dry run and a
 *   second install change nothing; invalid JSON is refused with one sentence; uninstall puts
 *   the original bytes back. (The stack's dockerd reloads daemon.json on SIGHUP, which covers
 *   `runtimes` and `default-runtime` when the file sets them: the stack writes its own
 *   daemon.json after `prepare`, so the install runs on the running stack.)
 * - containerd: the drop-in (and the import added to config.toml) is accepted by the real
 *   containerd: `config dump` shows the `arch` runtime with arch-runc, the copied runc options
 *   and the user's CRI settings, and containerd starts with its CRI plugin `ok`; uninstall
 *   restores config.toml byte for byte.
 * - podman: the hooks.d files and the containers.conf drop-in are installed, Podman reads the
 *   drop-in (its runtime becomes arch-runc) and runs containers with the installed hooks (in
 *   their config.json), and uninstall removes them. Podman runs on the system's generation.
 */

import { deepEqual as assertEquals, ok } from "node:assert/strict";
import type { EmbeddedStack } from "../harness/stack.ts";
import { describeEngines, type Engines, systemEngines } from "../harness/engines.ts";
import { newScratch, sweepScratch, terminate } from "../harness/stack.ts";
import { ARCH, ARCH_RUNC, archCli, ENGINES, eventually, SKIP, stackTest, startStack, uniqueName } from "./_env.ts";
import { PrivatePodman } from "../harness/podman.ts";
import { dockerProgress, fullId, waitTicks } from "./_workload.ts";
import { runCommand } from "../../src/process/exec.ts";
import { resolveProgram } from "../../src/process/programs.ts";

const dec = new TextDecoder();

async function arch(args: string[], env: Record<string, string> = {}) {
  const out = await new Deno.Command(ARCH, { args, env }).output();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** Bytes and mtime of a file (what "changes nothing" compares). */
function snapshot(path: string) {
  const info = Deno.statSync(path);
  return { bytes: [...Deno.readFileSync(path)].join(","), mtime: info.mtime?.getTime(), mode: info.mode };
}

/** Makes the stack's dockerd re-read daemon.json and waits until `probe` holds for `docker info`. */
async function reloadDocker(stack: EmbeddedStack, what: string, probe: (info: DockerInfo) => boolean) {
  Deno.kill(stack.dockerdPid, "SIGHUP");
  await eventually(what, async () => probe(await dockerInfo(stack)) ? true : undefined);
}

interface DockerInfo {
  readonly DefaultRuntime: string;
  readonly Runtimes: Record<string, { path: string }>;
}

async function dockerInfo(stack: EmbeddedStack): Promise<DockerInfo> {
  return JSON.parse((await stack.docker(["info", "--format", "{{json .}}"])).stdout) as DockerInfo;
}

/** A user's daemon.json before ARCH: tabs, no final newline, keys dockerd's flags do not also set. */
const USER_DAEMON_JSON = '{\n\t"labels": ["team=ml"],\n\t"max-concurrent-uploads": 3\n}';

stackTest("arch install docker --default: docker run without --runtime goes through ARCH", async (t, stack) => {
  const config = stack.dockerConfig;
  const record = `${stack.scratch}/install/install.json`;
  const common = ["--docker-config", config, "--arch-runc", ARCH_RUNC, "--record", record];
  const env = { ARCH_CONFIG: stack.archConfig };
  // The user's configuration, without any arch runtime. (dockerd re-reads only the keys a
  // file sets: its own runtime `arch` from the stack's file stays loaded until our install's
  // reload replaces it; its default runtime is runc until then.)
  Deno.writeTextFileSync(config, USER_DAEMON_JSON);
  Deno.chmodSync(config, 0o640);
  assertEquals((await dockerInfo(stack)).DefaultRuntime, "runc");
  const original = snapshot(config);

  await t.step("--dry-run prints the diff and changes nothing", async () => {
    const r = await arch(["install", "docker", "--default", "--dry-run", ...common], env);
    assertEquals(r.code, 0, r.stderr);
    ok(r.stdout.includes(`--- ${config}\n+++ ${config}\n`), r.stdout);
    ok(r.stdout.includes('+\t"default-runtime": "arch"'), r.stdout);
    ok(r.stdout.includes(`docker: would change ${config}`), r.stdout);
    assertEquals(snapshot(config), original);
    ok(!await exists(record), "no record written by a dry run");
  });

  await t.step("install: the other keys stay, the file keeps its mode, the record is root-only", async () => {
    const r = await arch(["install", "docker", "--default", ...common], env);
    assertEquals(r.code, 0, r.stderr);
    ok(r.stdout.includes("restart docker to apply: systemctl restart docker"), r.stdout);
    const value = JSON.parse(Deno.readTextFileSync(config));
    assertEquals(value, {
      labels: ["team=ml"],
      "max-concurrent-uploads": 3,
      runtimes: { arch: { path: ARCH_RUNC } },
      "default-runtime": "arch",
    });
    assertEquals(Deno.statSync(config).mode! & 0o777, 0o640);
    assertEquals(Deno.statSync(record).mode! & 0o777, 0o600);
    await reloadDocker(stack, "dockerd with arch as its default runtime", (i) => i.DefaultRuntime === "arch");
  });

  await t.step("a second install has nothing to do and changes nothing", async () => {
    const before = snapshot(config);
    const r = await arch(["install", "docker", "--default", ...common], env);
    assertEquals(r.code, 0, r.stderr);
    assertEquals(r.stdout.trim(), "docker: nothing to do (already installed)");
    assertEquals(snapshot(config), before);
  });

  await t.step("docker run without --runtime: ARCH checkpoints it and a new container resumes", async () => {
    const key = uniqueName("k");
    const run = (name: string) =>
      stack.docker([
        "run",
        "-d",
        "--name",
        name,
        "--network",
        "none",
        "--env",
        "ARCH_ENABLE=1",
        "--env",
        `ARCH_CHECKPOINT_ID=${key}`,
        "arch-test",
        "workload",
        "--interval-ms",
        "50",
        "--verify-every",
        "10",
      ]);
    const first = uniqueName("first");
    await run(first);
    assertEquals((await stack.docker(["inspect", "-f", "{{.HostConfig.Runtime}}", first])).stdout.trim(), "arch");
    await waitTicks(stack, first, 10);
    const r = await archCli(stack, ["checkpoint", await fullId(stack, first)]);
    assertEquals(r.code, 0, r.stdout + r.stderr);
    const before = await dockerProgress(stack, first);
    const second = uniqueName("second");
    await run(second);
    const after = await waitTicks(stack, second, before.lastTick + 10);
    assertEquals(after.starts, 0, "the new container resumed instead of starting fresh");
    ok(after.firstTick <= before.lastTick + 1 && after.firstTick >= before.lastTick - 1, `${after.firstTick}`);
    assertEquals(after.verifyFailures, 0);
    await stack.docker(["rm", "-f", first, second]);
  });

  await t.step("a container without ARCH_ENABLE still runs (pass-through)", async () => {
    const r = await stack.docker(["run", "--rm", "--network", "none", "arch-test", "sh", "-c", "echo plain-ok"]);
    assertEquals(r.stdout.trim(), "plain-ok");
  });

  await t.step("uninstall --dry-run changes nothing; uninstall restores the original bytes", async () => {
    const installed = snapshot(config);
    const dry = await arch(["uninstall", "docker", "--dry-run", "--record", record]);
    assertEquals(dry.code, 0, dry.stderr);
    ok(dry.stdout.includes('-\t"default-runtime": "arch"'), dry.stdout);
    assertEquals(snapshot(config), installed);
    const r = await arch(["uninstall", "docker", "--record", record]);
    assertEquals(r.code, 0, r.stderr);
    assertEquals(Deno.readTextFileSync(config), USER_DAEMON_JSON);
    assertEquals(Deno.statSync(config).mode! & 0o777, 0o640);
    ok(!await exists(record), "the record is gone with the last entry");
    const again = await arch(["uninstall", "docker", "--record", record]);
    assertEquals(again.stdout.trim(), "docker: nothing to do (not installed)");
  });

  await t.step("invalid JSON: refused with one sentence, nothing changed", async () => {
    Deno.writeTextFileSync(config, '{"labels": ["team=ml"],}\n');
    const before = snapshot(config);
    const r = await arch(["install", "docker", "--default", ...common], env);
    assertEquals(r.code, 2);
    const lines = r.stderr.trim().split("\n");
    assertEquals(lines.length, 1, r.stderr);
    ok(lines[0]!.startsWith(`arch: docker config "${config}" is not valid JSON (`), r.stderr);
    ok(lines[0]!.endsWith("fix the file, then run arch install again"), r.stderr);
    assertEquals(snapshot(config), before);
    ok(!await exists(record));
    Deno.writeTextFileSync(config, USER_DAEMON_JSON);
  });

  await t.step("an arch runtime naming another binary is refused unless --force", async () => {
    const other = '{"runtimes": {"arch": {"path": "/opt/other/runc"}}}\n';
    Deno.writeTextFileSync(config, other);
    const r = await arch(["install", "docker", ...common], env);
    assertEquals(r.code, 2);
    ok(r.stderr.includes("pass --force"), r.stderr);
    assertEquals(Deno.readTextFileSync(config), other);
    const forced = await arch(["install", "docker", "--force", ...common], env);
    assertEquals(forced.code, 0, forced.stderr);
    assertEquals(JSON.parse(Deno.readTextFileSync(config)).runtimes.arch.path, ARCH_RUNC);
    assertEquals((await arch(["uninstall", "docker", "--record", record])).code, 0);
    assertEquals(Deno.readTextFileSync(config), other);
  });
});

const exists = (path: string) => Deno.stat(path).then(() => true, () => false);

/** Runs an engine generation's binary (`cmd`: its containerd or ctr). */
const engineTool = (cmd: string, args: string[]) => runCommand({ cmd, args, timeoutMs: 30_000 });

/** containerd of `engines` with `config`: runs `config dump`. */
async function configDump(engines: Engines, config: string): Promise<string> {
  const r = await engineTool(engines.containerd, ["--config", config, "config", "dump"]);
  ok(r.code === 0, r.stderr);
  return r.stdout;
}

/** The user's config.toml: version 2 (containerd 1.7) or 3 (2.x), with CRI settings and runc options. */
function userContainerdConfig(dir: string, version: 2 | 3): string {
  const head = [
    `version = ${version}`,
    `root = "${dir}/root"`,
    `state = "${dir}/state"`,
    'disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", ' +
    '"io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper"]',
    "",
    "[grpc]",
    `  address = "${dir}/containerd.sock"`,
    "[ttrpc]",
    `  address = "${dir}/containerd.sock.ttrpc"`,
    "",
  ];
  const cri = version === 2
    ? [
      '[plugins."io.containerd.grpc.v1.cri"]',
      '  sandbox_image = "example.com/user/pause:1"',
      "  disable_apparmor = true",
      '  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]',
      '    runtime_type = "io.containerd.runc.v2"',
      '    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]',
      "      SystemdCgroup = true",
    ]
    : [
      '[plugins."io.containerd.cri.v1.images".pinned_images]',
      '  sandbox = "example.com/user/pause:1"',
      '[plugins."io.containerd.cri.v1.runtime"]',
      "  disable_apparmor = true",
      '  [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]',
      '    runtime_type = "io.containerd.runc.v2"',
      '    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]',
      "      SystemdCgroup = true",
    ];
  return [...head, ...cri, ""].join("\n");
}

/** The `arch` runtime table of a `config dump` (TOML text of containerd 1.7 or 2.x). */
function archRuntimeOf(dump: string): string {
  const start = dump.search(
    /\[plugins\.["']io\.containerd\.(grpc\.v1\.cri|cri\.v1\.runtime)["']\.containerd\.runtimes\.arch\]/,
  );
  ok(start >= 0, `no runtime arch in the dump:\n${dump}`);
  const rest = dump.slice(start);
  const end = rest.search(/\n\s*\[plugins\.["'][^\]]*runtimes\.(?!arch)[^\]]*\]/);
  return end < 0 ? rest : rest.slice(0, end);
}

for (const engines of ENGINES.length > 0 ? ENGINES : [undefined]) {
  const label = engines === undefined ? "" : ` [${describeEngines(engines)}]`;
  Deno.test({
    name: `arch install containerd: the drop-in is accepted by the real containerd${label}`,
    ignore: SKIP,
    sanitizeResources: false,
    sanitizeOps: false,
  }, async (t) => {
    const e = engines!;
    const major = Number((e.versions.containerd ?? "1").split(".")[0]);
    const dir = newScratch("arch-install-ctd-");
    try {
      for (const version of major >= 2 ? [3, 2] as const : [2] as const) {
        await t.step(`config version ${version}: dump, start, uninstall`, async () => {
          const d = `${dir}/v${version}`;
          Deno.mkdirSync(d);
          const config = `${d}/config.toml`;
          const record = `${d}/install.json`;
          const text = userContainerdConfig(d, version);
          Deno.writeTextFileSync(config, text);
          const args = ["--containerd", e.containerd, "--containerd-config", config, "--arch-runc", ARCH_RUNC];
          const dry = await arch(["install", "containerd", "--default", "--dry-run", ...args, "--record", record]);
          assertEquals(dry.code, 0, dry.stderr);
          ok(dry.stdout.includes(`+imports = ["${d}/conf.d/arch.toml"]`), dry.stdout);
          assertEquals(Deno.readTextFileSync(config), text);
          ok(!await exists(`${d}/conf.d`));

          const r = await arch(["install", "containerd", "--default", ...args, "--record", record]);
          assertEquals(r.code, 0, r.stderr);
          ok(r.stdout.includes("restart containerd to apply"), r.stdout);
          const again = await arch(["install", "containerd", "--default", ...args, "--record", record]);
          assertEquals(again.stdout.trim(), "containerd: nothing to do (already installed)");

          const dump = await configDump(e, config);
          const runtime = archRuntimeOf(dump);
          ok(/runtime_type = ["']io\.containerd\.runc\.v2["']/.test(runtime), runtime);
          ok(new RegExp(`BinaryName = ["']${ARCH_RUNC}["']`).test(runtime), runtime);
          ok(/SystemdCgroup = true/.test(runtime), `runc's options copied: ${runtime}`);
          ok(/default_runtime_name = ["']arch["']/.test(dump), "arch is the default runtime");
          ok(dump.includes("example.com/user/pause:1"), "the user's CRI settings are kept");

          // containerd starts with it, CRI plugin loaded.
          const binary = e.containerd;
          const child = new Deno.Command(binary, {
            args: ["--config", config, "--log-level", "warn"],
            env: { PATH: e.path },
            clearEnv: true,
            stdin: "null",
            stdout: "null",
            stderr: "piped",
          }).spawn();
          const log = child.stderr.pipeTo(Deno.openSync(`${d}/containerd.log`, { create: true, write: true }).writable)
            .catch(() => {});
          try {
            const plugins = await eventually("containerd with the drop-in", async () => {
              const p = await engineTool(e.ctr, ["--address", `${d}/containerd.sock`, "plugins", "ls"]);
              return p.code === 0 ? p.stdout : undefined;
            }, 20_000);
            const cri = plugins.split("\n").filter((l) =>
              /\bcri\b|\bruntime\b/.test(l) && l.includes("io.containerd.cri") ||
              l.includes("io.containerd.grpc.v1") && /\scri\s/.test(l)
            );
            ok(cri.length > 0 && cri.every((l) => /\sok\s*$/.test(l)), plugins);
          } finally {
            await terminate(child);
            await log;
          }

          const u = await arch(["uninstall", "containerd", "--record", record]);
          assertEquals(u.code, 0, u.stderr);
          assertEquals(Deno.readTextFileSync(config), text);
          ok(!await exists(`${d}/conf.d`), "the drop-in and the directory made for it are gone");
        });
      }

      await t.step("no config.toml: created with version and imports only, removed by uninstall", async () => {
        const d = `${dir}/none`;
        Deno.mkdirSync(d);
        const record = `${d}/install.json`;
        const args = [
          "--containerd",
          e.containerd,
          "--containerd-config",
          `${d}/config.toml`,
          "--arch-runc",
          ARCH_RUNC,
        ];
        assertEquals((await arch(["install", "containerd", ...args, "--record", record])).code, 0);
        const version = major >= 2 ? 3 : 2;
        assertEquals(
          Deno.readTextFileSync(`${d}/config.toml`),
          `version = ${version}\nimports = ["${d}/conf.d/arch.toml"]\n`,
        );
        ok(archRuntimeOf(await configDump(e, `${d}/config.toml`)).includes(ARCH_RUNC));
        assertEquals((await arch(["uninstall", "containerd", "--record", record])).code, 0);
        assertEquals([...Deno.readDirSync(d)].map((x) => x.name), []);
      });
    } finally {
      const problems = await sweepScratch(dir, e.runc);
      if (problems.length > 0) console.error(`cleanup incomplete: ${problems.join("; ")}`);
    }
  });
}

Deno.test({
  name: "arch install podman: hooks.d files and the containers.conf drop-in, read by Podman, removed by uninstall",
  ignore: SKIP,
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  const dir = newScratch("arch-install-podman-");
  try {
    const hooks = `${dir}/oci/hooks.d`;
    const conf = `${dir}/containers.conf.d/arch.conf`;
    const record = `${dir}/install.json`;
    const args = ["--podman-hooks-dir", hooks, "--podman-config", conf, "--arch", ARCH, "--arch-runc", ARCH_RUNC];
    const r = await arch(["install", "podman", "--default", ...args, "--record", record]);
    assertEquals(r.code, 0, r.stderr);
    assertEquals([...Deno.readDirSync(hooks)].map((e) => e.name).sort(), [
      "arch-createRuntime.json",
      "arch-poststop.json",
    ]);
    const hook = JSON.parse(Deno.readTextFileSync(`${hooks}/arch-createRuntime.json`));
    assertEquals([hook.hook.path, hook.hook.args, hook.when, hook.stages], [
      ARCH,
      ["arch", "hook", "createRuntime"],
      { always: true },
      ["createRuntime"],
    ]);
    if (resolveProgram("podman") !== undefined) {
      // Podman reads the drop-in: its runtime is now arch-runc, at ARCH_RUNC.
      const info = await runCommand({
        cmd: "podman",
        args: [
          "--root",
          `${dir}/root`,
          "--runroot",
          `${dir}/run`,
          "info",
          "--format",
          "{{.Host.OCIRuntime.Name}} {{.Host.OCIRuntime.Path}}",
        ],
        env: { CONTAINERS_CONF_OVERRIDE: conf, PODMAN_IGNORE_CGROUPSV1_WARNING: "1" },
        timeoutMs: 60_000,
      });
      assertEquals(info.stdout.trim(), `arch-runc ${ARCH_RUNC}`, info.stderr);
    }
    const again = await arch(["install", "podman", "--default", ...args, "--record", record]);
    assertEquals(again.stdout.trim(), "podman: nothing to do (already installed)");
    const u = await arch(["uninstall", "podman", "--record", record]);
    assertEquals(u.code, 0, u.stderr);
    assertEquals([...Deno.readDirSync(dir)].map((e) => e.name).filter((n) => !["root", "run"].includes(n)), []);
  } finally {
    const problems = await sweepScratch(dir, "/usr/sbin/runc");
    if (problems.length > 0) console.error(`cleanup incomplete: ${problems.join("; ")}`);
  }
});

Deno.test({
  name: "arch install podman: Podman runs containers with the installed hooks.d files",
  ignore: SKIP || resolveProgram("podman") === undefined,
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  await using stack = await startStack(systemEngines());
  const hooks = `${stack.scratch}/installed/hooks.d`;
  const record = `${stack.scratch}/installed/install.json`;
  const r = await arch([
    "install",
    "podman",
    "--podman-hooks-dir",
    hooks,
    "--podman-config",
    `${stack.scratch}/installed/arch.conf`,
    "--arch",
    ARCH,
    "--arch-runc",
    ARCH_RUNC,
    "--record",
    record,
  ]);
  assertEquals(r.code, 0, r.stderr);
  const podman = await PrivatePodman.start(stack, { hooksDir: hooks });
  // Podman loads both hook files (a malformed one fails every run) and runs them: the hooks
  // return at once for a container without ARCH_ENABLE=1.
  const plain = await podman.podman(["run", "--rm", "--network", "none", "arch-test", "sh", "-c", "echo plain-ok"]);
  assertEquals(plain.stdout.trim(), "plain-ok");
  const name = uniqueName("hooked");
  await podman.podman(["run", "-d", "--name", name, "arch-test", "sleep", "60"]);
  const bundle = (await podman.podman(["inspect", "--format", "{{.StaticDir}}", name])).stdout.trim();
  const spec = JSON.parse(Deno.readTextFileSync(`${bundle}/config.json`)) as {
    hooks?: Record<string, { path: string; args: string[] }[]>;
  };
  assertEquals(spec.hooks?.createRuntime?.map((h) => h.args), [["arch", "hook", "createRuntime"]]);
  await podman.podman(["rm", "-f", name]);
});
