/**
 * Two nodes on one machine, for migration tests: each node has its own containerd and dockerd
 * (an {@link EmbeddedStack}: own roots, state, sockets, ARCH state and log), its own network,
 * mount and UTS namespaces (hostname `node-a` / `node-b`), and its own mount of one real
 * network file system at the same path on both ({@link TwoNodes.shared}).
 *
 * The network file system is SFTP: a server namespace holds a bridge and an SFTP server
 * (`socat` accepting TCP on {@link SERVER_ADDRESS}:{@link SFTP_PORT} and running OpenSSH's
 * `sftp-server` for each connection, no sshd); each node reaches it over a veth pair and
 * mounts it with `sshfs -o directport` inside its own mount namespace. The host itself does
 * not see either mount (mount namespaces with private propagation). CRIU cannot dump a FUSE
 * mount: containers get the shared file system only as bind mounts of their configuration
 * (`docker run -v <shared>/x:/data`, `ctr run --mount type=bind,...`).
 *
 * Layout (everything is a file below one scratch directory, so a killed test's leftovers are
 * swept by the test runner like a stack's: processes that name it, mounts below it):
 * ```
 * <scratch>/ns/{server,a,b}.net, {a,b}.mnt, {a,b}.uts   namespaces, kept by bind mounts
 * <scratch>/export/                                      the server's directory (host view)
 * <scratch>/shared/                                      mount point of the shared FS on each node
 * <scratch>/{a,b}-sshfs.log, server.log                  the FUSE client's and the server's stderr
 * <stack scratch>/node/{run,var/lib/docker,...}           bound over /run, /var/lib/docker... in the node
 * ```
 * The node's stacks have their own scratch directories (`arch-stack-*`, swept on their own);
 * the engines' default paths of the node (`/run`, `/var/lib/docker`...) live there, visible
 * from the host, so that a sweep finds and deletes their containers without entering the node.
 *
 * Guarantees: `stop()` is best-effort and complete (stacks, FUSE clients, server, mounts,
 * namespaces, scratch) and reports what it could not do instead of throwing. Limits: the
 * nodes share the machine's pid namespace (as ARCH requires), cgroups, kernel and clock:
 * container ids given to `ctr` must differ between the nodes (cgroup paths are global).
 * Requires root, util-linux, iproute2, sshfs, socat and openssh-sftp-server (see install.ts).
 */

import { CommandError, type CommandResult, type CommandSpec, runCommand } from "../../src/process/exec.ts";
import { EmbeddedStack, newScratch, processesMentioning, type StackOptions, sweepScratch, terminate } from "./stack.ts";
import { buildTestImage } from "./image.ts";
import { SEARCH_PATH } from "../../src/process/programs.ts";

/** The SFTP server's address (server namespace, on the bridge). */
export const SERVER_ADDRESS = "10.77.0.1";
/** The TCP port of the SFTP server. */
export const SFTP_PORT = 7022;
const SUBNET_BITS = 24;
const SFTP_SERVER = "/usr/lib/openssh/sftp-server";

/**
 * sshfs options for a file system that behaves deterministically across nodes: no directory
 * cache (sshfs keeps listings 20 s by default: another node's new files stayed invisible) and
 * no kernel attribute or name cache (a size cached for 1 s could truncate a read of a file the
 * other node just rewrote). No `reconnect`: a lost server stays lost (ENOTCONN), as a fault
 * test wants. `allow_other`: also non-root container processes may use the bind mounts.
 */
export const SSHFS_OPTIONS: readonly string[] = [
  "allow_other",
  "dir_cache=no",
  "attr_timeout=0",
  "entry_timeout=0",
  "negative_timeout=0",
];

export interface TwoNodesOptions extends Omit<StackOptions, "nsenter" | "prepare" | "archConfigExtra"> {
  /** Host configuration fields for both nodes, besides `sharedFsRoots: [shared]` (which they may replace). */
  readonly archConfigExtra?: Readonly<Record<string, unknown>>;
  /** sshfs `-o` options besides `directport` (default {@link SSHFS_OPTIONS}). */
  readonly sshfsOptions?: readonly string[];
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

async function must(spec: CommandSpec): Promise<CommandResult> {
  const result = await runCommand({ timeoutMs: 30_000, ...spec });
  if (result.code !== 0) throw new CommandError(spec, result);
  return result;
}

function tail(file: string): string {
  try {
    return Deno.readTextFileSync(file).trim().split("\n").slice(-2).join(" | ");
  } catch {
    return "";
  }
}

/** A child that runs in the background, its stderr copied into `log`. */
function background(args: string[], log: string): Deno.ChildProcess {
  const file = Deno.openSync(log, { create: true, append: true });
  const child = new Deno.Command("nsenter", {
    args,
    clearEnv: true,
    env: { PATH: SEARCH_PATH },
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  child.stderr.pipeTo(file.writable).catch(() => {});
  child.unref();
  return child;
}

/** One node: its namespaces, its engine stack and its mount of the shared file system. */
export class Node {
  /** `node-a`, `node-b`: the node's hostname (ARCH tells its own claims from other nodes' by it). */
  readonly hostname: string;
  /** The node's address on the network it shares with the server and the other node. */
  readonly address: string;
  /** Where the shared file system is mounted on this node (the same path on both nodes). */
  readonly shared: string;
  /** `nsenter` options that enter this node (mount, network and UTS namespaces). */
  readonly nsenter: readonly string[];
  readonly mountNs: string;
  readonly netNs: string;
  readonly utsNs: string;
  #stack: EmbeddedStack | undefined;
  #sshfs: Deno.ChildProcess | undefined;

  constructor(readonly name: "a" | "b", index: number, private readonly nodes: TwoNodes) {
    this.hostname = `node-${name}`;
    this.address = `10.77.0.${index + 2}`;
    this.shared = nodes.shared;
    this.mountNs = `${nodes.scratch}/ns/${name}.mnt`;
    this.netNs = `${nodes.scratch}/ns/${name}.net`;
    this.utsNs = `${nodes.scratch}/ns/${name}.uts`;
    this.nsenter = [`--mount=${this.mountNs}`, `--net=${this.netNs}`, `--uts=${this.utsNs}`];
  }

  /** The node's engines (containerd + dockerd, running inside the node). */
  get stack(): EmbeddedStack {
    if (this.#stack === undefined) throw new Error(`node ${this.name} has no running stack`);
    return this.#stack;
  }

  /** @internal The node's stack started (or `undefined`: stopped). */
  attach(stack: EmbeddedStack | undefined): void {
    this.#stack = stack;
  }

  /** The node's ARCH host configuration (`ARCH_CONFIG` of its engines and of {@link run}). */
  get archConfig(): string {
    return this.stack.archConfig;
  }

  /**
   * Runs a command inside the node, with the node's engine environment (`ARCH_CONFIG` of the
   * node, PATH): e.g. `node.run({ cmd: ARCH, args: ["finalize"] }, false)`.
   */
  run(spec: CommandSpec, check = true): Promise<CommandResult> {
    return this.stack.run(spec, check);
  }

  /** Reads a file as the node sees it (e.g. below {@link shared}). */
  async readText(path: string): Promise<string> {
    return (await this.#inside("--mount", ["cat", path])).stdout;
  }

  /** Writes a file as the node sees it (e.g. below {@link shared}). */
  async writeText(path: string, text: string): Promise<void> {
    await this.#inside("--mount", ["sh", "-c", 'cat > "$0"', path], true, text);
  }

  /** Runs `docker` against the node's dockerd, inside the node. */
  docker(args: readonly string[], opts: { check?: boolean } & Partial<CommandSpec> = {}): Promise<CommandResult> {
    return this.stack.docker(args, opts);
  }

  /** Runs `ctr` against the node's containerd, inside the node. */
  ctr(
    args: readonly string[],
    opts: { namespace?: string; check?: boolean } & Partial<CommandSpec> = {},
  ): Promise<CommandResult> {
    return this.stack.ctr(args, opts);
  }

  /** pid of the node's FUSE client (sshfs), `undefined` when it is not running. */
  get sshfsPid(): number | undefined {
    return this.#sshfs?.pid;
  }

  /**
   * The shared file system disappears on this node: its FUSE client is killed (SIGKILL), and
   * every access through the mount (also through the bind mounts of running containers)
   * fails with ENOTCONN ("Transport endpoint is not connected") until {@link remountSharedFs}.
   */
  async killSharedFs(): Promise<void> {
    await terminate(this.#sshfs, "SIGKILL");
    this.#sshfs = undefined;
  }

  /**
   * Mounts the shared file system again on this node (after {@link killSharedFs}): the dead
   * mount is detached and a new client mounts the server. Running containers keep their
   * bind mounts of the dead one; new containers get the new one.
   */
  async remountSharedFs(): Promise<void> {
    await terminate(this.#sshfs);
    this.#sshfs = undefined;
    await this.#inside("--mount", ["umount", "-l", this.shared], false);
    await this.mountSharedFs();
  }

  /**
   * Cuts (`false`) or restores (`true`) the node's network link: while it is cut, every access
   * to the shared file system blocks (as on a hard NFS mount), and goes on once it is back.
   */
  async setLink(up: boolean): Promise<void> {
    await this.#inside("--net", ["ip", "link", "set", "eth0", up ? "up" : "down"]);
  }

  /** Whether the shared file system answers on this node (a `stat` of its root within `timeoutMs`). */
  async sharedFsAnswers(timeoutMs = 5_000): Promise<boolean> {
    const r = await runCommand({
      cmd: "nsenter",
      args: [`--mount=${this.mountNs}`, "--", "stat", "-c", "%i", this.shared],
      timeoutMs,
    });
    return r.code === 0;
  }

  /** Runs a program in one of the node's namespaces (no stack needed). */
  async #inside(ns: "--mount" | "--net", argv: string[], check = true, stdin?: string): Promise<CommandResult> {
    const spec = {
      cmd: "nsenter",
      args: [`${ns}=${ns === "--mount" ? this.mountNs : this.netNs}`, "--", ...argv],
      timeoutMs: 30_000,
      ...(stdin !== undefined ? { stdin } : {}),
    };
    const result = await runCommand(spec);
    if (check && result.code !== 0) throw new CommandError(spec, result);
    return result;
  }

  /** @internal Creates the node's namespaces and its link to the server. */
  async create(): Promise<void> {
    const ns = `${this.nodes.scratch}/ns`;
    for (const file of [this.mountNs, this.netNs, this.utsNs]) Deno.writeTextFileSync(file, "");
    // A persistent mount namespace needs its file on a mount that does not propagate: <scratch>/ns.
    await must({
      cmd: "unshare",
      args: [
        `--mount=${this.mountNs}`,
        `--net=${this.netNs}`,
        `--uts=${this.utsNs}`,
        "--propagation",
        "private",
        "hostname",
        this.hostname,
      ],
    });
    // The node sees neither the namespace files (its copy of <scratch>/ns would keep the other
    // namespaces alive) nor the server's directory, only its own mount of it.
    await this.#inside("--mount", ["umount", "-l", ns]);
    await this.#inside("--mount", ["mount", "-t", "tmpfs", "-o", "ro,size=4k,mode=0", "hidden", this.nodes.export]);
    const peer = `v${this.name}`;
    await must({
      cmd: "nsenter",
      args: [`--net=${this.netNs}`, "--", "ip", "-batch", "-"],
      stdin: [
        "link set lo up",
        `link add eth0 type veth peer name ${peer} netns ${this.nodes.serverNs}`,
        `addr add ${this.address}/${SUBNET_BITS} dev eth0`,
        "link set eth0 up",
        "",
      ].join("\n"),
    });
    await must({
      cmd: "nsenter",
      args: [`--net=${this.nodes.serverNs}`, "--", "ip", "-batch", "-"],
      stdin: [`link set ${peer} master br0`, `link set ${peer} up`, ""].join("\n"),
    });
  }

  /** @internal Mounts the shared file system in the node (a FUSE client that stays our child). */
  async mountSharedFs(): Promise<void> {
    const options = ["directport=" + SFTP_PORT, ...(this.nodes.options.sshfsOptions ?? SSHFS_OPTIONS)];
    const log = `${this.nodes.scratch}/${this.name}-sshfs.log`;
    const child = background([
      `--mount=${this.mountNs}`,
      `--net=${this.netNs}`,
      "--",
      "sshfs",
      "-f",
      "-o",
      options.join(","),
      `${SERVER_ADDRESS}:${this.nodes.export}`,
      this.shared,
    ], log);
    this.#sshfs = child;
    let exited = false;
    child.status.then(() => exited = true);
    const deadline = Date.now() + 15_000;
    while (Date.now() < deadline && !exited) {
      // The client's own mount table is the node's.
      try {
        const mounted = Deno.readTextFileSync(`/proc/${child.pid}/mountinfo`).split("\n")
          .some((l) => l.split(" ")[4] === this.shared && l.includes(" - fuse.sshfs "));
        if (mounted) return;
      } catch { /* starting or gone */ }
      await sleep(20);
    }
    await terminate(child, "SIGKILL");
    this.#sshfs = undefined;
    throw new Error(`sshfs did not mount the shared file system on ${this.hostname} (${log}: ${tail(log)})`);
  }

  /**
   * @internal Prepares the stack's scratch directory before its daemons start. The stack itself
   * makes the node's `/run`, `/var/lib/docker`... private (`stack.ts`, `NODE_PATHS`).
   */
  prepareStack(scratch: string): Promise<void> {
    // Both nodes sign and verify with the same checkpoint secret.
    Deno.writeFileSync(`${scratch}/arch/secret`, Deno.readFileSync(this.nodes.secretFile), { mode: 0o600 });
    return Promise.resolve();
  }

  /** @internal Stops the FUSE client (detaching the mount first, so that it ends cleanly). */
  async stopSharedFs(): Promise<void> {
    if (this.#sshfs === undefined) return;
    await this.#inside("--mount", ["umount", "-l", this.shared], false).catch(() => {});
    await terminate(this.#sshfs);
    this.#sshfs = undefined;
  }
}

export class TwoNodes implements AsyncDisposable {
  /** The shared file system's mount point, the same path on both nodes (not mounted on the host). */
  readonly shared: string;
  /** The server's directory: the host's view of what the shared file system holds. */
  readonly export: string;
  /** The checkpoint secret both nodes' configurations name a copy of. */
  readonly secretFile: string;
  readonly serverNs: string;
  readonly a: Node;
  readonly b: Node;
  /** How long each phase of `start` and `stop` took, in milliseconds. */
  readonly timings: Record<string, number> = {};
  #server: Deno.ChildProcess | undefined;
  #stopped = false;

  private constructor(readonly scratch: string, readonly options: TwoNodesOptions) {
    this.shared = `${scratch}/shared`;
    this.export = `${scratch}/export`;
    this.secretFile = `${scratch}/secret`;
    this.serverNs = `${scratch}/ns/server.net`;
    this.a = new Node("a", 0, this);
    this.b = new Node("b", 1, this);
  }

  /** Both nodes. */
  get nodes(): readonly [Node, Node] {
    return [this.a, this.b];
  }

  /**
   * Creates the namespaces, starts the SFTP server, mounts the shared file system on both
   * nodes and starts both nodes' engines (in parallel). On failure, stops what it started.
   */
  static async start(options: TwoNodesOptions): Promise<TwoNodes> {
    const scratch = newScratch("arch-nodes-", options.scratchParent);
    const nodes = new TwoNodes(scratch, options);
    try {
      await nodes.#start();
    } catch (error) {
      const problems = await nodes.stop();
      const cleanup = problems.length > 0 ? ` (cleanup incomplete: ${problems.join("; ")})` : "";
      throw new Error(`cannot start two nodes: ${message(error)}${cleanup}`);
    }
    return nodes;
  }

  async #start(): Promise<void> {
    const began = Date.now();
    let t = began;
    const lap = (name: string) => {
      this.timings[name] = Date.now() - t;
      t = Date.now();
    };
    const s = this.scratch;
    // Both stacks import the image: build it once, before they race for the cache.
    await buildTestImage(this.options.imageCache, this.options.workloadSource);
    lap("image");

    Deno.mkdirSync(`${s}/ns`);
    await must({ cmd: "mount", args: ["--bind", `${s}/ns`, `${s}/ns`] });
    await must({ cmd: "mount", args: ["--make-private", `${s}/ns`] });
    // The shared root as ARCH requires it: root-owned, not writable by group or others.
    Deno.mkdirSync(this.export, { mode: 0o755 });
    Deno.chmodSync(this.export, 0o755);
    Deno.mkdirSync(this.shared, { mode: 0o755 });
    Deno.writeFileSync(this.secretFile, crypto.getRandomValues(new Uint8Array(32)), { mode: 0o600 });

    Deno.writeTextFileSync(this.serverNs, "");
    await must({
      cmd: "unshare",
      args: [`--net=${this.serverNs}`, "ip", "-batch", "-"],
      stdin: [
        "link set lo up",
        "link add br0 type bridge",
        `addr add ${SERVER_ADDRESS}/${SUBNET_BITS} dev br0`,
        "link set br0 up",
        "",
      ].join("\n"),
    });
    for (const node of this.nodes) await node.create();
    lap("namespaces");

    await this.#startServer();
    lap("sftpServer");
    await Promise.all(this.nodes.map((node) => node.mountSharedFs()));
    lap("sshfsMounts");

    const started = await Promise.allSettled(this.nodes.map((node) =>
      EmbeddedStack.start({
        archRunc: this.options.archRunc,
        engines: this.options.engines,
        workloadSource: this.options.workloadSource,
        imageCache: this.options.imageCache,
        ...(this.options.keep !== undefined ? { keep: this.options.keep } : {}),
        ...(this.options.scratchParent !== undefined ? { scratchParent: this.options.scratchParent } : {}),
        nsenter: node.nsenter,
        // The stack's sweep ends every process of the node but its FUSE client, stopped after it.
        sparePids: () => node.sshfsPid !== undefined ? [node.sshfsPid] : [],
        archConfigExtra: { sharedFsRoots: [this.shared], ...this.options.archConfigExtra },
        prepare: (scratch) => node.prepareStack(scratch),
      }).then((stack) => node.attach(stack))
    ));
    const failed = started.find((r) => r.status === "rejected");
    if (failed !== undefined) throw (failed as PromiseRejectedResult).reason;
    lap("stacks");
    this.timings.start = Date.now() - began;
  }

  /** The SFTP server: socat accepts connections in the server namespace, one sftp-server each. */
  async #startServer(): Promise<void> {
    const log = `${this.scratch}/server.log`;
    // sftp-server's -d names the scratch on its command line: a sweep finds it.
    this.#server = background([
      `--net=${this.serverNs}`,
      "--",
      "socat",
      `TCP-LISTEN:${SFTP_PORT},bind=${SERVER_ADDRESS},fork,reuseaddr`,
      `EXEC:${SFTP_SERVER} -e -d ${this.export}`,
    ], log);
    const pid = this.#server.pid;
    const port = SFTP_PORT.toString(16).toUpperCase().padStart(4, "0");
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      try {
        // The server's own view of its network namespace: a socket listening on the port.
        const table = Deno.readTextFileSync(`/proc/${pid}/net/tcp`);
        if (table.split("\n").some((l) => l.includes(`:${port} 00000000:0000 0A `))) return;
      } catch { /* starting or gone */ }
      await sleep(20);
    }
    throw new Error(`the SFTP server did not listen on ${SERVER_ADDRESS}:${SFTP_PORT} (${log}: ${tail(log)})`);
  }

  /**
   * The namespaces of the nodes and of the server (`net:[4026532...]`, as in `/proc/<pid>/ns/`),
   * for checks that none is left after {@link stop}. Empty once the namespace files are gone.
   */
  namespaceIds(): string[] {
    const ids: string[] = [];
    for (
      const [file, kind] of [
        [this.serverNs, "net"],
        ...this.nodes.flatMap((n) => [[n.mountNs, "mnt"], [n.netNs, "net"], [n.utsNs, "uts"]]),
      ] as [string, string][]
    ) {
      try {
        ids.push(`${kind}:[${Deno.statSync(file).ino}]`);
      } catch { /* gone */ }
    }
    return ids;
  }

  /**
   * Stops both stacks, the FUSE clients and the SFTP server, then removes what is left below
   * the scratch directory (processes that name it, namespace files, the directory itself):
   * the namespaces end with their last process. Never throws: returns what it could not do.
   * A second call does nothing.
   */
  async stop(): Promise<string[]> {
    if (this.#stopped) return [];
    this.#stopped = true;
    const began = Date.now();
    const problems: string[] = [];
    const stacks = await Promise.all(this.nodes.map(async (node) => {
      let stack: EmbeddedStack;
      try {
        stack = node.stack;
      } catch {
        return [];
      }
      node.attach(undefined);
      return (await stack.stop()).map((p) => `${node.hostname}: ${p}`);
    }));
    problems.push(...stacks.flat());
    for (const node of this.nodes) {
      try {
        await node.stopSharedFs();
      } catch (error) {
        problems.push(`${node.hostname}: stop sshfs: ${message(error)}`);
      }
    }
    try {
      await terminate(this.#server);
      this.#server = undefined;
    } catch (error) {
      problems.push(`stop the SFTP server: ${message(error)}`);
    }
    problems.push(...await sweepScratch(this.scratch, this.options.engines.runc, this.options.keep ?? false));
    const left = processesMentioning(this.scratch);
    if (left.length > 0) problems.push(`processes left: ${left.join(", ")}`);
    this.timings.stop = Date.now() - began;
    return problems;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    const problems = await this.stop();
    if (problems.length > 0) console.error(`two nodes: cleanup incomplete: ${problems.join("; ")}`);
  }
}
