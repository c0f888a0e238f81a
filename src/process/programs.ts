/**
 * Every external program that ARCH, the engines and CRIU on its behalf, the installer, the
 * demo and the tests run, and how each is found. The install plan must provide each one
 * (a package it installs, or an Essential package): `tests/unit/programs_test.ts` resolves
 * every entry the way the code does, asks `dpkg -S` which package provides it, and scans the
 * sources so that a program spawned without an entry here fails the suite.
 */

/** The PATH ARCH's own children and the embedded engines get (no /usr/local: nothing unpackaged). */
export const SEARCH_PATH = "/usr/sbin:/usr/bin:/sbin:/bin";

/** One external program: how it is spawned and who runs it. */
export interface Program {
  /** Name as spawned (looked up on {@link SEARCH_PATH}), or an absolute path. */
  readonly name: string;
  /** Who runs it. */
  readonly by: "arch" | "criu" | "engine" | "install" | "tests";
  /**
   * Set for a program of the node's own init system that ARCH runs only where it is there
   * (and says what to run by hand elsewhere): no package of the plan provides it, on purpose.
   */
  readonly onlyWhere?: string;
}

/** Every external program (see the module doc); one spawned without an entry here fails the unit tests. */
export const PROGRAMS: readonly Program[] = [
  // ARCH itself
  { name: "/usr/sbin/runc", by: "arch" },
  { name: "criu", by: "arch" },
  { name: "tar", by: "arch" },
  { name: "sh", by: "arch" },
  // the writable layer's capture, capped while written (rootfs/layer_archive.ts): bash for pipefail
  { name: "bash", by: "arch" },
  { name: "head", by: "arch" },
  // the paths of a container's inotify watches, searched before a dump (checkpoint/inotify_paths.ts)
  { name: "find", by: "arch" },
  { name: "setsid", by: "arch" },
  // the pause watchdog's shell (checkpoint/pause_guard.ts)
  { name: "sleep", by: "arch" },
  // ARCH's CRIU action script (criu/config.ts), run by CRIU after a restore
  { name: "nsenter", by: "arch" },
  // the same script's restore gate (restore/restore_gate.ts): util-linux, like nsenter
  { name: "flock", by: "arch" },
  // CRIU, when it dumps and restores a network namespace and locks the network; ARCH's action script
  { name: "ip", by: "criu" },
  { name: "iptables-restore", by: "criu" },
  { name: "iptables-save", by: "criu" },
  { name: "ip6tables-restore", by: "criu" },
  { name: "ip6tables-save", by: "criu" },
  // the engines, found on the PATH they are started with
  { name: "containerd", by: "engine" },
  { name: "containerd-shim-runc-v2", by: "engine" },
  { name: "dockerd", by: "engine" },
  { name: "runc", by: "engine" },
  // arch install watch / --restart, only where systemd runs the machine (src/cli/install.ts)
  {
    name: "systemctl",
    by: "arch",
    onlyWhere: "systemd is PID 1 (it ships systemctl); elsewhere ARCH prints the commands",
  },
  // install.ts
  { name: "apt-get", by: "install" },
  { name: "dpkg-query", by: "install" },
  { name: "dpkg-deb", by: "install" },
  { name: "/usr/sbin/criu", by: "install" },
  // embedded stack, demo, tests, bench
  { name: "/usr/bin/docker", by: "tests" },
  { name: "ctr", by: "tests" },
  { name: "gcc", by: "tests" },
  { name: "/usr/bin/busybox", by: "tests" },
  { name: "mount", by: "tests" },
  { name: "umount", by: "tests" },
  { name: "script", by: "tests" },
  { name: "mkfifo", by: "tests" },
  { name: "mknod", by: "tests" },
  // the private Podman of tests/harness/podman.ts (it starts conmon itself); its image load also
  // runs `unshare`, `sh` and `mount`
  { name: "podman", by: "tests" },
  // two nodes on one machine (tests/harness/nodes.ts): namespaces, and sshfs over an SFTP server;
  // also `ip`, `nsenter`, `mount`, `umount` and `sh`, listed above
  { name: "unshare", by: "tests" },
  { name: "hostname", by: "tests" },
  { name: "sshfs", by: "tests" },
  { name: "socat", by: "tests" },
  { name: "/usr/lib/openssh/sftp-server", by: "tests" },
  { name: "cat", by: "tests" },
  // commands run in a test node with nothing but cron's environment (hardening_test.ts)
  { name: "env", by: "tests" },
  { name: "stat", by: "tests" },
  // the release artifact (scripts/release.ts) and its test; the bench's raw-runc floor
  { name: "sha256sum", by: "tests" },
  // the ECS/AWS Batch userdata (src/install/ecs.ts) downloads the artifact; its test runs it
  { name: "curl", by: "tests" },
  { name: "sync", by: "tests" },
  // the shared-FS bench (tests/harness/sftp_mount.ts): bytes on the SFTP connections
  { name: "ss", by: "tests" },
];

/** Resolves `name` as `execvp` would with {@link SEARCH_PATH}; `undefined` if not found. */
export function resolveProgram(name: string, path = SEARCH_PATH): string | undefined {
  const candidates = name.startsWith("/") ? [name] : path.split(":").map((dir) => `${dir}/${name}`);
  for (const candidate of candidates) {
    try {
      const info = Deno.statSync(candidate);
      if (info.isFile && info.mode !== null && (info.mode & 0o111) !== 0) return candidate;
    } catch { /* next */ }
  }
  return undefined;
}

/**
 * `path` with the directories of {@link SEARCH_PATH} it lacks appended: ARCH and the runc
 * and CRIU it starts find their programs also when started with a minimal PATH (cron's
 * `/usr/bin:/bin` has no `criu`, which lives in /usr/sbin).
 *
 * @example
 * ```ts
 * import { withSystemPath } from "./programs.ts";
 * if (withSystemPath("/usr/bin:/bin") !== "/usr/bin:/bin:/usr/sbin:/sbin") throw new Error();
 * ```
 */
export function withSystemPath(path: string | undefined): string {
  const dirs = (path ?? "").split(":").filter((d) => d !== "");
  for (const dir of SEARCH_PATH.split(":")) if (!dirs.includes(dir)) dirs.push(dir);
  return dirs.join(":");
}

/** Makes this process's PATH (inherited by what it starts) include the system directories. */
export function ensureSystemPath(): void {
  Deno.env.set("PATH", withSystemPath(Deno.env.get("PATH")));
}
