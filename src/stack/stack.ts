/**
 * The embedded engine stack for the demo and the tests: a private containerd and a private
 * dockerd, each with its own root, state, sockets and pid file inside one scratch
 * directory, both offering an `arch` runtime that points at `dist/arch-runc`.
 *
 * Guarantees: the machine's own engine configuration (`/etc/containerd`, `/etc/docker`,
 * `/var/lib/docker`, default sockets) is never read or written; `stop()` removes every
 * container it started, stops both daemons, unmounts what they left under the scratch
 * directory and removes it. Requires root, containerd, containerd-shim-runc-v2, dockerd
 * and runc (see install.ts).
 */

import { CommandError, type CommandResult, type CommandSpec, runCommand } from "../process/exec.ts";
import { buildTestImage, TEST_IMAGE } from "./image.ts";

export { TEST_IMAGE };

export interface StackOptions {
  /** `dist/arch-runc`, the runtime binary engines are pointed at. */
  readonly archRunc: string;
  /** Source of the test workload. */
  readonly workloadSource: string;
  /** Where the built test image is cached between runs. */
  readonly imageCache: string;
  /** Keep the scratch directory after stop (debugging). */
  readonly keep?: boolean;
}

/** Absolute path of the real runc the stack's ARCH configuration names. */
export const REAL_RUNC = "/usr/sbin/runc";
const DOCKER_CLI = "/usr/bin/docker";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitFor(what: string, probe: () => Promise<boolean>, timeoutMs: number, logFile: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await probe()) return;
    await sleep(100);
  }
  let tail = "";
  try {
    tail = Deno.readTextFileSync(logFile).split("\n").slice(-15).join("\n");
  } catch { /* no log */ }
  throw new Error(`${what} did not become ready within ${timeoutMs} ms; last log lines:\n${tail}`);
}

/** Mount points at or below `dir`, deepest first. */
function mountsUnder(dir: string): string[] {
  const points = Deno.readTextFileSync("/proc/self/mountinfo").split("\n")
    .map((line) => line.split(" ")[4])
    .filter((p): p is string => p !== undefined && (p === dir || p.startsWith(`${dir}/`)))
    .map((p) => p.replace(/\\040/g, " "));
  return [...new Set(points)].sort((a, b) => b.length - a.length);
}

export class EmbeddedStack implements AsyncDisposable {
  readonly containerdSock: string;
  readonly dockerSock: string;
  /** ARCH's host configuration for this stack (passed to the wrapper via `ARCH_CONFIG`). */
  readonly archConfig: string;
  readonly archStateDir: string;
  readonly archLog: string;
  readonly archRunc: string;
  /** The only checkpoint root this stack's ARCH configuration allows. */
  readonly checkpointRoot: string;
  #containerd: Deno.ChildProcess | undefined;
  #dockerd: Deno.ChildProcess | undefined;

  private constructor(readonly scratch: string, readonly options: StackOptions) {
    this.containerdSock = `${scratch}/containerd.sock`;
    this.dockerSock = `${scratch}/docker.sock`;
    this.archConfig = `${scratch}/arch/config.json`;
    this.archStateDir = `${scratch}/arch/run`;
    this.archLog = `${scratch}/arch/arch.log`;
    this.archRunc = options.archRunc;
    this.checkpointRoot = `${scratch}/checkpoints`;
  }

  /** Starts containerd and dockerd in a new scratch directory and imports the test image. */
  static async start(options: StackOptions): Promise<EmbeddedStack> {
    const scratch = Deno.makeTempDirSync({ prefix: "arch-stack-" });
    const stack = new EmbeddedStack(scratch, options);
    try {
      await stack.#start();
    } catch (error) {
      await stack.stop();
      throw error;
    }
    return stack;
  }

  /** Environment every engine process gets: ARCH finds its configuration through it. */
  get engineEnv(): Record<string, string> {
    return { ARCH_CONFIG: this.archConfig, PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" };
  }

  async #start(): Promise<void> {
    const s = this.scratch;
    Deno.mkdirSync(`${s}/arch`, { mode: 0o700 });
    Deno.mkdirSync(this.checkpointRoot, { mode: 0o700 });
    Deno.writeTextFileSync(
      this.archConfig,
      JSON.stringify(
        {
          runc: REAL_RUNC,
          stateDir: this.archStateDir,
          logFile: this.archLog,
          checkpointRoots: [this.checkpointRoot],
          defaultCheckpointRoot: this.checkpointRoot,
        },
        null,
        2,
      ) + "\n",
      { mode: 0o644 },
    );
    Deno.writeTextFileSync(
      `${s}/containerd.toml`,
      [
        "version = 2",
        `root = "${s}/containerd/root"`,
        `state = "${s}/containerd/state"`,
        'disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs", ' +
        '"io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper"]',
        "[grpc]",
        `  address = "${this.containerdSock}"`,
        "[ttrpc]",
        `  address = "${this.containerdSock}.ttrpc"`,
        '[plugins."io.containerd.internal.v1.opt"]',
        `  path = "${s}/containerd/opt"`,
        "",
      ].join("\n"),
    );
    this.#containerd = this.#daemon("containerd", ["--config", `${s}/containerd.toml`, "--log-level", "warn"]);
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
    this.#dockerd = this.#daemon("dockerd", [
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
  }

  #daemon(name: string, args: string[]): Deno.ChildProcess {
    const log = Deno.openSync(`${this.scratch}/${name}.log`, { create: true, append: true });
    const child = new Deno.Command(name, {
      args,
      env: this.engineEnv,
      clearEnv: true,
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    // Both daemons log to stderr: copy it into the log file.
    child.stderr.pipeTo(log.writable).catch(() => {});
    child.unref();
    return child;
  }

  /** Runs `ctr` against the private containerd (namespace `default` unless given). */
  ctr(args: readonly string[], opts: { namespace?: string; check?: boolean } & Partial<CommandSpec> = {}) {
    return this.#run({
      ...opts,
      cmd: "ctr",
      args: ["--address", this.containerdSock, "--namespace", opts.namespace ?? "default", ...args],
    }, opts.check);
  }

  /** Runs the `docker` CLI against the private dockerd. */
  docker(args: readonly string[], opts: { check?: boolean } & Partial<CommandSpec> = {}) {
    return this.#run({ ...opts, cmd: DOCKER_CLI, args: ["--host", `unix://${this.dockerSock}`, ...args] }, opts.check);
  }

  /** Runs any command with the engines' environment (e.g. `script` around a `ctr -t`). */
  run(spec: CommandSpec, check = true): Promise<CommandResult> {
    return this.#run(spec, check);
  }

  async #run(spec: CommandSpec, check = true): Promise<CommandResult> {
    const result = await runCommand({ ...spec, env: { ...this.engineEnv, ...(spec.env ?? {}) } });
    if (check && result.code !== 0) throw new CommandError(spec, result);
    return result;
  }

  /** Removes every container of both engines, stops them, unmounts and deletes the scratch dir. */
  async stop(): Promise<void> {
    if (this.#dockerd !== undefined) {
      const ids = (await this.docker(["ps", "-aq"], { check: false })).stdout.split("\n").filter(Boolean);
      if (ids.length > 0) await this.docker(["rm", "-f", ...ids], { check: false });
      await this.#terminate(this.#dockerd);
      this.#dockerd = undefined;
    }
    if (this.#containerd !== undefined) {
      const namespaces = (await this.ctr(["namespaces", "ls", "-q"], { check: false })).stdout.split("\n").filter(
        Boolean,
      );
      for (const namespace of namespaces) {
        const tasks = (await this.ctr(["tasks", "ls", "-q"], { namespace, check: false })).stdout.split("\n")
          .filter(Boolean);
        for (const task of tasks) {
          await this.ctr(["tasks", "kill", "--signal", "SIGKILL", task], { namespace, check: false });
          await this.ctr(["tasks", "delete", "--force", task], { namespace, check: false });
        }
        const containers = (await this.ctr(["containers", "ls", "-q"], { namespace, check: false })).stdout
          .split("\n").filter(Boolean);
        for (const c of containers) await this.ctr(["containers", "delete", c], { namespace, check: false });
      }
      await this.#terminate(this.#containerd);
      this.#containerd = undefined;
    }
    for (const point of mountsUnder(this.scratch)) {
      await runCommand({ cmd: "umount", args: ["-l", point] });
    }
    if (!this.options.keep) await Deno.remove(this.scratch, { recursive: true }).catch(() => {});
  }

  async #terminate(child: Deno.ChildProcess): Promise<void> {
    try {
      child.kill("SIGTERM");
    } catch { /* already gone */ }
    const timer = setTimeout(() => {
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
    }, 10_000);
    await child.status;
    clearTimeout(timer);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}
