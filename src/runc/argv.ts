/**
 * Parses runc's argv into global options, subcommand, subcommand options and positionals,
 * with the rules of the Go `flag` package under urfave/cli v1 that runc uses: `-name` and
 * `--name`, `--name=value` or `--name value` for value flags, `--name` or `--name=true|false`
 * for booleans, `--` ends the flags, and (except for `exec`) flags after a positional are
 * still flags.
 *
 * Pure: no I/O. An argv this parser does not understand yields `{ ok: false }` with the
 * reason; the wrapper then hands the argv to runc untouched, so runc reports the error.
 */

import { COMMAND_ALIASES, COMMAND_FLAGS, findFlag, type FlagSpec, GLOBAL_FLAGS, NO_REORDER } from "./flags.ts";

/** Parsed flags: canonical long name to value (`true` for booleans, all values for lists). */
export type Options = Record<string, string | boolean | string[]>;

/** A runc invocation split into its parts. */
export interface RuncCall {
  readonly global: Options;
  /** Canonical subcommand name; `undefined` for a bare `runc` or `runc --version`. */
  readonly command: string | undefined;
  readonly options: Options;
  readonly args: readonly string[];
}

/** The result of {@link parseRuncArgv}: the call, or why the argv could not be parsed. */
export type ParseResult = { ok: true; call: RuncCall } | { ok: false; reason: string };

const HELP_FLAG: FlagSpec = { name: "help", kind: "bool", aliases: ["h"] };

interface FlagToken {
  readonly spec: FlagSpec;
  readonly value: string | undefined;
}

/** Splits `-x`, `--x`, `--x=v` into name and inline value; `undefined` if not a flag. */
function splitFlag(arg: string): { name: string; inline: string | undefined } | undefined {
  if (arg.length < 2 || arg[0] !== "-" || arg === "--") return undefined;
  const body = arg.startsWith("--") ? arg.slice(2) : arg.slice(1);
  if (body === "" || body.startsWith("-") || body.startsWith("=")) return undefined;
  const eq = body.indexOf("=");
  return eq < 0 ? { name: body, inline: undefined } : { name: body.slice(0, eq), inline: body.slice(eq + 1) };
}

function applyFlag(options: Options, { spec, value }: FlagToken): string | undefined {
  if (spec.kind === "bool") {
    if (value === undefined || value === "true" || value === "1") options[spec.name] = true;
    else if (value === "false" || value === "0") options[spec.name] = false;
    else return `invalid boolean value "${value}" for flag --${spec.name}`;
    return undefined;
  }
  if (value === undefined) return `flag needs an argument: --${spec.name}`;
  if (spec.kind === "list") {
    const prev = options[spec.name];
    options[spec.name] = Array.isArray(prev) ? [...prev, value] : [value];
  } else {
    options[spec.name] = value;
  }
  return undefined;
}

/**
 * Reads flags from `argv` starting at `start`. Returns the options, the positionals, and an
 * error for an unknown flag. With `reorder`, flags after positionals are still read.
 */
function parseFlags(
  argv: readonly string[],
  start: number,
  specs: readonly FlagSpec[],
  reorder: boolean,
  stopAtFirstPositional: boolean,
): { options: Options; args: string[]; next: number; error?: string } {
  const options: Options = {};
  const args: string[] = [];
  let i = start;
  while (i < argv.length) {
    const arg = argv[i]!;
    if (arg === "--") {
      args.push(...argv.slice(i + 1));
      return { options, args, next: argv.length };
    }
    const flag = splitFlag(arg);
    if (flag === undefined) {
      if (stopAtFirstPositional) return { options, args, next: i };
      args.push(arg);
      i++;
      if (!reorder) {
        args.push(...argv.slice(i));
        return { options, args, next: argv.length };
      }
      continue;
    }
    const spec = findFlag(specs, flag.name);
    if (spec === undefined) {
      return { options, args, next: i, error: `flag provided but not defined: -${flag.name}` };
    }
    let value = flag.inline;
    i++;
    if (value === undefined && spec.kind !== "bool") {
      value = argv[i];
      if (value !== undefined) i++;
    }
    const error = applyFlag(options, { spec, value });
    if (error !== undefined) return { options, args, next: i, error };
  }
  return { options, args, next: i };
}

/**
 * Parses a runc argv (without the program name).
 *
 * @example
 * ```ts
 * import { parseRuncArgv } from "./argv.ts";
 * const r = parseRuncArgv(["--root", "/run/x", "delete", "--force", "c1"]);
 * if (!r.ok || r.call.command !== "delete" || r.call.options.force !== true) throw new Error();
 * ```
 */
export function parseRuncArgv(argv: readonly string[]): ParseResult {
  const global = parseFlags(argv, 0, GLOBAL_FLAGS, false, true);
  if (global.error !== undefined) return { ok: false, reason: global.error };
  const name = argv[global.next];
  if (name === undefined) {
    return { ok: true, call: { global: global.options, command: undefined, options: {}, args: [] } };
  }
  const command = COMMAND_ALIASES[name] ?? name;
  const specs = COMMAND_FLAGS[command];
  if (specs === undefined) return { ok: false, reason: `no such command "${name}"` };
  const sub = parseFlags(argv, global.next + 1, [...specs, HELP_FLAG], !NO_REORDER.has(command), false);
  if (sub.error !== undefined) return { ok: false, reason: sub.error };
  return { ok: true, call: { global: global.options, command, options: sub.options, args: sub.args } };
}

/** Reads a string option, or `undefined` when absent. */
export function stringOption(options: Options, name: string): string | undefined {
  const value = options[name];
  return typeof value === "string" ? value : undefined;
}

/**
 * Turns options back into argv, `--name value` / `--name` for true booleans, in a stable
 * order. Values are never interpreted by a shell.
 *
 * @example
 * ```ts
 * import { formatOptions } from "./argv.ts";
 * const argv = formatOptions({ detach: true, "pid-file": "/p", "empty-ns": ["network"] });
 * if (argv.join(" ") !== "--detach --pid-file /p --empty-ns network") throw new Error();
 * ```
 */
export function formatOptions(options: Options): string[] {
  const out: string[] = [];
  for (const [name, value] of Object.entries(options)) {
    if (value === true) out.push(`--${name}`);
    else if (value === false) out.push(`--${name}=false`);
    else if (Array.isArray(value)) { for (const item of value) out.push(`--${name}`, item); }
    else out.push(`--${name}`, value);
  }
  return out;
}

/** Builds a full runc argv from its parts (inverse of {@link parseRuncArgv}). */
export function formatRuncCall(call: RuncCall): string[] {
  if (call.command === undefined) return formatOptions(call.global);
  return [...formatOptions(call.global), call.command, ...formatOptions(call.options), "--", ...call.args];
}
