/**
 * The host configuration as the runc wrapper needs it, read on every runc call.
 *
 * Guarantees: the file is used only if it is owned by root and not writable by group or
 * others (it names the binary every container start executes as root); otherwise it is
 * ignored, the reason is returned, and defaults apply. The runc binary is never looked up
 * on PATH (the wrapper is installed under runc's name there): it is the configured absolute
 * path, else the first of Debian's and upstream's install locations, and it must be a
 * root-owned ELF executable that is not ARCH itself.
 *
 * This reader is deliberately small (no zod: it runs on the hot path). `arch doctor` and the
 * ARCH-enabled paths validate the whole file with the schema in `host_schema.ts`.
 */

import { errorMessage } from "../util/errors.ts";

/** Default location, overridable for private stacks with `ARCH_CONFIG`. */
export const DEFAULT_CONFIG_PATH = "/etc/arch/config.json";

/** Where runc is looked for when the configuration does not name it. */
export const RUNC_CANDIDATES = ["/usr/sbin/runc", "/usr/bin/runc", "/usr/local/sbin/runc", "/usr/local/bin/runc"];

/** The parts of the host configuration the hot path uses. */
export interface HostBasics {
  readonly configPath: string;
  readonly runc: string | undefined;
  readonly stateDir: string;
  readonly logFile: string;
  /** Minimum level ARCH's log keeps (`logLevel`, default `info`). */
  readonly logLevel: "debug" | "info" | "warn" | "error";
  /** Prometheus textfile of ARCH's counters (`metricsFile`; `""` turns it off). */
  readonly metricsFile: string;
  /** JSON-lines file of checkpoint/restore/finalize events (`eventsFile`; `""` turns it off). */
  readonly eventsFile: string;
  /** The whole parsed file (validated later by the schema), `{}` when absent or ignored. */
  readonly raw: { readonly [k: string]: unknown };
  /** Why the file or the configured runc was not used, if so. */
  readonly problems: readonly string[];
}

/** Default `stateDir`: ARCH's runtime state (registry, markers), on tmpfs so that it ends with the boot. */
export const DEFAULT_STATE_DIR = "/run/arch";
/** Default `logFile`: ARCH's JSON-lines log (CRIU's logs are kept beside it, in `criu/`). */
export const DEFAULT_LOG_FILE = "/var/log/arch/arch.log";
/** Default `metricsFile`: for node_exporter's textfile collector (point its directory here, or set the field). */
export const DEFAULT_METRICS_FILE = "/var/lib/arch/metrics/arch.prom";
/** Default `eventsFile`: `events.jsonl` beside ARCH's log (`<dir of logFile>/events.jsonl`). */
export function defaultEventsFile(logFile: string): string {
  return `${logFile.slice(0, logFile.lastIndexOf("/")) || ""}/events.jsonl`;
}
const LEVELS = ["debug", "info", "warn", "error"] as const;

/** Why `info` (an lstat result) is not a safe root-owned file, or `undefined` if it is. */
export function unsafeOwnership(path: string, info: Pick<Deno.FileInfo, "uid" | "mode">): string | undefined {
  if (info.uid !== 0) return `"${path}" is owned by uid ${info.uid}, not root`;
  if (info.mode !== null && (info.mode & 0o022) !== 0) {
    return `"${path}" is writable by group or others (mode ${(info.mode & 0o777).toString(8)})`;
  }
  return undefined;
}

function isElf(path: string): boolean {
  const file = Deno.openSync(path);
  try {
    const head = new Uint8Array(4);
    return file.readSync(head) === 4 && head[0] === 0x7f && head[1] === 0x45 && head[2] === 0x4c && head[3] === 0x46;
  } finally {
    file.close();
  }
}

/** Why `path` cannot be used as the real runc, or `undefined` if it can. */
export function unusableRunc(path: string, self: readonly string[]): string | undefined {
  if (!path.startsWith("/")) return `runc path "${path}" is not absolute`;
  let real: string;
  let info: Deno.FileInfo;
  try {
    real = Deno.realPathSync(path);
    info = Deno.statSync(real);
  } catch {
    return `runc "${path}" does not exist`;
  }
  if (!info.isFile || info.mode === null || (info.mode & 0o111) === 0) {
    return `runc "${path}" is not an executable file`;
  }
  const owner = unsafeOwnership(real, info);
  if (owner !== undefined) return owner;
  if (self.includes(real) || !isElf(real)) return `runc "${path}" is not a runc binary (it would run ARCH again)`;
  return undefined;
}

function str(raw: { readonly [k: string]: unknown }, key: string): string | undefined {
  const value = raw[key];
  return typeof value === "string" && value.startsWith("/") ? value : undefined;
}

/**
 * Reads the host configuration. Never throws. `self` lists real paths that are ARCH itself
 * (its executable and launcher), which runc must not be.
 */
export function readHostBasics(configPath: string, self: readonly string[]): HostBasics {
  const problems: string[] = [];
  let raw: { readonly [k: string]: unknown } = {};
  try {
    const info = Deno.lstatSync(configPath);
    const unsafe = unsafeOwnership(configPath, info);
    if (unsafe !== undefined) {
      problems.push(`ignoring host configuration: ${unsafe}`);
    } else {
      const parsed: unknown = JSON.parse(Deno.readTextFileSync(configPath));
      if (parsed !== null && typeof parsed === "object" && !Array.isArray(parsed)) {
        raw = parsed as { readonly [k: string]: unknown };
      } else {
        problems.push(`ignoring host configuration "${configPath}": not a JSON object`);
      }
    }
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) {
      problems.push(`ignoring host configuration "${configPath}": ${errorMessage(error)}`);
    }
  }
  let runc: string | undefined;
  const configured = raw.runc;
  if (configured !== undefined) {
    const why = typeof configured === "string" ? unusableRunc(configured, self) : "runc must be a string";
    if (why === undefined) runc = configured as string;
    else problems.push(`ignoring configured runc: ${why}`);
  }
  runc ??= RUNC_CANDIDATES.find((candidate) => unusableRunc(candidate, self) === undefined);
  const logFile = str(raw, "logFile") ?? DEFAULT_LOG_FILE;
  const level = LEVELS.find((l) => l === raw.logLevel);
  return {
    configPath,
    runc,
    stateDir: str(raw, "stateDir") ?? DEFAULT_STATE_DIR,
    logFile,
    logLevel: level ?? "info",
    metricsFile: raw.metricsFile === "" ? "" : str(raw, "metricsFile") ?? DEFAULT_METRICS_FILE,
    eventsFile: raw.eventsFile === "" ? "" : str(raw, "eventsFile") ?? defaultEventsFile(logFile),
    raw,
    problems,
  };
}

/**
 * The program that runs ARCH again (the exit watcher, the pause watchdog, the hooks, the watcher's
 * finalize): the launcher's target in launcher form (`ARCH_LAUNCHER_ARCH`), else this executable.
 */
export function selfArch(): string {
  return Deno.env.get("ARCH_LAUNCHER_ARCH") ?? Deno.execPath();
}

/**
 * Real paths that are ARCH itself (this executable and, in launcher mode, the launcher the
 * engine ran), which the configured or fallback runc must never be.
 */
export function selfPaths(): string[] {
  const paths = [Deno.execPath()];
  const launcher = Deno.env.get("ARCH_LAUNCHER_SELF");
  try {
    if (launcher !== undefined) paths.push(Deno.realPathSync(launcher));
  } catch {
    // a launcher that vanished is not a runc candidate either
  }
  return paths;
}
