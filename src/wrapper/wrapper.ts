/**
 * The runc wrapper role: what runs each time an engine calls "runc".
 *
 * Guarantees:
 * - Pass-through is the default: unless the call concerns an ARCH-enabled container, the
 *   process is replaced by the real runc with the very same argv (see `handoff.ts`).
 * - Fail-open: an internal error while deciding (unreadable bundle, bug) is logged and the
 *   call goes to runc untouched. Only an ARCH-enabled container can be refused, and then
 *   with one sentence in runc's `--log` file, where `docker`/`ctr` read it.
 * - Never writes to stdout or stderr: they belong to the container or to the engine's
 *   parser of runc's JSON output.
 * - Loads nothing heavy: the ARCH-enabled paths are a dynamic `import()`.
 * - Each `create` leaves the launcher a note (`fast_path.ts`) so that calls ARCH passes on
 *   unchanged skip this program entirely.
 */

import { parseRuncArgv, type RuncCall, stringOption } from "../runc/argv.ts";
import { execRunc } from "./handoff.ts";
import { type HostBasics, readHostBasics, RUNC_CANDIDATES, unusableRunc } from "../config/host.ts";
import { type BundleSpec, envOf, isArchEnabled, readBundleSpec } from "../config/container.ts";
import { Logger, writeRuncLogError } from "../log/log.ts";
import { Registry } from "../registry/registry.ts";
import { isSafeSegment, lastElement } from "../util/paths.ts";
import { clearUnprotected, describesRuncContainer, noteUnprotected } from "../registry/unprotected.ts";
import { setObserveTargets } from "../observe/targets.ts";
import { noteFastPath } from "./fast_path.ts";
import type { WrapperContext } from "./context.ts";

/**
 * argv[0] for runc: the path the engine invoked the wrapper by (runc prints it in usage
 * errors), as the launcher recorded it; "runc" when unknown.
 */
function invokedAs(): string {
  return Deno.env.get("ARCH_LAUNCHER_SELF") ?? "runc";
}

/** runc's default `--root`. */
export const RUNC_DEFAULT_ROOT = "/run/runc";

/**
 * Decides what to do with one runc call and does it. Returns an exit status only when
 * ARCH handled the call itself; otherwise it never returns (runc replaced the process).
 */
export async function runWrapper(
  argv: readonly string[],
  configPath: string,
  self: readonly string[],
): Promise<number> {
  const host = readHostBasics(configPath, self);
  const log = new Logger(host.logFile, { component: "runc-wrapper" }, host.logLevel);
  setObserveTargets(host);
  for (const problem of host.problems) log.warn(problem, { config: configPath });
  const parsed = parseRuncArgv(argv);
  const logPath = parsed.ok ? stringOption(parsed.call.global, "log") : undefined;
  const logFormat = parsed.ok ? stringOption(parsed.call.global, "log-format") : undefined;
  if (host.runc === undefined) {
    const msg = `arch: no usable runc binary: set "runc" in ${configPath} (${
      host.problems.join("; ") || "none found"
    })`;
    log.error(msg);
    writeRuncLogError(logPath, logFormat, msg);
    return 127;
  }
  if (parsed.ok) {
    if (parsed.call.command === "create") {
      const root = stringOption(parsed.call.global, "root") ?? RUNC_DEFAULT_ROOT;
      noteFastPath(root, host.problems.length === 0 ? host.runc : undefined, host.stateDir);
    }
    try {
      const handled = await intercept(argv, parsed.call, host, host.runc, log);
      if (handled !== undefined) return handled;
    } catch (error) {
      log.error("internal error, passing the call to runc unchanged", { argv, error: String(error) });
      if (parsed.call.command === "create") noteFailOpen(parsed.call, host.stateDir, error);
    }
  }
  const errno = execRunc(host.runc, invokedAs(), argv);
  const msg = `arch: cannot execute runc "${host.runc}" (errno ${errno})`;
  log.error(msg);
  writeRuncLogError(logPath, logFormat, msg);
  return 127;
}

/** Commands ARCH may act on for an enabled container. */
const INTERCEPTED = new Set(["create", "start", "delete"]);

async function intercept(
  argv: readonly string[],
  call: RuncCall,
  host: HostBasics,
  runc: string,
  log: Logger,
): Promise<number | undefined> {
  if (call.command === undefined || !INTERCEPTED.has(call.command) || call.options.help === true) return undefined;
  const id = call.args[0];
  const root = stringOption(call.global, "root") ?? RUNC_DEFAULT_ROOT;
  const namespace = lastElement(root);
  if (id === undefined || !isSafeSegment(id) || !isSafeSegment(namespace)) return undefined;
  const registry = new Registry(host.stateDir);
  let spec: BundleSpec | undefined;
  if (call.command === "create") {
    spec = readBundleSpec(stringOption(call.options, "bundle") ?? Deno.cwd());
    if (!isArchEnabled(envOf(spec))) {
      registry.remove(namespace, id); // a record left by an earlier container of this id is not this one's
      return undefined;
    }
  } else {
    const record = registry.get(namespace, id);
    if (record === undefined) return undefined;
    if (!describesRuncContainer(record.bundle, root, id)) {
      log.warn("ignoring a stale ARCH record: the container of this id is another one", { namespace, id });
      registry.remove(namespace, id);
      return undefined;
    }
  }
  const ctxLog = log.with({ namespace, id, command: call.command });
  const logPath = stringOption(call.global, "log");
  const logFormat = stringOption(call.global, "log-format");
  const ctx: WrapperContext = {
    argv,
    call,
    host,
    runc,
    log: ctxLog,
    registry,
    namespace,
    id,
    root,
    spec,
    fail: (msg, fields) => {
      ctxLog.error(msg, fields);
      writeRuncLogError(logPath, logFormat, `arch: ${msg}`);
    },
  };
  if (call.command === "create") clearUnprotected(host.stateDir, namespace, id); // a note of an earlier container of the id
  const enabled = await import("./lifecycle.ts");
  return await enabled.handle(ctx);
}

/**
 * After a create of an opted-in container went to runc unchanged (fail-open): the note that makes
 * `arch ls`, `doctor`, `finalize` and the metrics show it as unprotected, with the error.
 */
function noteFailOpen(call: RuncCall, stateDir: string, error: unknown): void {
  try {
    const id = call.args[0];
    const namespace = lastElement(stringOption(call.global, "root") ?? RUNC_DEFAULT_ROOT);
    const spec = readBundleSpec(stringOption(call.options, "bundle") ?? Deno.cwd());
    if (id === undefined || !isArchEnabled(envOf(spec))) return;
    noteUnprotected(stateDir, namespace, id, `ARCH failed while creating it and passed it to runc unchanged: ${error}`);
  } catch { /* the census still shows it, with a generic reason */ }
}

/**
 * Last resort when the wrapper itself failed unexpectedly: hand the call to the first
 * usable runc of the default locations. Returns only if that is impossible.
 */
export function failOpen(argv: readonly string[], self: readonly string[]): number {
  const runc = RUNC_CANDIDATES.find((candidate) => unusableRunc(candidate, self) === undefined);
  if (runc !== undefined) execRunc(runc, invokedAs(), argv);
  return 127;
}
