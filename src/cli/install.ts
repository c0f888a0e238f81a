/**
 * `arch install` / `arch uninstall`: host integration of the ARCH binaries already on disk
 * (containerd, docker, podman, watch), and `arch install --print kubernetes|ecs-userdata|
 * batch-env` (text only). Every change is planned first and shown as a unified diff; with
 * `--dry-run` nothing is written. A second install changes nothing and says so. The system's
 * runc is never written, moved or replaced. What was there before is kept in the install
 * record (`--record`, root-only 0600) so that `arch uninstall` restores it exactly. Engines
 * are never restarted unless `--restart` is given (and systemd runs); the command says which
 * daemon must be restarted.
 */

import { UsageError } from "../util/errors.ts";
import { runCommand } from "../process/exec.ts";
import {
  applyInstall,
  applyUninstall,
  DEFAULT_RECORD,
  type FileChange,
  loadRecord,
  originalText,
  readText,
  recordedFile,
  recordUnit,
  sha256,
  unifiedDiff,
  writeTarget,
} from "../install/changes.ts";

/** The targets of `arch install` / `arch uninstall`. */
export const TARGETS = ["containerd", "docker", "podman", "watch"] as const;
type Target = typeof TARGETS[number];

/** Options of `arch install` / `arch uninstall` (as commander gives them). */
export interface InstallOptions {
  readonly default?: boolean;
  readonly dryRun?: boolean;
  readonly force?: boolean;
  readonly restart?: boolean;
  readonly json?: boolean;
  readonly arch?: string;
  readonly archRunc?: string;
  readonly containerdConfig?: string;
  readonly containerdDropin?: string;
  readonly containerd?: string;
  readonly dockerConfig?: string;
  readonly podmanHooksDir?: string;
  readonly podmanConfig?: string;
  readonly watchUnit?: string;
  readonly provider?: string;
  readonly record?: string;
  readonly print?: string;
  readonly artifactUrl?: string;
  readonly artifactSha256?: string;
  readonly nodeSelector?: string;
  readonly image?: string;
  readonly checkpointPath?: string;
  readonly sharedFsPath?: string;
}

const DEFAULT_ARCH = "/usr/local/bin/arch";
const DEFAULT_ARCH_RUNC = "/usr/local/bin/arch-runc";
const SERVICE: Record<Target, string | undefined> = {
  containerd: "containerd",
  docker: "docker",
  podman: undefined,
  watch: undefined,
};

/** What one target's plan holds. */
interface TargetPlan {
  readonly target: Target;
  readonly changes: FileChange[];
  readonly notes: string[];
}

function out(line: string): void {
  console.log(line);
}

function checkTargets(targets: readonly string[]): Target[] {
  if (targets.length === 0) {
    throw new UsageError(`no target given: name one or more of ${TARGETS.join(", ")} (or use --print)`);
  }
  for (const t of targets) {
    if (!(TARGETS as readonly string[]).includes(t)) {
      throw new UsageError(`unknown target "${t}": use ${TARGETS.join(", ")}`);
    }
  }
  return [...new Set(targets)] as Target[];
}

function absolute(what: string, path: string): string {
  if (!path.startsWith("/")) throw new UsageError(`${what} "${path}" is not an absolute path: pass an absolute path`);
  return path;
}

/** Where a system runc lives: `--arch-runc` naming one of them is a mistake (ARCH never stands in by replacing it). */
const SYSTEM_RUNCS = ["/usr/sbin/runc", "/usr/bin/runc", "/usr/local/sbin/runc", "/usr/local/bin/runc", "/sbin/runc"];

function refuseSystemRunc(archRunc: string): void {
  const real = (p: string) => {
    try {
      return Deno.realPathSync(p);
    } catch {
      return p;
    }
  };
  const target = real(archRunc);
  if (SYSTEM_RUNCS.some((r) => r === archRunc || real(r) === target)) {
    throw new UsageError(`--arch-runc "${archRunc}" is the system's runc, not ARCH's: pass the path of arch-runc`);
  }
}

async function containerdMajor(cmd: string): Promise<number | undefined> {
  const { parseContainerdMajor } = await import("../install/containerd.ts");
  try {
    const r = await runCommand({ cmd, args: ["--version"], timeoutMs: 10_000 });
    return r.code === 0 ? parseContainerdMajor(r.stdout) : undefined;
  } catch {
    return undefined;
  }
}

async function planTarget(target: Target, opts: InstallOptions): Promise<TargetPlan> {
  const arch = absolute("--arch", opts.arch ?? DEFAULT_ARCH);
  const archRunc = absolute("--arch-runc", opts.archRunc ?? DEFAULT_ARCH_RUNC);
  const makeDefault = opts.default ?? false;
  refuseSystemRunc(archRunc);
  const notes: string[] = [];
  for (const [what, p] of [["--arch-runc", archRunc], ["--arch", arch]] as const) {
    if (target === "watch" && what === "--arch-runc") continue;
    if (target !== "podman" && target !== "watch" && what === "--arch") continue;
    try {
      Deno.statSync(p);
    } catch {
      notes.push(
        `warning: ${p} (${what}) does not exist yet: install the ARCH binaries there first`,
      );
    }
  }
  switch (target) {
    case "containerd": {
      const { CONTAINERD_DEFAULTS, planContainerd } = await import("../install/containerd.ts");
      const config = absolute("--containerd-config", opts.containerdConfig ?? CONTAINERD_DEFAULTS.config);
      // Default: conf.d/arch.toml beside the config (/etc/containerd/conf.d/arch.toml for the default config).
      const dropIn = opts.containerdDropin ?? `${config.slice(0, config.lastIndexOf("/"))}/conf.d/arch.toml`;
      const plan = planContainerd({
        config,
        dropIn: absolute("--containerd-dropin", dropIn),
        archRunc,
        makeDefault,
        containerdMajor: await containerdMajor(opts.containerd ?? "containerd"),
      });
      return { target, changes: plan.changes, notes: [...notes, ...plan.notes] };
    }
    case "docker": {
      const { DOCKER_DEFAULT_CONFIG, planDocker } = await import("../install/docker.ts");
      const config = absolute("--docker-config", opts.dockerConfig ?? DOCKER_DEFAULT_CONFIG);
      return { target, changes: planDocker({ config, archRunc, makeDefault, force: opts.force ?? false }), notes };
    }
    case "podman": {
      const { PODMAN_DEFAULTS, planPodman } = await import("../install/podman.ts");
      const changes = planPodman({
        hooksDir: absolute("--podman-hooks-dir", opts.podmanHooksDir ?? PODMAN_DEFAULTS.hooksDir),
        config: absolute("--podman-config", opts.podmanConfig ?? PODMAN_DEFAULTS.config),
        arch,
        archRunc,
        makeDefault,
      });
      return { target, changes, notes };
    }
    case "watch": {
      const { planWatch, WATCH_UNIT_DEFAULT } = await import("../install/systemd.ts");
      const unit = absolute("--watch-unit", opts.watchUnit ?? WATCH_UNIT_DEFAULT);
      return { target, changes: planWatch({ unit, arch, provider: opts.provider ?? "auto" }), notes };
    }
  }
}

async function systemctl(args: string[]): Promise<string | undefined> {
  const r = await runCommand({ cmd: "systemctl", args, timeoutMs: 120_000 });
  return r.code === 0 ? undefined : `"systemctl ${args.join(" ")}" failed: ${r.stderr.trim()}`;
}

/** What to do after the files changed: restart hints, or systemctl when asked and possible. */
async function after(
  target: Target,
  changed: boolean,
  opts: InstallOptions,
  uninstall: boolean,
  unitPath?: string,
): Promise<string[]> {
  const lines: string[] = [];
  const { inUnitDir, systemdRuns, unitName, WATCH_UNIT_DEFAULT } = await import("../install/systemd.ts");
  const service = SERVICE[target];
  if (service !== undefined && changed) {
    if (opts.restart && !opts.dryRun && systemdRuns()) {
      const problem = await systemctl(["restart", service]);
      lines.push(problem ?? `restarted ${service}`);
    } else {
      lines.push(`restart ${service} to apply: systemctl restart ${service}`);
    }
  }
  if (target === "watch") {
    unitPath ??= opts.watchUnit ?? WATCH_UNIT_DEFAULT;
    const unit = unitName(unitPath);
    const record = opts.record ?? DEFAULT_RECORD;
    const commands = uninstall
      ? [["disable", "--now", unit], ["daemon-reload"]]
      : [["daemon-reload"], ["enable", "--now", unit]];
    const enabled = loadRecord(record).enabledUnits.includes(unit);
    const needed = uninstall ? enabled || changed : changed || !enabled;
    if (!needed) return lines;
    if (!opts.dryRun && systemdRuns() && inUnitDir(unitPath)) {
      for (const args of commands) {
        const problem = await systemctl(args);
        if (problem !== undefined) {
          lines.push(problem);
          return lines;
        }
      }
      recordUnit(record, unit, !uninstall);
      lines.push(uninstall ? `stopped and disabled ${unit}` : `enabled and started ${unit}`);
    } else if (changed || uninstall) {
      const why = !systemdRuns()
        ? "systemd is not running here"
        : opts.dryRun
        ? "dry run"
        : "unit outside systemd's directories";
      lines.push(`${why}: run ${commands.map((a) => `"systemctl ${a.join(" ")}"`).join(" then ")}`);
    }
  }
  return lines;
}

interface Report {
  readonly target: Target;
  readonly changed: string[];
  readonly diff: string;
  readonly notes: string[];
}

function show(reports: readonly Report[], opts: InstallOptions, verb: "install" | "uninstall"): void {
  if (opts.json) {
    out(JSON.stringify(reports.map((r) => ({ ...r, dryRun: opts.dryRun ?? false }))));
    return;
  }
  for (const r of reports) {
    if (r.diff !== "") out(r.diff.trimEnd());
    const what = r.changed.length === 0
      ? `nothing to do (${verb === "install" ? "already installed" : "not installed"})`
      : `${opts.dryRun ? "would change" : "changed"} ${r.changed.join(", ")}`;
    out(`${r.target}: ${what}`);
    for (const n of r.notes) out(`${r.target}: ${n}`);
  }
}

/**
 * `arch install <target...>`: plans every target first (nothing is written if any plan is
 * refused), prints the diff, then applies unless `--dry-run`. Returns the exit status.
 * Requires root for the default paths.
 */
export async function install(targets: readonly string[], opts: InstallOptions): Promise<number> {
  if (opts.print !== undefined) {
    if (targets.length > 0) throw new UsageError(`--print takes no target: drop "${targets.join(" ")}"`);
    return await printText(opts);
  }
  const plans: TargetPlan[] = [];
  for (const target of checkTargets(targets)) plans.push(await planTarget(target, opts));
  const record = absolute("--record", opts.record ?? DEFAULT_RECORD);
  const reports: Report[] = [];
  // Where each change goes (a symlink's target): every refusal before anything is written.
  const files = new Map(plans.flatMap((p) => p.changes).map((c) => [c.path, writeTarget(c.path)]));
  for (const plan of plans) {
    const todo = plan.changes.filter((c) => c.before !== c.after);
    const diff = todo.map((c) => unifiedDiff(c.path, c.before, c.after)).join("");
    const links = todo.flatMap((c) => {
      const file = files.get(c.path) ?? c.path;
      const verb = opts.dryRun ? "would change" : "changed";
      return file === c.path ? [] : [`${c.path} is a symlink: ${verb} ${file}, the link stays`];
    });
    if (!opts.dryRun) await applyInstall(todo, record);
    const notes = [...plan.notes, ...links, ...await after(plan.target, todo.length > 0, opts, false)];
    reports.push({ target: plan.target, changed: todo.map((c) => c.path), diff, notes });
  }
  show(reports, opts, "install");
  return 0;
}

/**
 * The recorded file, as it should be after uninstall, when someone changed it since the install:
 * the revert by meaning of a file ARCH edited (docker's daemon.json, containerd's config.toml),
 * or `kept` for a file ARCH wrote whole (a drop-in, hooks.d file or unit): it is no longer what
 * ARCH wrote, so it is left as it is.
 */
async function revertChanged(
  target: Target,
  path: string,
  current: string,
  original: string | null,
  others: readonly string[],
): Promise<{ text: string | null } | "kept"> {
  if (target === "docker") {
    const { revertDocker } = await import("../install/docker.ts");
    return { text: revertDocker(path, current, original) };
  }
  if (target === "containerd" && path.endsWith(".toml") && !current.startsWith("# Written by `arch install")) {
    // config.toml: take out the imports of ARCH's drop-in (the target's other recorded file)
    const { revertContainerdConfig } = await import("../install/containerd.ts");
    let text: string | null = current;
    for (const dropIn of others) if (text !== null) text = revertContainerdConfig(text, dropIn, original === null);
    return { text };
  }
  return "kept";
}

/**
 * `arch uninstall <target...>`: puts back what the install record says was there: the
 * original bytes of a file nobody changed since, else a revert by meaning (docker, the
 * containerd import); a file ARCH wrote whole and someone changed since is kept, and said.
 * A symlinked file is restored where the link points. Returns the exit status.
 */
export async function uninstall(targets: readonly string[], opts: InstallOptions): Promise<number> {
  const record = absolute("--record", opts.record ?? DEFAULT_RECORD);
  const entries = loadRecord(record).entries;
  const reports: Report[] = [];
  for (const target of checkTargets(targets)) {
    const changes: FileChange[] = [];
    const notes: string[] = [];
    for (const entry of entries.filter((e) => e.target === target)) {
      const current = readText(recordedFile(entry));
      const original = originalText(entry);
      const untouched = current === null ? entry.installed === null : entry.installed === await sha256(current);
      let restored: string | null;
      if (current === null && entry.installed !== null) {
        restored = null; // removed since the install (or its directory went away): left as it is
        notes.push(`${entry.path} was removed since the install: left as it is`);
      } else if (untouched || current === null) restored = original;
      else {
        const others = entries.filter((e) => e.target === target && e.path !== entry.path).map((e) => e.path);
        const reverted = await revertChanged(target, entry.path, current, original, others);
        if (reverted === "kept") {
          restored = current;
          notes.push(
            `${entry.path} was changed since ARCH wrote it: kept as it is (remove or restore it yourself if unneeded)`,
          );
        } else {
          restored = reverted.text;
          notes.push(
            reverted.text === null
              ? `${entry.path} changed since the install but held nothing besides ARCH's part: removed`
              : `${entry.path} changed since the install: removed ARCH's part only`,
          );
        }
      }
      changes.push({ target, path: entry.path, before: current, after: restored });
    }
    // Units first (stop the watcher before its unit file goes).
    const unitPath = changes[0]?.path;
    const post = target === "watch" ? await after(target, changes.length > 0, opts, true, unitPath) : [];
    const todo = changes.filter((c) => c.before !== c.after);
    const diff = todo.map((c) => unifiedDiff(c.path, c.before, c.after)).join("");
    for (const c of todo) {
      const file = recordedFile(entries.find((e) => e.path === c.path) ?? c);
      if (file !== c.path) {
        notes.push(`${c.path} is a symlink: ${opts.dryRun ? "would restore" : "restored"} ${file}, the link stays`);
      }
    }
    if (!opts.dryRun) applyUninstall(target, changes, record);
    const restart = target === "watch" ? [] : await after(target, todo.length > 0, opts, true);
    reports.push({ target, changed: todo.map((c) => c.path), diff, notes: [...notes, ...post, ...restart] });
  }
  show(reports, opts, "uninstall");
  return 0;
}

async function printText(opts: InstallOptions): Promise<number> {
  switch (opts.print) {
    case "kubernetes": {
      const { kubernetesManifests } = await import("../install/kubernetes.ts");
      out(
        kubernetesManifests({
          artifactUrl: opts.artifactUrl ?? "https://example.com/arch-VERSION-linux-amd64.run",
          artifactSha256: opts.artifactSha256 ?? "SHA256",
          ...(opts.nodeSelector !== undefined ? { nodeSelector: opts.nodeSelector } : {}),
          ...(opts.image !== undefined ? { image: opts.image } : {}),
          makeDefault: opts.default ?? false,
        }).trimEnd(),
      );
      return 0;
    }
    case "ecs-userdata": {
      const { ecsUserData } = await import("../install/ecs.ts");
      out(
        ecsUserData({
          artifactUrl: opts.artifactUrl ?? "https://example.com/arch-VERSION-linux-amd64.run",
          artifactSha256: opts.artifactSha256 ?? "SHA256",
          provider: opts.provider ?? "aws",
        }).trimEnd(),
      );
      return 0;
    }
    case "batch-env": {
      const { batchEnvironment } = await import("../install/ecs.ts");
      out(JSON.stringify(
        batchEnvironment({
          ...(opts.checkpointPath !== undefined ? { checkpointPath: opts.checkpointPath } : {}),
          ...(opts.sharedFsPath !== undefined ? { sharedFsPath: opts.sharedFsPath } : {}),
        }),
        null,
        2,
      ));
      return 0;
    }
    default:
      throw new UsageError(`unknown --print "${opts.print}": use kubernetes, ecs-userdata or batch-env`);
  }
}
