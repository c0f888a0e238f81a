/**
 * A private Podman attached to an embedded stack (`stack.ts`): rootful `podman` with its own
 * storage (overlay), run, tmp and event directories, its own containers.conf, storage.conf,
 * registries.conf and signature policy, all inside `<stack scratch>/podman`, the test image
 * loaded as `arch-test`, network `none` by default, cgroupfs, and `dist/arch-runc` as its OCI
 * runtime with the stack's ARCH configuration, so `arch finalize` with that configuration
 * sees Podman's ARCH containers next to Docker's and containerd's.
 *
 * Guarantees: the machine's own `/etc/containers`, `/var/lib/containers`, `/run/libpod`,
 * `/run/containers/storage` and Podman socket are never written (nor `/etc/containers/*.conf`
 * and `policy.json` read: CONTAINERS_CONF, CONTAINERS_STORAGE_CONF, CONTAINERS_REGISTRIES_CONF
 * and HOME replace them). `stop()` is best-effort and complete, like the stack's: it removes
 * every Podman container, then what is left (runc containers, conmon and cleanup processes,
 * overlay and shm mounts, the storage) and reports what it could not do instead of throwing.
 * It runs when the stack stops, or earlier when the caller disposes of the Podman.
 *
 * Not private, by Podman's design (rootful):
 * - runc's state: Podman passes no `--root`, so runc keeps its state in its default
 *   `/run/runc/<id>`, as under a real Podman (and as containerd's in `/run/containerd/runc`);
 *   only this Podman's containers are there, and the sweep removes them. A private root
 *   (`--runtime-flag root=...`) is not used on purpose: Podman does not pass runtime flags to
 *   the exit command it gives conmon (`podman container cleanup`), whose `delete` would then go
 *   to `/run/runc` while the container lives elsewhere, which no real Podman does.
 * - `/run/containers/networks`, netavark's run directory, hard-coded for rootful Podman and
 *   created (empty, with network `none`) by every podman command;
 * - cgroups under `libpod_parent` (cgroupfs), as Docker's under `docker`.
 * The image is loaded in a mount namespace of its own with a tmpfs on `/var/lib`: a copy into
 * the storage writes the blob-info cache to `/var/lib/containers/cache` whatever `--root` says.
 *
 * How Podman 5.4 (conmon 2.1) calls the runtime, as logged by a wrapper (`<rt>` is the
 * runtime path; the `--log` pair only for a runtime listed in `runtime_supports_json`, which
 * this file's containers.conf does for `arch-runc` and `runc`):
 *
 *     create (conmon, with Podman's whole environment):
 *       <rt> --log-format=json --log <runroot>/overlay-containers/<id>/userdata/oci-log
 *            create --bundle <graphroot>/overlay-containers/<id>/userdata
 *                   --pid-file <runroot>/overlay-containers/<id>/userdata/pidfile <id>
 *     start (Podman, environment: PATH only):        <rt> start <id>
 *     exec (conmon):  <rt> --log-format=json --log <bundle>/<exec id>/oci-log exec
 *                     --pid-file <bundle>/<exec id>/exec_pid --process <bundle>/<exec id>/exec-process-N
 *                     --detach <id>
 *     stop (Podman, environment: XDG_RUNTIME_DIR only): <rt> kill <id> 15, after the stop
 *       timeout <rt> kill <id> 9; `rm -f`: <rt> kill <id> 9
 *     delete (Podman's rm, and the `podman container cleanup` conmon runs when the container
 *       exits; environment: XDG_RUNTIME_DIR only): <rt> delete --force <id>
 *
 * No `--root` on any call: ARCH's namespace (the last element of runc's root) is `runc` for
 * every Podman container, so checkpoints live in `<root>/runc/<key>/`. No `state` call (Podman
 * reads conmon's exit files), no `--systemd-cgroup` with cgroupfs, `--console-socket` on
 * create only with `-t`. Podman's own `podman container checkpoint` first probes
 * `<rt> checkpoint --help`, then sends `<rt> checkpoint --image-path <bundle>/checkpoint
 * --work-path <bundle> <id>` and `<rt> delete --force <id>`; the wrapper passes both
 * checkpoint calls to runc (it worked for a plain container). Because `start`, `kill` and
 * `delete` get an environment of Podman's own, the `ARCH_CONFIG` of a private stack cannot
 * reach them through Podman: the runtime Podman is given is a two-line launcher in the
 * Podman directory that sets it and execs `dist/arch-runc` with the same argv.
 *
 * Requires root, podman, conmon, runc, unshare and mount (see install.ts).
 */

import type { CommandResult, CommandSpec } from "../../src/process/exec.ts";
import { type EmbeddedStack, sweepScratch } from "./stack.ts";
import { buildTestImage } from "./image.ts";

export interface PodmanOptions {
  /** Podman's OCI hooks directory (`--hooks-dir`); default: an empty directory of its own. */
  readonly hooksDir?: string;
}

export interface PodmanCommandOptions extends Partial<CommandSpec> {
  /** Throw a `CommandError` on a non-zero exit (default true). */
  readonly check?: boolean;
  /** The OCI runtime of this command (default: ARCH, {@link PrivatePodman.runtime}). */
  readonly runtime?: string;
}

/** How long one podman command may take while Podman is torn down. */
const STOP_COMMAND_TIMEOUT_MS = 30_000;

const toml = (value: string) => JSON.stringify(value);

export class PrivatePodman implements AsyncDisposable {
  /** Everything of this Podman lives below it. */
  readonly dir: string;
  readonly graphRoot: string;
  readonly runRoot: string;
  /** libpod's own temporary directory (`--tmpdir`; default `/run/libpod`). */
  readonly tmpDir: string;
  readonly hooksDir: string;
  /** The runtime Podman is given: sets the stack's `ARCH_CONFIG` and execs `dist/arch-runc`. */
  readonly runtime: string;
  readonly #confDir: string;
  #stopped: Promise<string[]> | undefined;

  private constructor(readonly stack: EmbeddedStack, options: PodmanOptions) {
    this.dir = `${stack.scratch}/podman`;
    this.graphRoot = `${this.dir}/root`;
    this.runRoot = `${this.dir}/run`;
    this.tmpDir = `${this.dir}/tmp`;
    this.hooksDir = options.hooksDir ?? `${this.dir}/hooks.d`;
    this.runtime = `${this.dir}/bin/arch-runc`;
    this.#confDir = `${this.dir}/etc`;
  }

  /**
   * Sets up a Podman in `stack`'s scratch directory, loads the test image, and makes the
   * stack's `stop()` stop it too.
   */
  static async start(stack: EmbeddedStack, options: PodmanOptions = {}): Promise<PrivatePodman> {
    const podman = new PrivatePodman(stack, options);
    stack.addTeardown("podman", () => podman.stop());
    try {
      await podman.#start();
    } catch (error) {
      const problems = await podman.stop();
      const cleanup = problems.length > 0 ? ` (cleanup incomplete: ${problems.join("; ")})` : "";
      throw new Error(`cannot start the private podman: ${(error as Error).message}${cleanup}`);
    }
    return podman;
  }

  async #start(): Promise<void> {
    const d = this.dir;
    for (const sub of ["bin", "etc", "home/.config/containers", "var-tmp", "networks", "tmp"]) {
      Deno.mkdirSync(`${d}/${sub}`, { recursive: true, mode: 0o700 });
    }
    Deno.mkdirSync(this.hooksDir, { recursive: true });
    for (const path of [this.stack.archConfig, this.stack.archRunc]) {
      if (path.includes("'")) throw new Error(`cannot quote "${path}" for the runtime launcher`);
    }
    Deno.writeTextFileSync(
      this.runtime,
      [
        "#!/bin/sh",
        "# Podman runs start, kill and delete with an environment of its own (no ARCH_CONFIG).",
        `ARCH_CONFIG='${this.stack.archConfig}' exec '${this.stack.archRunc}' "$@"`,
        "",
      ].join("\n"),
      { mode: 0o755 },
    );
    Deno.writeTextFileSync(
      `${this.#confDir}/containers.conf`,
      [
        "[containers]",
        'netns = "none"',
        'log_driver = "k8s-file"',
        "[engine]",
        'cgroup_manager = "cgroupfs"',
        'events_logger = "file"',
        `events_logfile_path = ${toml(`${d}/events.log`)}`,
        `tmp_dir = ${toml(this.tmpDir)}`,
        // Also read by the exit command conmon runs (`podman container cleanup`), which gets
        // neither --hooks-dir nor --runtime-flag from the command line.
        `hooks_dir = [${toml(this.hooksDir)}]`,
        // Podman passes `--log <file> --log-format=json` only to runtimes it knows by name:
        // without it, an error of the wrapper would not reach podman's output.
        'runtime_supports_json = ["arch-runc", "runc"]',
        "[network]",
        `network_config_dir = ${toml(`${d}/networks`)}`,
        "",
      ].join("\n"),
    );
    Deno.writeTextFileSync(
      `${this.#confDir}/storage.conf`,
      ["[storage]", 'driver = "overlay"', `graphroot = ${toml(this.graphRoot)}`, `runroot = ${toml(this.runRoot)}`, ""]
        .join("\n"),
    );
    Deno.writeTextFileSync(`${this.#confDir}/registries.conf`, "unqualified-search-registries = []\n");
    // containers/image reads $HOME/.config/containers/policy.json before /etc/containers/policy.json.
    Deno.writeTextFileSync(
      `${d}/home/.config/containers/policy.json`,
      JSON.stringify({ default: [{ type: "insecureAcceptAnything" }] }) + "\n",
    );
    const image = await buildTestImage(this.stack.options.imageCache, this.stack.options.workloadSource);
    // A tmpfs on /var/lib, in a mount namespace of the load's own: the blob-info cache goes there.
    await this.stack.run({
      cmd: "unshare",
      args: [
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        'mount -t tmpfs arch-podman-load /var/lib && exec "$@"',
        "sh",
        "podman",
        ...this.globalArgs(),
        "load",
        "--quiet",
        "--input",
        image,
      ],
      env: this.env,
    });
  }

  /** The environment of every podman command: only this Podman's configuration files. */
  get env(): Record<string, string> {
    return {
      CONTAINERS_CONF: `${this.#confDir}/containers.conf`,
      CONTAINERS_STORAGE_CONF: `${this.#confDir}/storage.conf`,
      CONTAINERS_REGISTRIES_CONF: `${this.#confDir}/registries.conf`,
      REGISTRY_AUTH_FILE: `${this.dir}/auth.json`,
      HOME: `${this.dir}/home`,
      TMPDIR: `${this.dir}/var-tmp`,
      PODMAN_IGNORE_CGROUPSV1_WARNING: "1",
      ARCH_CONFIG: this.stack.archConfig,
    };
  }

  /** Podman's global options (before the command). */
  globalArgs(runtime = this.runtime): string[] {
    return [
      "--root",
      this.graphRoot,
      "--runroot",
      this.runRoot,
      "--tmpdir",
      this.tmpDir,
      "--storage-driver",
      "overlay",
      "--cgroup-manager",
      "cgroupfs",
      "--events-backend",
      "file",
      "--hooks-dir",
      this.hooksDir,
      "--runtime",
      runtime,
    ];
  }

  /** Runs `podman` with this Podman's options (and the stack's namespaces, if any). */
  podman(args: readonly string[], opts: PodmanCommandOptions = {}): Promise<CommandResult> {
    const { check, runtime, ...spec } = opts;
    return this.stack.run(
      { ...spec, cmd: "podman", args: [...this.globalArgs(runtime), ...args], env: { ...this.env, ...spec.env } },
      check ?? true,
    );
  }

  /**
   * Removes every container of this Podman, then sweeps its directory (runc containers,
   * conmon and cleanup processes, mounts) and removes it unless the stack keeps its scratch.
   * Never throws: returns what it could not do. Only the first call does the work.
   */
  stop(): Promise<string[]> {
    this.#stopped ??= this.#stop();
    return this.#stopped;
  }

  async #stop(): Promise<string[]> {
    try {
      Deno.statSync(this.dir);
    } catch {
      return [];
    }
    // What `rm` leaves (Podman's database broken, a conmon stuck) is the sweep's: only its
    // failures are reported.
    try {
      await this.podman(["rm", "--all", "--force", "--time", "0"], {
        check: false,
        timeoutMs: STOP_COMMAND_TIMEOUT_MS,
      });
    } catch { /* the sweep below */ }
    return await sweepScratch(this.dir, this.stack.engines.runc, this.stack.options.keep ?? false);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    const problems = await this.stop();
    if (problems.length > 0) console.error(`private podman: cleanup incomplete: ${problems.join("; ")}`);
  }
}
