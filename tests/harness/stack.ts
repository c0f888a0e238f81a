/**
 * The embedded engine stack for the demo and the tests: a containerd and a dockerd of one
 * engine generation (see `engines.ts`), both offering an `arch` runtime that points at
 * `dist/arch-runc`, laid out exactly as on a node: they run in a mount namespace of the
 * stack's own where {@link NODE_PATHS} (`/run`, `/var/lib/docker`, `/var/lib/containerd`,
 * `/etc/docker`, `/etc/containerd`) are private directories of the scratch directory, and
 * they are started with nothing but their default configuration files: no `--root`,
 * `--state`, `--exec-root`, `--data-root` or socket flag. `/var/run` stays the host's link to
 * `/run`, so Docker's default exec root `/var/run/docker` crosses it as on Debian, Ubuntu and
 * Amazon Linux nodes, and dockerd (started before containerd, as with Debian's docker.io
 * when no containerd service runs) manages its own containerd under `/var/run/docker/containerd`;
 * `ctr` talks to the stack's containerd at `/run/containerd/containerd.sock`.
 *
 * Every command of the stack (`ctr`, `docker`, `arch`, `run`) runs inside that namespace;
 * the test process sees the node's files below `<scratch>/node` ({@link EmbeddedStack.hostPath}).
 * The node is a slave of the host's mounts: the scratch directory is a shared mount, so what a
 * test mounts below it on the host (a small tmpfs as a full disk) appears in the node too, and
 * {@link shareMounts} does the same for a directory of the test's own; nothing the node mounts
 * reaches the host. Options: `cgroup2` (the node on the unified hierarchy), `installedArch`
 * (ARCH on its own default paths, from the release file).
 *
 * Guarantees: the machine's own engine configuration and state (`/etc/containerd`,
 * `/etc/docker`, `/var/lib/docker`, `/run`, default sockets) is never read or written; a
 * missing mount point among {@link NODE_PATHS} is created empty on the host (it stays). `stop()`
 * is best-effort and complete: whatever failed before or fails on the way, it removes every
 * container the stack started (through the engines, then with runc directly), stops both
 * daemons, kills every process left in the stack's mount namespace or referring to the
 * scratch directory (shims, exit watchers), unmounts what is mounted below it (the namespace
 * ends with it) and removes it; it reports what it could not do instead of throwing.
 * Requires root, util-linux (unshare, nsenter, mount) and the engine binaries (see install.ts).
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
   * Runs the daemons and every command of the stack (`ctr`, `docker`, `run`) inside namespaces
   * made by the caller: the options of `nsenter` that enter them (`--mount=<file>` required,
   * `--net=<file>`...), as a node of `nodes.ts` does; the stack lays out {@link NODE_PATHS} in
   * that mount namespace. Without it the stack makes a mount namespace of its own.
   */
  readonly nsenter?: readonly string[];
  /** Processes of a caller's mount namespace ({@link nsenter}) the stack's sweep must spare (a FUSE client). */
  readonly sparePids?: () => readonly number[];
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
  /**
   * ARCH as a node has it after the README's install, not as the stack points at `dist/`:
   * {@link INSTALLED_ARCH_PATHS} (`/usr/local`, `/etc/arch`, `/var/lib/arch`, `/var/log/arch`) are
   * private in the node too, the engines get no `ARCH_CONFIG` (ARCH reads its default
   * `/etc/arch/config.json`, or its defaults without one), and daemon.json has no `arch` runtime:
   * the test installs the release file and runs `arch install` in `prepare`. The stack's
   * `arch*` paths then do not apply (see {@link EmbeddedStack.hostPath}). Off by default.
   */
  readonly installedArch?: boolean;
  /**
   * Runs the node on cgroup v2 (unified), as production nodes are (Amazon Linux 2023, Bottlerocket,
   * Ubuntu ≥ 22.04): its `/sys/fs/cgroup` is the cgroup2 hierarchy, so runc, containerd and dockerd
   * run in unified mode. On a hybrid host the resource controllers stay bound to v1: containers
   * must not ask for limits. Only for a stack's own namespace. Off by default.
   */
  readonly cgroup2?: boolean;
}

/**
 * The engines' default paths that a stack makes private in its mount namespace: each is a bind
 * mount of `<scratch>/node<path>`. `/var/run` is not among them: it is the host's link to `/run`.
 */
export const NODE_PATHS = ["/run", "/var/lib/docker", "/var/lib/containerd", "/etc/docker", "/etc/containerd"] as const;

/** The paths an installed ARCH uses that an `installedArch` stack also makes private in its node. */
export const INSTALLED_ARCH_PATHS = ["/usr/local", "/etc/arch", "/var/lib/arch", "/var/log/arch"] as const;

/**
 * Where the host sees a path of the node of the stack in `scratch` (one of {@link NODE_PATHS}
 * or below it; `/var/run/...` as `/run/...`); other paths are the same in the node.
 */
export function nodePath(scratch: string, path: string): string {
  const p = path.replace(/^\/var\/run(?=\/|$)/, "/run");
  const private_ = [...NODE_PATHS, ...INSTALLED_ARCH_PATHS];
  // An installed-ARCH path is private only in a node that has it (`<scratch>/node<path>` exists).
  const mapped = private_.some((n) =>
    (p === n || p.startsWith(`${n}/`)) &&
    ((NODE_PATHS as readonly string[]).includes(n) || existsSync(`${scratch}/node${n}`))
  );
  return mapped ? `${scratch}/node${p}` : path;
}

function existsSync(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * Makes `dir` a shared mount point (a bind of itself): what the test then mounts below it on the
 * host (a tmpfs standing for a shared file system) also appears in the nodes of stacks started
 * afterwards. Call before starting the stack; returns the undo (unmounts everything below).
 */
export function shareMounts(dir: string): () => void {
  const run = (...args: string[]) => {
    const r = new Deno.Command("mount", { args, stdout: "null", stderr: "piped" }).outputSync();
    if (!r.success) throw new Error(`mount ${args.join(" ")}: ${new TextDecoder().decode(r.stderr).trim()}`);
  };
  run("--bind", dir, dir);
  run("--make-shared", dir);
  return () => {
    new Deno.Command("umount", { args: ["-R", "-l", dir], stdout: "null", stderr: "null" }).outputSync();
  };
}

/** The first mount of file system type `fstype` in a mountinfo text: its mount point and its super options. */
function parseMountinfoOptions(mountinfo: string, fstype: string): { mountPoint: string; options: string } | undefined {
  for (const line of mountinfo.split("\n")) {
    const f = line.split(" ");
    const dash = f.indexOf("-");
    if (dash > 5 && f[dash + 1] === fstype) return { mountPoint: f[4]!, options: f[dash + 3] ?? "rw" };
  }
  return undefined;
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
 * runc containers whose state lives in the stack's private `/run` (`<scratch>/node/run`) or
 * points into the scratch directory (`runc delete --force`), then every process of the
 * stack's mount namespace (`<scratch>/ns/mnt`; but `spare`) or that refers to the scratch
 * directory (shims outlive containerd; exit watchers), mounts below it (the namespace ends with
 * its last process and mount), and the directory itself unless `keep`. Also what the test
 * runner calls after a run that died before its stacks were stopped. Never throws: returns
 * what it could not do.
 */
export async function sweepScratch(
  scratch: string,
  runc: string,
  keep = false,
  spare: readonly number[] = [],
): Promise<string[]> {
  const problems: string[] = [];
  const attempt = async (what: string, step: () => Promise<unknown> | unknown) => {
    try {
      await step();
    } catch (error) {
      problems.push(`${what}: ${error instanceof Error ? error.message : String(error)}`);
    }
  };
  await attempt("delete leftover runc containers", async () => {
    // The stack's own runc roots (containerd's, Docker's, and runc's default, where a Podman
    // of the stack keeps them: podman.ts), seen from the host: everything there is the stack's.
    const own = ["containerd/runc", "docker/runtime-runc", "runc"].map((r) => `${scratch}/node/run/${r}`);
    // containerd's and runc's roots on the host: only containers whose state names the scratch.
    const shared = ["/run/containerd/runc", "/run/runc"];
    const found = [...runcContainersUnder(own), ...runcContainersUnder(shared, scratch)];
    for (const { root, id } of found) {
      await runCommand({
        cmd: runc,
        args: ["--root", root, "delete", "--force", id],
        timeoutMs: STOP_COMMAND_TIMEOUT_MS,
      });
    }
  });
  await attempt("kill leftover processes", async () => {
    const ns = namespaceId(`${scratch}/ns/mnt`);
    const left = () =>
      [...new Set([...processesMentioning(scratch), ...(ns ? processesInNamespace(ns) : [])])]
        .filter((pid) => !spare.includes(pid));
    for (const pid of left()) {
      try {
        Deno.kill(pid, "SIGKILL");
      } catch { /* gone */ }
    }
    for (let i = 0; i < 50 && left().length > 0; i++) await sleep(100);
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
    for (const part of ["node/var/lib/containerd", "node/run/containerd"]) {
      for (const plugin of ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime"]) {
        try {
          for (const e of Deno.readDirSync(`${scratch}/${part}/${plugin}/sandboxes`)) {
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

/** `mnt:[<inode>]` of the mount namespace a file (`unshare --mount=<file>`) keeps, if it does. */
export function namespaceId(file: string): string | undefined {
  try {
    const info = Deno.statSync(file);
    return info.size === 0 && info.ino !== null && info.ino !== 0 && mountsUnder(file).length > 0
      ? `mnt:[${info.ino}]`
      : undefined;
  } catch {
    return undefined;
  }
}

/** Processes (other than this one) in the mount namespace `id` (`mnt:[<inode>]`). */
export function processesInNamespace(id: string): number[] {
  return processesWhere((pid) => Deno.readLinkSync(`/proc/${pid}/ns/mnt`) === id);
}

/** Processes (other than this one) for which `test` holds; one that is gone (or whose files cannot be read) does not. */
function processesWhere(test: (pid: number) => boolean): number[] {
  const pids: number[] = [];
  for (const entry of Deno.readDirSync("/proc")) {
    const pid = Number(entry.name);
    if (!Number.isInteger(pid) || pid === Deno.pid) continue;
    try {
      if (test(pid)) pids.push(pid);
    } catch { /* gone, or a kernel thread */ }
  }
  return pids;
}

function describe(error: unknown): string {
  if (error instanceof Deno.errors.NotFound) {
    return error.message.replace(/^Failed to spawn '([^']+)'.*/, "$1 is not installed");
  }
  return error instanceof Error ? error.message : String(error);
}

/** Processes (other than this one) whose command line mentions `text`. */
export function processesMentioning(text: string): number[] {
  return processesWhere((pid) => Deno.readTextFileSync(`/proc/${pid}/cmdline`).includes(text));
}

/** runc containers whose state lives under one of `roots` (and, if `dir` is given, whose rootfs or bundle is below it). */
function runcContainersUnder(roots: readonly string[], dir?: string): { root: string; id: string }[] {
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
        if (dir === undefined || state.includes(`"${dir}/`)) found.push({ root, id: entry.name });
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
  /** containerd's socket (`/run/containerd/containerd.sock` in the node), seen from the host. */
  readonly containerdSock: string;
  /** dockerd's socket (`/var/run/docker.sock` in the node), seen from the host. */
  readonly dockerSock: string;
  /** The mount namespace of the node (a file keeping it: `<scratch>/ns/mnt`). */
  readonly mountNs: string;
  /** ARCH's host configuration for this stack (passed to the wrapper via `ARCH_CONFIG`). */
  readonly archConfig: string;
  readonly archStateDir: string;
  readonly archLog: string;
  readonly archRunc: string;
  /** The default checkpoint root, under the only allowed root; ARCH creates it on first use. */
  readonly checkpointRoot: string;
  /** A second allowed checkpoint root (host config `checkpointRoots`), not created: a test mounts what it needs there. */
  readonly extraCheckpointRoot: string;
  #containerd: Deno.ChildProcess | undefined;
  #dockerd: Deno.ChildProcess | undefined;
  #teardowns: { what: string; run: () => Promise<string[]> }[] = [];
  /** `nsenter` options that enter the node: the caller's namespaces, else the stack's own. */
  readonly #enter: readonly string[];

  private constructor(readonly scratch: string, readonly options: StackOptions) {
    this.mountNs = `${scratch}/ns/mnt`;
    this.containerdSock = this.hostPath("/run/containerd/containerd.sock");
    this.dockerSock = this.hostPath("/var/run/docker.sock");
    this.#enter = [...(options.nsenter ?? []).filter((o) => !o.startsWith("--mount=")), `--mount=${this.mountNs}`];
    this.archConfig = `${scratch}/arch/config.json`;
    this.archStateDir = `${scratch}/arch/run`;
    this.archLog = `${scratch}/arch/arch.log`;
    this.archRunc = options.archRunc;
    // As on a new node: the default root does not exist until ARCH creates it.
    this.checkpointRoot = `${scratch}/lib/arch/checkpoints`;
    this.extraCheckpointRoot = `${scratch}/lib/arch-extra`;
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

  /**
   * Where the test process finds a path of the node (one of {@link NODE_PATHS} or below it,
   * `/var/run/...` as `/run/...`): `/run/containerd/x` → `<scratch>/node/run/containerd/x`.
   * Other paths are the same in the node and on the host.
   */
  hostPath(path: string): string {
    return nodePath(this.scratch, path);
  }

  /** dockerd's configuration file (`/etc/docker/daemon.json` in the node), seen from the host. */
  get dockerConfig(): string {
    return this.hostPath("/etc/docker/daemon.json");
  }

  /** containerd's configuration file (`/etc/containerd/config.toml` in the node), seen from the host. */
  get containerdConfig(): string {
    return this.hostPath("/etc/containerd/config.toml");
  }

  /** dockerd's pid (its default pid file, `/var/run/docker.pid`). */
  get dockerdPid(): number {
    return Number(Deno.readTextFileSync(this.hostPath("/var/run/docker.pid")).trim());
  }

  /** `nsenter` options that enter the node's namespaces (mount, and the caller's others). */
  get nsenter(): readonly string[] {
    return this.#enter;
  }

  /** Environment every engine process gets: ARCH finds its configuration through it (unless `installedArch`). */
  get engineEnv(): Record<string, string> {
    return this.options.installedArch === true
      ? { PATH: this.options.engines.path }
      : { ARCH_CONFIG: this.archConfig, PATH: this.options.engines.path };
  }

  async #start(): Promise<void> {
    const s = this.scratch;
    const cri = this.options.cri === true ? await import("./cri.ts") : undefined;
    const configVersion = cri?.containerdConfigVersion(this.engines.versions.containerd ?? "") ?? 2;
    Deno.mkdirSync(`${s}/arch`, { mode: 0o700 });
    Deno.mkdirSync(this.extraCheckpointRoot, { recursive: true, mode: 0o700 });
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
          checkpointRoots: [this.extraCheckpointRoot],
          defaultCheckpointRoot: this.checkpointRoot,
          ...this.options.archConfigExtra,
        },
        null,
        2,
      ) + "\n",
      { mode: 0o644 },
    );
    await this.#layOutNode();
    Deno.writeTextFileSync(
      this.containerdConfig,
      [
        `version = ${configVersion}`,
        `disabled_plugins = [${cri === undefined ? '"io.containerd.grpc.v1.cri", ' : ""}` +
        '"io.containerd.snapshotter.v1.btrfs", ' +
        '"io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper"]',
        ...(cri?.criConfigSections(configVersion, { scratch: s }) ?? []),
        "",
      ].join("\n"),
    );
    if (cri !== undefined) {
      Deno.mkdirSync(`${s}/cni/net.d`, { recursive: true });
      Deno.writeTextFileSync(cri.cniConfigPath(s), cri.cniNetwork(s, cri.randomPodSubnet()));
    }
    // Network settings only: every path is Docker's default.
    Deno.writeTextFileSync(
      this.dockerConfig,
      JSON.stringify(
        {
          ...(this.options.installedArch === true ? {} : { runtimes: { arch: { path: this.archRunc } } }),
          bridge: "none",
          iptables: false,
          ip6tables: false,
          "ip-forward": false,
          "ip-masq": false,
          "userland-proxy": false,
          "log-level": "warn",
        },
        null,
        2,
      ) + "\n",
    );
    await this.options.prepare?.(s, this.engines);
    // dockerd first: finding no containerd at /run/containerd/containerd.sock, it starts its
    // own under /var/run/docker/containerd (bundles /var/run/docker/containerd/daemon/...).
    this.#dockerd = this.#daemon("dockerd", this.engines.dockerd, []);
    await waitFor(
      "dockerd",
      async () => (await this.docker(["version"], { check: false })).code === 0,
      30_000,
      `${s}/dockerd.log`,
    );
    this.#containerd = this.#daemon("containerd", this.engines.containerd, ["--log-level", "warn"]);
    await waitFor(
      "containerd",
      async () => (await this.ctr(["version"], { check: false })).code === 0,
      20_000,
      `${s}/containerd.log`,
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

  /**
   * The node's mount namespace: the caller's (bound at `<scratch>/ns/mnt`, so that a sweep finds
   * it) or a new one, where each of {@link NODE_PATHS} becomes a private directory below
   * `<scratch>/node`.
   */
  async #layOutNode(): Promise<void> {
    const s = this.scratch;
    const must = async (spec: CommandSpec) => {
      const r = await runCommand({ timeoutMs: 30_000, ...spec });
      if (r.code !== 0) throw new CommandError(spec, r);
    };
    const varRun = Deno.lstatSync("/var/run");
    if (!varRun.isSymlink || Deno.realPathSync("/var/run") !== "/run") {
      throw new Error("/var/run is not a link to /run on this machine: the stack lays out a Debian node");
    }
    // What the test mounts below the scratch directory on the host reaches the node (a slave).
    await must({ cmd: "mount", args: ["--bind", s, s] });
    await must({ cmd: "mount", args: ["--make-shared", s] });
    Deno.mkdirSync(`${s}/ns`);
    // A persistent mount namespace needs its file on a mount that does not propagate.
    await must({ cmd: "mount", args: ["--bind", `${s}/ns`, `${s}/ns`] });
    await must({ cmd: "mount", args: ["--make-private", `${s}/ns`] });
    Deno.writeTextFileSync(this.mountNs, "");
    const given = this.options.nsenter?.find((o) => o.startsWith("--mount="))?.slice("--mount=".length);
    if (given !== undefined) await must({ cmd: "mount", args: ["--bind", given, this.mountNs] });
    // slave: a mount the host makes in a shared directory ({@link shareMounts}) reaches the
    // node; nothing the node mounts reaches the host.
    else await must({ cmd: "unshare", args: [`--mount=${this.mountNs}`, "--propagation", "slave", "true"] });
    if (this.options.cgroup2 === true) {
      if (given !== undefined) throw new Error("cgroup2 needs the stack's own mount namespace");
      // Mounting cgroup2 applies its options to the one global v2 hierarchy: mount it with the
      // options the host already gives it, or not at all where /sys/fs/cgroup already is v2.
      const v2 = parseMountinfoOptions(Deno.readTextFileSync("/proc/self/mountinfo"), "cgroup2");
      if (v2 === undefined) throw new Error("this machine has no cgroup2 hierarchy mounted to reuse");
      if (v2.mountPoint !== "/sys/fs/cgroup") {
        await must({
          cmd: "nsenter",
          args: [
            `--mount=${this.mountNs}`,
            "--",
            "sh",
            "-c",
            'umount -l /sys/fs/cgroup && mount -t cgroup2 -o "$0" cgroup2 /sys/fs/cgroup',
            v2.options,
          ],
        });
      }
    }
    for (const path of [...NODE_PATHS, ...(this.options.installedArch === true ? INSTALLED_ARCH_PATHS : [])]) {
      Deno.mkdirSync(`${s}/node${path}`, { recursive: true, mode: 0o755 });
      Deno.mkdirSync(path, { recursive: true, mode: 0o755 }); // the mount point (a fresh machine may lack it)
      await must({
        cmd: "nsenter",
        args: [`--mount=${this.mountNs}`, "--", "mount", "--bind", `${s}/node${path}`, path],
      });
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
    const child = new Deno.Command("nsenter", { ...options, args: [...this.#enter, "--", binary, ...args] }).spawn();
    // Both daemons log to stderr: copy it into the log file.
    child.stderr.pipeTo(log.writable).catch(() => {});
    child.unref();
    return child;
  }

  /**
   * Runs `ctr` in the node, against its containerd (namespace `default` unless given). On a
   * `cgroup2` stack, `ctr run` gets `--cpu-shares 0`: ctr asks for 1024 shares by default, which
   * runc writes as `cpu.weight`, and this machine's v2 hierarchy has no cpu controller (it stays
   * bound to v1; a real v2 node has it).
   */
  ctr(args: readonly string[], opts: { namespace?: string; check?: boolean } & Partial<CommandSpec> = {}) {
    const noShares = this.options.cgroup2 === true && args[0] === "run" && !args.includes("--cpu-shares");
    return this.#run({
      ...opts,
      cmd: this.engines.ctr,
      args: [
        "--namespace",
        opts.namespace ?? "default",
        ...(noShares ? ["run", "--cpu-shares", "0", ...args.slice(1)] : args),
      ],
    }, opts.check);
  }

  /** Runs the `docker` CLI in the node, against its dockerd (the default socket). */
  docker(args: readonly string[], opts: { check?: boolean } & Partial<CommandSpec> = {}) {
    return this.#run({ ...opts, cmd: this.engines.docker, args: [...args] }, opts.check);
  }

  /** Runs any command in the node with the engines' environment (e.g. `arch ls`, `script` around a `ctr -t`). */
  run(spec: CommandSpec, check = true): Promise<CommandResult> {
    return this.#run(spec, check);
  }

  async #run(spec: CommandSpec, check = true): Promise<CommandResult> {
    const env = { ...this.engineEnv, ...(spec.env ?? {}) };
    const { cwd, ...rest } = spec;
    const result = await runCommand({
      ...rest,
      env,
      cmd: "nsenter",
      args: [...this.#enter, ...(cwd !== undefined ? [`--wdns=${cwd}`] : []), "--", spec.cmd, ...spec.args],
    });
    // nsenter exits 127 for a program it cannot find in the node: say so, as a direct spawn does.
    if (result.code === 127 && /^nsenter: failed to execute .*: No such file or directory/m.test(result.stderr)) {
      throw new Error(`${spec.cmd} is not installed`);
    }
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
    problems.push(
      ...await sweepScratch(this.scratch, this.engines.runc, this.options.keep ?? false, this.options.sparePids?.()),
    );
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
