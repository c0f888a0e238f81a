/**
 * The embedded engine stack for the demo and the tests: a private containerd and a private
 * dockerd of one engine generation (see `engines.ts`), each with its own root, state,
 * sockets and pid file inside one scratch directory, both offering an `arch` runtime that
 * points at `dist/arch-runc`.
 *
 * Guarantees: the machine's own engine configuration (`/etc/containerd`, `/etc/docker`,
 * `/var/lib/docker`, default sockets) is never read or written. `stop()` is best-effort and
 * complete: whatever failed before or fails on the way, it removes every container the stack
 * started (through the engines, then with runc directly), stops both daemons, kills every
 * process left that refers to the scratch directory (shims, exit watchers), unmounts what is
 * mounted below it and removes it; it reports what it could not do instead of throwing.
 * Requires root and the engine binaries (see install.ts).
 */

import { CommandError, type CommandResult, type CommandSpec, runCommand } from "../../src/process/exec.ts";
import { buildTestImage, TEST_IMAGE } from "./image.ts";
import type { Engines } from "./engines.ts";

export { TEST_IMAGE };

export interface StackOptions {
  /** `dist/arch-runc`, the runtime binary engines are pointed at. */
  readonly archRunc: string;
  /** The engine generation to run. */
  readonly engines: Engines;
  /** Source of the test workload. */
  readonly workloadSource: string;
  /** Where the built test image is cached between runs. */
  readonly imageCache: string;
  /** Keep the scratch directory after stop (debugging). */
  readonly keep?: boolean;
  /** Where the scratch directory is created (default: the system's temporary directory). */
  readonly scratchParent?: string;
  /**
   * Runs the daemons and every command of the stack (`ctr`, `docker`, `run`) inside other
   * namespaces: the options of `nsenter` that enter them (`--mount=<file>`, `--net=<file>`...),
   * as a node of `nodes.ts` does. A `run` working directory is then one of the entered mount
   * namespace. The sweep needs no entering: a stack in its own mount namespace keeps its
   * `/run/containerd` in `<scratch>/run/containerd` (see {@link sweepScratch}).
   */
  readonly nsenter?: readonly string[];
  /** Fields added to ARCH's host configuration (or replacing the stack's own). */
  readonly archConfigExtra?: Readonly<Record<string, unknown>>;
  /**
   * Called once the scratch directory and the configuration files exist, before the daemons
   * start (`<scratch>/containerd.toml` is containerd's), with the engine generation to start.
   */
  readonly prepare?: (scratch: string, engines: Engines) => Promise<void>;
  /**
   * Keeps containerd's CRI plugin (Kubernetes' path, see `cri.ts`), configured for this machine
   * without internet: the pause image built here and, with the test image, imported into the
   * `k8s.io` namespace; a CNI network (`ptp`, a /24 of its own) whose configuration and state
   * stay in the scratch directory. Runtime handlers (such as `arch`) are added by `prepare`.
   * Off by default.
   */
  readonly cri?: boolean;
}

/** libcni's result cache (containerd's CRI plugin cannot move it). */
const CNI_RESULTS = "/var/lib/cni/results";

/** How long one engine command may take while the stack is torn down. */
const STOP_COMMAND_TIMEOUT_MS = 30_000;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitFor(what: string, probe: () => Promise<boolean>, timeoutMs: number, logFile: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await probe()) return;
    await sleep(100);
  }
  let tail = "";
  try {
    tail = Deno.readTextFileSync(logFile).trim().split("\n").at(-1) ?? "";
  } catch { /* no log */ }
  throw new Error(`${what} did not become ready within ${timeoutMs} ms (${logFile}${tail ? `: ${tail}` : ""})`);
}

/** Mount points at or below `dir`, deepest first. */
function mountsUnder(dir: string): string[] {
  const points = Deno.readTextFileSync("/proc/self/mountinfo").split("\n")
    .map((line) => line.split(" ")[4])
    .filter((p): p is string => p !== undefined && (p === dir || p.startsWith(`${dir}/`)))
    .map((p) => p.replace(/\\040/g, " "));
  return [...new Set(points)].sort((a, b) => b.length - a.length);
}

/**
 * Removes what is left of a stack whose scratch directory is `scratch`, without its engines:
 * runc containers whose state points into it (`runc delete --force`), then every process
 * that still refers to it (shims outlive containerd; exit watchers), mounts below it, and
 * the directory itself unless `keep`. Also what the test runner calls after a run that died
 * before its stacks were stopped. Never throws: returns what it could not do.
 */
export async function sweepScratch(scratch: string, runc: string, keep = false): Promise<string[]> {
  const problems: string[] = [];
  const attempt = async (what: string, step: () => Promise<unknown> | unknown) => {
    try {
      await step();
    } catch (error) {
      problems.push(`${what}: ${error instanceof Error ? error.message : String(error)}`);
    }
  };
  await attempt("delete leftover runc containers", async () => {
    // `<scratch>/run/containerd`: the /run/containerd of a stack in its own mount namespace.
    // `/run/runc`: runc's default root, where a Podman of the stack keeps them (podman.ts).
    const roots = [`${scratch}/docker/exec`, "/run/containerd/runc", `${scratch}/run/containerd/runc`, "/run/runc"];
    for (const { root, id } of runcContainersUnder(roots, scratch)) {
      await runCommand({
        cmd: runc,
        args: ["--root", root, "delete", "--force", id],
        timeoutMs: STOP_COMMAND_TIMEOUT_MS,
      });
    }
  });
  await attempt("kill leftover processes", async () => {
    for (const pid of processesMentioning(scratch)) {
      try {
        Deno.kill(pid, "SIGKILL");
      } catch { /* gone */ }
    }
    for (let i = 0; i < 50 && processesMentioning(scratch).length > 0; i++) await sleep(100);
  });
  for (const point of mountsUnder(scratch)) {
    await attempt(`unmount ${point}`, async () => {
      const r = await runCommand({ cmd: "umount", args: ["-l", point], timeoutMs: STOP_COMMAND_TIMEOUT_MS });
      if (r.code !== 0) throw new Error(r.stderr.trim());
    });
  }
  // A CRI stack's CNI network is named after the scratch directory (cri.ts); libcni caches
  // each attachment's result outside it, under /var/lib/cni/results/<network>-<sandbox>-<if>,
  // and containerd's loopback network as cni-loopback-<sandbox>-lo. Entries of pods that
  // containerd did not tear down (it died) are removed here.
  await attempt("remove CNI result cache entries", () => {
    const prefixes = [`${scratch.slice(scratch.lastIndexOf("/") + 1)}-`];
    for (const part of ["root", "state"]) {
      for (const plugin of ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime"]) {
        try {
          for (const e of Deno.readDirSync(`${scratch}/containerd/${part}/${plugin}/sandboxes`)) {
            prefixes.push(`cni-loopback-${e.name}-`);
          }
        } catch { /* not a CRI stack, or no sandbox */ }
      }
    }
    let entries: Deno.DirEntry[];
    try {
      entries = [...Deno.readDirSync(CNI_RESULTS)];
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return;
      throw error;
    }
    for (const entry of entries) {
      if (prefixes.some((p) => entry.name.startsWith(p))) Deno.removeSync(`${CNI_RESULTS}/${entry.name}`);
    }
  });
  if (!keep) await attempt("remove the scratch directory", () => Deno.remove(scratch, { recursive: true }));
  return problems;
}

function describe(error: unknown): string {
  if (error instanceof Deno.errors.NotFound) {
    return error.message.replace(/^Failed to spawn '([^']+)'.*/, "$1 is not installed");
  }
  return error instanceof Error ? error.message : String(error);
}

/** Processes (other than this one) whose command line mentions `text`. */
export function processesMentioning(text: string): number[] {
  const pids: number[] = [];
  for (const entry of Deno.readDirSync("/proc")) {
    const pid = Number(entry.name);
    if (!Number.isInteger(pid) || pid === Deno.pid) continue;
    try {
      if (Deno.readTextFileSync(`/proc/${pid}/cmdline`).includes(text)) pids.push(pid);
    } catch { /* gone */ }
  }
  return pids;
}

/** runc containers whose state lives under one of `roots` and whose rootfs or bundle is below `dir`. */
function runcContainersUnder(roots: readonly string[], dir: string): { root: string; id: string }[] {
  const found: { root: string; id: string }[] = [];
  const visit = (root: string, depth: number) => {
    let entries: Deno.DirEntry[];
    try {
      entries = [...Deno.readDirSync(root)].filter((e) => e.isDirectory);
    } catch {
      return;
    }
    for (const entry of entries) {
      const path = `${root}/${entry.name}`;
      try {
        const state = Deno.readTextFileSync(`${path}/state.json`);
        if (state.includes(`"${dir}/`)) found.push({ root, id: entry.name });
      } catch {
        if (depth > 0) visit(path, depth - 1);
      }
    }
  };
  for (const root of roots) visit(root, 2);
  return found;
}

/**
 * A new scratch directory (under `parent`, else the system's temporary directory), listed
 * for the test runner, which sweeps after a run the directories listed there (and only
 * those): registered before anything exists in it, so a test process that dies leaves
 * nothing behind.
 */
export function newScratch(prefix: string, parent?: string): string {
  const scratch = Deno.makeTempDirSync({ prefix, ...(parent !== undefined ? { dir: parent } : {}) });
  const registry = Deno.env.get("ARCH_TEST_STACKS");
  if (registry !== undefined) Deno.writeTextFileSync(registry, `${scratch}\n`, { append: true });
  return scratch;
}

/** Ends a child this process started (`signal`, then SIGKILL after `graceMs`) and waits for it. */
export async function terminate(
  child: Deno.ChildProcess | undefined,
  signal: Deno.Signal = "SIGTERM",
  graceMs = 10_000,
): Promise<void> {
  if (child === undefined) return;
  try {
    child.kill(signal);
  } catch { /* already gone */ }
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
  }, graceMs);
  await child.status;
  clearTimeout(timer);
}

export class EmbeddedStack implements AsyncDisposable {
  readonly containerdSock: string;
  readonly dockerSock: string;
  /** ARCH's host configuration for this stack (passed to the wrapper via `ARCH_CONFIG`). */
  readonly archConfig: string;
  readonly archStateDir: string;
  readonly archLog: string;
  readonly archRunc: string;
  /** The default checkpoint root, under the only allowed root; ARCH creates it on first use. */
  readonly checkpointRoot: string;
  #containerd: Deno.ChildProcess | undefined;
  #dockerd: Deno.ChildProcess | undefined;
  #teardowns: { what: string; run: () => Promise<string[]> }[] = [];

  private constructor(readonly scratch: string, readonly options: StackOptions) {
    this.containerdSock = `${scratch}/containerd.sock`;
    this.dockerSock = `${scratch}/docker.sock`;
    this.archConfig = `${scratch}/arch/config.json`;
    this.archStateDir = `${scratch}/arch/run`;
    this.archLog = `${scratch}/arch/arch.log`;
    this.archRunc = options.archRunc;
    // As on a new node: the default root does not exist until ARCH creates it.
    this.checkpointRoot = `${scratch}/lib/arch/checkpoints`;
  }

  /** Starts containerd and dockerd in a new scratch directory and imports the test image. */
  static async start(options: StackOptions): Promise<EmbeddedStack> {
    const scratch = newScratch("arch-stack-", options.scratchParent);
    const stack = new EmbeddedStack(scratch, options);
    try {
      await stack.#start();
    } catch (error) {
      const problems = await stack.stop();
      const cleanup = problems.length > 0 ? ` (cleanup incomplete: ${problems.join("; ")})` : "";
      throw new Error(`cannot start the embedded ${options.engines.name} engines: ${describe(error)}${cleanup}`);
    }
    return stack;
  }

  /** The engine generation this stack runs. */
  get engines(): Engines {
    return this.options.engines;
  }

  /** Environment every engine process gets: ARCH finds its configuration through it. */
  get engineEnv(): Record<string, string> {
    return { ARCH_CONFIG: this.archConfig, PATH: this.options.engines.path };
  }

  async #start(): Promise<void> {
    const s = this.scratch;
    const cri = this.options.cri === true ? await import("./cri.ts") : undefined;
    const configVersion = cri?.containerdConfigVersion(this.engines.versions.containerd ?? "") ?? 2;
    Deno.mkdirSync(`${s}/arch`, { mode: 0o700 });
    Deno.writeTextFileSync(
      this.archConfig,
      JSON.stringify(
        {
          runc: this.options.engines.runc,
          stateDir: this.archStateDir,
          criuConfigDir: `${s}/arch/criu`,
          secretFile: `${s}/arch/secret`,
          logFile: this.archLog,
          metricsFile: `${s}/arch/metrics/arch.prom`,
          checkpointRoots: [`${s}/lib/arch`],
          defaultCheckpointRoot: this.checkpointRoot,
          ...this.options.archConfigExtra,
        },
        null,
        2,
      ) + "\n",
      { mode: 0o644 },
    );
    Deno.writeTextFileSync(
      `${s}/containerd.toml`,
      [
        `version = ${configVersion}`,
        `root = "${s}/containerd/root"`,
        `state = "${s}/containerd/state"`,
        `disabled_plugins = [${cri === undefined ? '"io.containerd.grpc.v1.cri", ' : ""}` +
        '"io.containerd.snapshotter.v1.btrfs", ' +
        '"io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper"]',
        "[grpc]",
        `  address = "${this.containerdSock}"`,
        "[ttrpc]",
        `  address = "${this.containerdSock}.ttrpc"`,
        '[plugins."io.containerd.internal.v1.opt"]',
        `  path = "${s}/containerd/opt"`,
        ...(cri?.criConfigSections(configVersion, { scratch: s }) ?? []),
        "",
      ].join("\n"),
    );
    if (cri !== undefined) {
      Deno.mkdirSync(`${s}/cni/net.d`, { recursive: true });
      Deno.writeTextFileSync(cri.cniConfigPath(s), cri.cniNetwork(s, cri.randomPodSubnet()));
    }
    await this.options.prepare?.(s, this.engines);
    this.#containerd = this.#daemon("containerd", this.engines.containerd, [
      "--config",
      `${s}/containerd.toml`,
      "--log-level",
      "warn",
    ]);
    await waitFor(
      "containerd",
      async () => (await this.ctr(["version"], { check: false })).code === 0,
      20_000,
      `${s}/containerd.log`,
    );

    Deno.mkdirSync(`${s}/docker`, { recursive: true });
    Deno.writeTextFileSync(
      `${s}/docker/daemon.json`,
      JSON.stringify({ runtimes: { arch: { path: this.archRunc } } }, null, 2),
    );
    this.#dockerd = this.#daemon("dockerd", this.engines.dockerd, [
      "--config-file",
      `${s}/docker/daemon.json`,
      "--data-root",
      `${s}/docker/data`,
      "--exec-root",
      `${s}/docker/exec`,
      "--pidfile",
      `${s}/docker/docker.pid`,
      "--host",
      `unix://${this.dockerSock}`,
      "--containerd",
      this.containerdSock,
      "--bridge",
      "none",
      "--iptables=false",
      "--ip6tables=false",
      "--ip-forward=false",
      "--ip-masq=false",
      "--userland-proxy=false",
      "--log-level",
      "warn",
    ]);
    await waitFor(
      "dockerd",
      async () => (await this.docker(["version"], { check: false })).code === 0,
      30_000,
      `${s}/dockerd.log`,
    );

    const image = await buildTestImage(this.options.imageCache, this.options.workloadSource);
    await this.ctr(["images", "import", image]);
    await this.docker(["load", "--quiet", "--input", image]);
    if (cri !== undefined) {
      const pause = await cri.buildPauseImage(this.options.imageCache);
      for (const archive of [pause, image]) {
        await this.ctr(["images", "import", archive], { namespace: cri.CRI_NAMESPACE });
      }
      using client = new cri.CriClient(this.containerdSock);
      await waitFor(
        "the CRI plugin's images",
        async () => {
          try {
            return (await client.imageId(cri.PAUSE_IMAGE)) !== undefined &&
              (await client.imageId(TEST_IMAGE)) !== undefined;
          } catch {
            return false;
          }
        },
        20_000,
        `${s}/containerd.log`,
      );
    }
  }

  #daemon(name: string, binary: string, args: string[]): Deno.ChildProcess {
    const log = Deno.openSync(`${this.scratch}/${name}.log`, { create: true, append: true });
    const options: Deno.CommandOptions = {
      args,
      env: this.engineEnv,
      clearEnv: true,
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    };
    // nsenter execs the daemon (no --fork): the child is the daemon itself.
    const enter = this.options.nsenter;
    const child =
      (enter === undefined
        ? new Deno.Command(binary, options)
        : new Deno.Command("nsenter", { ...options, args: [...enter, "--", binary, ...args] })).spawn();
    // Both daemons log to stderr: copy it into the log file.
    child.stderr.pipeTo(log.writable).catch(() => {});
    child.unref();
    return child;
  }

  /** Runs `ctr` against the private containerd (namespace `default` unless given). */
  ctr(args: readonly string[], opts: { namespace?: string; check?: boolean } & Partial<CommandSpec> = {}) {
    return this.#run({
      ...opts,
      cmd: this.engines.ctr,
      args: ["--address", this.containerdSock, "--namespace", opts.namespace ?? "default", ...args],
    }, opts.check);
  }

  /** Runs the `docker` CLI against the private dockerd. */
  docker(args: readonly string[], opts: { check?: boolean } & Partial<CommandSpec> = {}) {
    return this.#run(
      { ...opts, cmd: this.engines.docker, args: ["--host", `unix://${this.dockerSock}`, ...args] },
      opts.check,
    );
  }

  /** Runs any command with the engines' environment (e.g. `script` around a `ctr -t`). */
  run(spec: CommandSpec, check = true): Promise<CommandResult> {
    return this.#run(spec, check);
  }

  async #run(spec: CommandSpec, check = true): Promise<CommandResult> {
    const env = { ...this.engineEnv, ...(spec.env ?? {}) };
    const enter = this.options.nsenter;
    const { cwd, ...rest } = spec;
    const result = await runCommand(
      enter === undefined ? { ...spec, env } : {
        ...rest,
        env,
        cmd: "nsenter",
        args: [...enter, ...(cwd !== undefined ? [`--wdns=${cwd}`] : []), "--", spec.cmd, ...spec.args],
      },
    );
    if (check && result.code !== 0) throw new CommandError(spec, result);
    return result;
  }

  /**
   * Makes `stop()` run `run` first (last added first), e.g. a Podman attached to the stack
   * (`podman.ts`); what it returns is reported with the stack's problems. `run` must not throw.
   */
  addTeardown(what: string, run: () => Promise<string[]>): void {
    this.#teardowns.push({ what, run });
  }

  /**
   * Runs the teardowns added, removes every container of both engines, stops them, kills
   * what is left of the stack, unmounts and deletes the scratch directory. Never throws:
   * returns what it could not do.
   */
  async stop(): Promise<string[]> {
    const problems: string[] = [];
    for (const { what, run } of this.#teardowns.splice(0).reverse()) {
      try {
        problems.push(...(await run()).map((p) => `${what}: ${p}`));
      } catch (error) {
        problems.push(`${what}: ${error instanceof Error ? error.message : String(error)}`);
      }
    }
    // Removing containers through the engines may fail (a daemon died, a CLI is missing):
    // the runc-level sweep below catches what they left, so only its failures are reported.
    const attempt = async (what: string, step: () => Promise<unknown> | unknown, report = true) => {
      try {
        await step();
      } catch (error) {
        if (report) problems.push(`${what}: ${error instanceof Error ? error.message : String(error)}`);
      }
    };
    const quick = { check: false, timeoutMs: STOP_COMMAND_TIMEOUT_MS };
    const dockerd = this.#dockerd;
    if (dockerd !== undefined) {
      await attempt("remove docker containers", async () => {
        const ids = (await this.docker(["ps", "-aq"], quick)).stdout.split("\n").filter(Boolean);
        if (ids.length > 0) await this.docker(["rm", "-f", ...ids], quick);
      }, false);
      await attempt("stop dockerd", () => this.#terminate(dockerd));
      this.#dockerd = undefined;
    }
    const containerd = this.#containerd;
    if (containerd !== undefined) {
      if (this.options.cri === true) {
        // As a kubelet would: stop and remove the pods (containers, sandboxes) through CRI.
        await attempt("remove CRI pods", async () => {
          const { CriClient } = await import("./cri.ts");
          using client = new CriClient(this.containerdSock);
          return await client.removeAllPods();
        }, false);
      }
      await attempt("remove containerd tasks", () => this.#removeCtrContainers(), false);
      await attempt("stop containerd", () => this.#terminate(containerd));
      this.#containerd = undefined;
    }
    problems.push(...await sweepScratch(this.scratch, this.engines.runc, this.options.keep ?? false));
    return problems;
  }

  async #removeCtrContainers(): Promise<void> {
    const quick = { check: false, timeoutMs: STOP_COMMAND_TIMEOUT_MS };
    const lines = async (args: string[], namespace = "default") =>
      (await this.ctr(args, { namespace, ...quick })).stdout.split("\n").filter(Boolean);
    for (const namespace of await lines(["namespaces", "ls", "-q"])) {
      for (const task of await lines(["tasks", "ls", "-q"], namespace)) {
        await this.ctr(["tasks", "kill", "--signal", "SIGKILL", task], { namespace, ...quick });
        await this.ctr(["tasks", "delete", "--force", task], { namespace, ...quick });
      }
      for (const c of await lines(["containers", "ls", "-q"], namespace)) {
        await this.ctr(["containers", "delete", c], { namespace, ...quick });
      }
    }
  }

  #terminate(child: Deno.ChildProcess): Promise<void> {
    return terminate(child);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    const problems = await this.stop();
    if (problems.length > 0) console.error(`embedded stack: cleanup incomplete: ${problems.join("; ")}`);
  }
}
