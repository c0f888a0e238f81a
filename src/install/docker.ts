/**
 * `arch install docker`: the `arch` runtime in Docker's daemon.json (`runtimes.arch.path` =
 * arch-runc), merged into the existing JSON: every other key is kept, in its order, and the
 * file keeps its indentation, mode and owner. `--default` also sets `default-runtime` to
 * `arch` (ECS and AWS Batch cannot choose a runtime per task). Refused, nothing changed: a
 * daemon.json that is not a JSON object, and an `arch` runtime that names another binary
 * (unless forced). Pure planning: reads the file, writes nothing.
 */

import { errorMessage, UsageError } from "../util/errors.ts";
import { type FileChange, readText } from "./changes.ts";

/** Default path of Docker's daemon configuration. */
export const DOCKER_DEFAULT_CONFIG = "/etc/docker/daemon.json";

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v);

/** Parses daemon.json; one sentence naming the file and the fix when it is not a JSON object. */
export function parseDaemonJson(path: string, text: string): Json {
  let value: unknown;
  try {
    value = text.trim() === "" ? {} : JSON.parse(text);
  } catch (error) {
    throw new UsageError(
      `docker config "${path}" is not valid JSON (${errorMessage(error)}): fix the file, then run arch install again`,
    );
  }
  if (!isObject(value)) {
    throw new UsageError(`docker config "${path}" is not a JSON object: fix the file, then run arch install again`);
  }
  return value;
}

/** daemon.json text of `value`, indented like `original` (two spaces by default), with a final newline. */
export function renderDaemonJson(value: Json, original: string | null): string {
  const indent = original === null ? "  " : /\n([ \t]+)"/.exec(original)?.[1] ?? "  ";
  const oneLine = original !== null && original.trim() !== "" && !original.trim().includes("\n");
  const text = oneLine ? JSON.stringify(value) : JSON.stringify(value, null, indent);
  return original !== null && original !== "" && !original.endsWith("\n") ? text : `${text}\n`;
}

/** What {@link planDocker} needs. */
export interface DockerOptions {
  readonly config: string;
  readonly archRunc: string;
  readonly makeDefault: boolean;
  readonly force: boolean;
}

/**
 * daemon.json with the `arch` runtime (and the default runtime with `makeDefault`); the same
 * value if nothing is missing. Pure.
 *
 * @example
 * ```ts
 * import { withArchRuntime } from "./docker.ts";
 * const v = withArchRuntime({ "log-level": "warn" }, "/usr/local/bin/arch-runc", true, false, "daemon.json");
 * if (JSON.stringify(v) !== '{"log-level":"warn","runtimes":{"arch":{"path":"/usr/local/bin/arch-runc"}},"default-runtime":"arch"}') throw new Error();
 * ```
 */
export function withArchRuntime(
  value: Json,
  archRunc: string,
  makeDefault: boolean,
  force: boolean,
  path: string,
): Json {
  const runtimes = value.runtimes;
  if (runtimes !== undefined && !isObject(runtimes)) {
    throw new UsageError(`"runtimes" in docker config "${path}" is not an object: fix the file`);
  }
  const existing = runtimes?.arch;
  const out: Json = { ...value };
  if (existing === undefined || !isObject(existing) || existing.path !== archRunc) {
    if (existing !== undefined && !force) {
      throw new UsageError(
        `docker config "${path}" already has a runtime "arch" (${JSON.stringify(existing)}): ` +
          `pass --force to replace it with "${archRunc}"`,
      );
    }
    out.runtimes = { ...runtimes, arch: { path: archRunc } };
  }
  if (makeDefault) out["default-runtime"] = "arch";
  return out;
}

/** Plans `arch install docker`. Throws a {@link UsageError} (nothing changed) on a file it cannot use. */
export function planDocker(opts: DockerOptions): FileChange[] {
  if (!opts.archRunc.startsWith("/")) {
    throw new UsageError(`arch-runc path "${opts.archRunc}" is not absolute: pass an absolute --arch-runc`);
  }
  const before = readText(opts.config);
  const value = before === null ? {} : parseDaemonJson(opts.config, before);
  const next = withArchRuntime(value, opts.archRunc, opts.makeDefault, opts.force, opts.config);
  const after = JSON.stringify(next) === JSON.stringify(value) && before !== null
    ? before
    : renderDaemonJson(next, before);
  return [{ target: "docker", path: opts.config, before, after, mode: 0o644 }];
}

/**
 * Reverts daemon.json by meaning (used when it changed since the install): removes
 * `runtimes.arch` (and `runtimes` if ARCH added it) and puts back the `default-runtime` of
 * `original` (or removes the key) if it is still `arch`. Pure.
 */
export function revertDocker(path: string, current: string, original: string | null): string {
  const value = parseDaemonJson(path, current);
  const before = original === null ? {} : (() => {
    try {
      return parseDaemonJson(path, original);
    } catch {
      return {};
    }
  })();
  const out: Json = { ...value };
  if (isObject(out.runtimes) && "arch" in out.runtimes) {
    const { arch: _arch, ...rest } = out.runtimes;
    if (Object.keys(rest).length === 0 && !("runtimes" in before)) delete out.runtimes;
    else out.runtimes = rest;
  }
  if (out["default-runtime"] === "arch") {
    if (before["default-runtime"] !== undefined) out["default-runtime"] = before["default-runtime"];
    else delete out["default-runtime"];
  }
  return JSON.stringify(out) === JSON.stringify(value) ? current : renderDaemonJson(out, current);
}
