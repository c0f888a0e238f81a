/**
 * `arch doctor`: checks what ARCH needs on this node and prints one line per check: `ok`,
 * `WARN` (works, but something is missing or off: an engine not pointed at ARCH, a watcher not
 * running, little free space) or `FAIL` (ARCH cannot work, or works unsafely), each with the
 * reason and the fix. Exit status 1 if any check failed; warnings alone exit 0. `--json` for
 * machines. Read-only.
 *
 * Checks: host configuration, runc, CRIU against the running kernel (`criu/compat.ts`: a CRIU
 * that passes `criu check` can still fail every dump of a container with a network socket),
 * the kernel (exit status through pidfd needs Linux ≥ 6.15; soft-dirty tracking for iterative
 * checkpoints), each engine's runtime configuration (containerd, Docker, Podman), every
 * allowed checkpoint and shared-FS root (exists, root-owned, not writable by others, mounted
 * for shared ones, free space), the spot-notice watcher (`<stateDir>/watch.json`), ARCH's
 * log file, and every running container that opted in (`ARCH_ENABLE=1`) but that ARCH cannot
 * protect (`registry/census.ts`: runc's roots are the source of truth), which fails the doctor. The engine configuration paths can be moved for tests with `ARCH_DOCTOR_CONTAINERD_DIR`,
 * `ARCH_DOCTOR_DOCKER_CONFIG` and `ARCH_DOCTOR_HOOKS_DIRS` (colon-separated).
 */

import { errorMessage } from "../util/errors.ts";
import { type HostConfig, loadHostConfig } from "../config/host_schema.ts";
import { runCommand } from "../process/exec.ts";
import { criuProblem, parseMajorMinor } from "../criu/compat.ts";
import { rootProblem } from "../store/safe_dir.ts";
import { archDirectories, tidyPath } from "../config/container_config.ts";
import { mountAt } from "../util/mounts.ts";
import { cString, libc } from "../util/libc.ts";
import { processStartTime } from "../process/liveness.ts";
import { logFileProblem } from "./log.ts";
import { humanAge, humanBytes, printJson, terminalSafe } from "./output.ts";
import { type Census, nodeCensus, recordCensus, runcLister } from "../registry/census.ts";

/** One check's verdict. */
export interface CheckResult {
  readonly name: string;
  readonly status: "ok" | "warn" | "fail";
  /** What was found and, for `warn`/`fail`, how to fix it (one sentence). */
  readonly detail: string;
}

/** Where the engines' configurations are looked for. */
export interface EnginePaths {
  readonly containerdDir: string;
  readonly dockerConfig: string;
  readonly hooksDirs: readonly string[];
}

/** The engine configuration paths, from the environment overrides or the defaults. */
export function enginePaths(env: (name: string) => string | undefined = (n) => Deno.env.get(n)): EnginePaths {
  return {
    containerdDir: env("ARCH_DOCTOR_CONTAINERD_DIR") ?? "/etc/containerd",
    dockerConfig: env("ARCH_DOCTOR_DOCKER_CONFIG") ?? "/etc/docker/daemon.json",
    hooksDirs: (env("ARCH_DOCTOR_HOOKS_DIRS") ?? "/etc/containers/oci/hooks.d:/usr/share/containers/oci/hooks.d")
      .split(":").filter((d) => d !== ""),
  };
}

/** How long the watcher may go without polling before it counts as stuck. */
export const WATCH_STALE_MS = 30_000;

const ok = (name: string, detail: string): CheckResult => ({ name, status: "ok", detail });
const warn = (name: string, detail: string): CheckResult => ({ name, status: "warn", detail });
const fail = (name: string, detail: string): CheckResult => ({ name, status: "fail", detail });

/**
 * The kernel check from its release string and whether soft-dirty tracking works.
 *
 * @example
 * ```ts
 * import { kernelCheck } from "./doctor.ts";
 * if (kernelCheck("6.1.0-18-amd64", true).status !== "warn") throw new Error();
 * if (kernelCheck("6.18.0", false).status !== "ok") throw new Error();
 * ```
 */
export function kernelCheck(release: string, softDirty: boolean | undefined): CheckResult {
  const [major = 0, minor = 0] = release.split(/[.-]/).map(Number);
  const pidfd = major > 6 || (major === 6 && minor >= 15);
  const dirty = softDirty === undefined
    ? "soft-dirty tracking unknown"
    : softDirty
    ? "soft-dirty tracking available"
    : "no soft-dirty tracking (iterative pre-dump checkpoints unavailable; full checkpoints work)";
  if (!pidfd) {
    return warn(
      "kernel",
      `Linux ${release} cannot report a container's exit status through a pidfd (needs 6.15): ARCH keeps every ` +
        `key's checkpoint data after the container ends; ${dirty}`,
    );
  }
  return ok("kernel", `Linux ${release}, exit status through pidfd, ${dirty}`);
}

function files(dir: string, depth = 0): string[] {
  const out: string[] = [];
  try {
    for (const e of Deno.readDirSync(dir)) {
      const path = `${dir}/${e.name}`;
      if (e.isDirectory && depth < 3) out.push(...files(path, depth + 1));
      else if (e.isFile && e.name.endsWith(".toml")) out.push(path);
    }
  } catch { /* missing or unreadable */ }
  return out.sort();
}

const exists = (path: string) => {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
};

/** containerd: a runtime whose `BinaryName` is arch-runc, in any TOML file under `dir`. */
export function containerdCheck(dir: string): CheckResult {
  const name = "containerd runtime";
  for (const file of files(dir)) {
    let text: string;
    try {
      text = Deno.readTextFileSync(file);
    } catch {
      continue;
    }
    const m = /BinaryName\s*=\s*["']([^"']*arch-runc[^"']*)["']/.exec(text);
    if (m === null) continue;
    if (!exists(m[1]!)) {
      return warn(name, `${file} names BinaryName "${m[1]}", which does not exist: install ARCH there or fix the path`);
    }
    return ok(name, `BinaryName "${m[1]}" in ${file}`);
  }
  return warn(
    name,
    `not configured (no runtime with BinaryName arch-runc under ${dir}): run "arch install containerd"`,
  );
}

/** Docker: a runtime in daemon.json whose path is arch-runc, and whether it is the default. */
export function dockerCheck(path: string): CheckResult {
  const name = "docker runtime";
  let config: { runtimes?: Record<string, { path?: unknown }>; "default-runtime"?: unknown };
  try {
    config = JSON.parse(Deno.readTextFileSync(path));
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      return warn(name, `not configured (no ${path}): run "arch install docker"`);
    }
    return warn(name, `${path} is not readable JSON (${errorMessage(error)}): fix it, then "arch install docker"`);
  }
  const runtimes = config?.runtimes !== null && typeof config?.runtimes === "object" ? config.runtimes : {};
  const found = Object.entries(runtimes).find(([, r]) => typeof r?.path === "string" && /arch-runc/.test(r.path));
  if (found === undefined) {
    return warn(name, `not configured (no runtime with path arch-runc in ${path}): run "arch install docker"`);
  }
  const [runtime, { path: bin }] = found;
  if (!exists(String(bin))) return warn(name, `runtime "${runtime}" in ${path} names "${bin}", which does not exist`);
  const def = config["default-runtime"] === runtime
    ? " (the default runtime)"
    : ` (use docker run --runtime ${runtime})`;
  return ok(name, `runtime "${runtime}" = ${bin} in ${path}${def}`);
}

/** Podman: ARCH's hooks.d files in one of `dirs`. */
export function podmanCheck(dirs: readonly string[]): CheckResult {
  const name = "podman hooks";
  for (const dir of dirs) {
    const present = ["arch-createRuntime.json", "arch-poststop.json"].filter((f) => exists(`${dir}/${f}`));
    if (present.length === 2) return ok(name, `arch-createRuntime.json and arch-poststop.json in ${dir}`);
    if (present.length === 1) return warn(name, `only ${present[0]} in ${dir}: run "arch install podman"`);
  }
  return warn(name, `not configured (no ARCH hooks.d files in ${dirs.join(", ")}): run "arch install podman"`);
}

function freeBytes(path: string): number | undefined {
  try {
    const buf = new BigUint64Array(16); // struct statvfs is 112 bytes on 64-bit Linux
    if (libc().statvfs(cString(path), buf) !== 0) return undefined;
    return Number(buf[4]! * buf[1]!); // f_bavail * f_frsize
  } catch {
    return undefined;
  }
}

/** The first of `others` that holds `path` or lies inside it (by real path), not `path` itself. */
function nestedWith(path: string, others: readonly string[]): string | undefined {
  const real = (p: string) => {
    try {
      return Deno.realPathSync(p);
    } catch {
      return tidyPath(p);
    }
  };
  const inside = (a: string, b: string) => a.startsWith(b === "/" ? "/" : `${b}/`);
  const mine = real(path);
  return others.find((o) => {
    const r = real(o);
    return r !== mine && (inside(mine, r) || inside(r, mine));
  });
}

/** One line per allowed root: exists, safe, mounted (shared), nesting, free space. */
export function rootChecks(host: HostConfig, mountinfo?: string): CheckResult[] {
  const out: CheckResult[] = [];
  const roots: { path: string; kind: "checkpoint root" | "default checkpoint root" | "shared-FS root" }[] = [
    ...host.checkpointRoots.map((path) => ({ path, kind: "checkpoint root" as const })),
    ...(host.checkpointRoots.includes(host.defaultCheckpointRoot)
      ? []
      : [{ path: host.defaultCheckpointRoot, kind: "default checkpoint root" as const }]),
    ...host.sharedFsRoots.map((path) => ({ path, kind: "shared-FS root" as const })),
  ];
  for (const { path, kind } of roots) {
    const name = `${kind} ${path}`;
    const problem = rootProblem(path);
    if (problem?.endsWith("does not exist")) {
      if (kind === "default checkpoint root") out.push(ok(name, "created (root, 0700) on first use"));
      else {
        out.push(warn(
          name,
          `does not exist: containers that name it are refused; create it (root-owned, 0700) or ` +
            `remove it from ${kind === "shared-FS root" ? "sharedFsRoots" : "checkpointRoots"}`,
        ));
      }
      continue;
    }
    if (problem !== undefined) {
      out.push(fail(name, `${problem}: only root may change a checkpoint root (chown root, chmod go-w)`));
      continue;
    }
    const nested = nestedWith(path, archDirectories(host));
    if (nested !== undefined) {
      out.push(fail(
        name,
        `nests with "${nested}" (another root or ARCH directory): containers naming it are refused; ` +
          `configure roots that neither hold nor lie inside one another`,
      ));
      continue;
    }
    if (kind === "shared-FS root") {
      let mounted;
      try {
        mounted = mountAt(path, mountinfo);
      } catch { /* no mountinfo */ }
      if (mounted === undefined) {
        out.push(
          warn(name, "is not mounted: shared-FS containers are refused until the shared file system is mounted"),
        );
        continue;
      }
    }
    const free = freeBytes(path);
    if (free !== undefined && free < host.minFreeBytes) {
      out.push(warn(
        name,
        `only ${humanBytes(free)} free (less than ${humanBytes(host.minFreeBytes)}, host config "minFreeBytes"): ` +
          `checkpoints may fail; run "arch gc" or add space`,
      ));
      continue;
    }
    out.push(ok(name, `root-owned, not writable by others${free !== undefined ? `, ${humanBytes(free)} free` : ""}`));
  }
  return out;
}

/** The watcher from its status file `<stateDir>/watch.json` (written by `arch watch`). */
export function watcherCheck(statusFile: string, now = Date.now()): CheckResult {
  const name = "spot-notice watcher";
  let status: { pid?: unknown; provider?: unknown; lastPollAt?: unknown; lastError?: unknown; notice?: unknown };
  try {
    status = JSON.parse(Deno.readTextFileSync(statusFile));
  } catch {
    return warn(
      name,
      `not running (no ${statusFile}): start it ("arch install watch", then systemctl start arch-watch)`,
    );
  }
  const pid = Number(status.pid);
  if (!(pid > 0) || processStartTime(pid) === undefined) {
    return warn(name, `not running (pid ${status.pid} of ${statusFile} is gone): systemctl start arch-watch`);
  }
  const last = typeof status.lastPollAt === "string" ? Date.parse(status.lastPollAt) : NaN;
  if (!(now - last < WATCH_STALE_MS)) {
    const ago = Number.isFinite(last) ? `${humanAge(now - last)} ago` : "never";
    const err = typeof status.lastError === "string" && status.lastError !== ""
      ? ` (last error: ${status.lastError})`
      : "";
    return warn(name, `pid ${pid} is alive but last polled ${ago}${err}: check "arch log" and the metadata service`);
  }
  const notice = status.notice !== undefined && status.notice !== null
    ? `, notice seen: ${JSON.stringify(status.notice)}`
    : "";
  return ok(name, `pid ${pid}, provider ${String(status.provider)}, last poll ${humanAge(now - last)} ago${notice}`);
}

/** ARCH's log file: root-owned 0600 (or not written yet). */
export function logCheck(path: string): CheckResult {
  let info: Deno.FileInfo;
  try {
    info = Deno.statSync(path);
  } catch {
    return ok("log file", `${path} (not written yet)`);
  }
  const problem = logFileProblem(path, info);
  return problem === undefined ? ok("log file", `${path}, root-owned, 0600`) : warn("log file", problem);
}

async function criuCheck(): Promise<CheckResult> {
  const version = await runCommand({ cmd: "criu", args: ["--version"] });
  const problem = criuProblem(version.stdout, Deno.osRelease());
  if (problem !== undefined) return fail("criu", problem);
  const check = await runCommand({ cmd: "criu", args: ["check"] });
  if (check.code !== 0) return fail("criu", `"criu check" failed: ${check.stderr.trim().split("\n").pop()}`);
  return ok(
    "criu",
    `criu ${parseMajorMinor(version.stdout)!.join(".")} fits Linux ${Deno.osRelease()}, criu check passed`,
  );
}

async function softDirty(): Promise<boolean | undefined> {
  try {
    const r = await runCommand({ cmd: "criu", args: ["check", "--feature", "mem_dirty_track"], timeoutMs: 10_000 });
    return r.code === 0;
  } catch {
    return undefined;
  }
}

/**
 * The census check: `fail` naming each running container that opted in but that ARCH cannot
 * protect (with why), `warn` for a runc root that could not be listed, else `ok` with the count.
 */
export function protectionCheck(census: Census): CheckResult[] {
  const name = "opted-in containers";
  const live = census.containers.filter((c) => c.status === "running" || c.status === "paused");
  const unprotected = live.filter((c) => c.protection === "unprotected");
  const out: CheckResult[] = census.problems.map((p) => warn(name, `${p}: its containers were not checked`));
  for (const c of unprotected) {
    out.push(fail(name, `${c.namespace}/${c.id} is not protected: ${terminalSafe(c.reason ?? "unknown reason")}`));
  }
  if (unprotected.length === 0 && census.problems.length === 0) {
    out.push(ok(name, `${live.filter((c) => c.protection === "protected").length} running, all protected`));
  }
  return out;
}

/** Runs every check (see the module doc). */
export async function runChecks(paths: EnginePaths = enginePaths()): Promise<CheckResult[]> {
  const out: CheckResult[] = [];
  const guard = async (name: string, fn: () => Promise<CheckResult | CheckResult[]> | CheckResult | CheckResult[]) => {
    try {
      const r = await fn();
      out.push(...(Array.isArray(r) ? r : [r]));
    } catch (error) {
      out.push(fail(name, errorMessage(error)));
    }
  };
  let host: HostConfig | undefined;
  await guard("host configuration", () => {
    host = loadHostConfig();
    return ok("host configuration", `${host.configPath}, runc ${host.runcPath}`);
  });
  const runc = host?.runcPath ?? "runc";
  await guard("runc", async () => {
    const r = await runCommand({ cmd: runc, args: ["--version"] });
    if (r.code !== 0) return fail("runc", `"${runc} --version" failed: ${r.stderr.trim()}`);
    return ok("runc", r.stdout.split("\n")[0]!);
  });
  await guard("criu", criuCheck);
  await guard("kernel", async () => kernelCheck(Deno.osRelease(), await softDirty()));
  await guard("containerd runtime", () => containerdCheck(paths.containerdDir));
  await guard("docker runtime", () => dockerCheck(paths.dockerConfig));
  await guard("podman hooks", () => podmanCheck(paths.hooksDirs));
  if (host !== undefined) {
    const h = host;
    await guard("checkpoint roots", () => rootChecks(h));
    await guard("spot-notice watcher", () => watcherCheck(`${h.stateDir}/watch.json`));
    await guard("log file", () => logCheck(h.logFile));
    await guard("opted-in containers", async () => {
      const census = await nodeCensus(h, runcLister(h.runcPath));
      recordCensus(h, census);
      return protectionCheck(census);
    });
  }
  return out;
}

const TAG = { ok: "ok   ", warn: "WARN ", fail: "FAIL " } as const;

/** One check as a line: `ok    name: detail`, `WARN  ...`, `FAIL  ...`. */
export function formatCheck(c: CheckResult): string {
  return `${TAG[c.status]} ${c.name}: ${c.detail}`;
}

/** `arch doctor`: prints each check (or JSON with `json`); returns 1 if any failed, else 0. `criu check` needs root. */
export async function doctor(opts: { json?: boolean } = {}): Promise<number> {
  const checks = await runChecks();
  const failed = checks.filter((c) => c.status === "fail").length;
  if (opts.json) {
    printJson({ ok: failed === 0, checks });
  } else {
    for (const c of checks) console.log(formatCheck(c));
  }
  return failed === 0 ? 0 : 1;
}
