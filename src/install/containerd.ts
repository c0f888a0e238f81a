/**
 * `arch install containerd`: the `arch` runtime for containerd's CRI plugin, in a drop-in
 * file (default `/etc/containerd/conf.d/arch.toml`) that the user's config.toml pulls in
 * through `imports`. The user's config.toml is never rewritten: the one edit ever made to it
 * is adding the drop-in to `imports` when nothing there covers it yet (or creating it with
 * only `version` and `imports` when it is missing).
 *
 * How containerd reads imports (its `LoadConfig`, 1.7 and 2.x alike): the main file first,
 * then its `imports` in order (then theirs), each path cleaned, relative paths taken from the
 * importing file's directory, a path with `*` expanded by `filepath.Glob`; every file is read
 * once; only files that the main config (or an imported one) lists are read: containerd 2.2+
 * writes `imports = ["/etc/containerd/conf.d/*.toml"]` into the config `containerd config
 * default` prints, but a node without config.toml imports nothing. Merging differs:
 * - containerd 1.7 (config `version = 2`): a plugin table of an imported file REPLACES the
 *   whole table of that plugin. So the drop-in carries a copy of the user's whole
 *   `plugins."io.containerd.grpc.v1.cri"` table plus the `arch` runtime, and must be read
 *   after the files that set it (re-run `arch install containerd` after editing that table);
 * - containerd 2.x: plugin tables are merged key by key, so the drop-in holds only the `arch`
 *   runtime (and, with `--default`, `default_runtime_name`, which an imported file may set in
 *   both generations). Its version must be the main file's: 2.x migrates version 2 plugin
 *   tables (`io.containerd.grpc.v1.cri` → `io.containerd.cri.v1.runtime`) only when the merged
 *   version (the last non-zero `version` read) is still 2, so a version 3 drop-in under a
 *   version 2 config.toml would silently drop the user's CRI settings.
 * A missing config.toml is created with `version` (2 for containerd 1.x or an unknown one, 3
 * for 2.x) and `imports` only.
 * The `arch` runtime copies the node's runc runtime (its options such as `SystemdCgroup`),
 * with `runtime_type = "io.containerd.runc.v2"` and `options.BinaryName` = arch-runc.
 */

import { parse, stringify } from "smol-toml";
import { errorMessage, UsageError } from "../util/errors.ts";
import { type FileChange, readText } from "./changes.ts";

/** Default paths of the containerd target. */
export const CONTAINERD_DEFAULTS = {
  config: "/etc/containerd/config.toml",
  dropIn: "/etc/containerd/conf.d/arch.toml",
} as const;

/** The CRI plugin whose table holds the runtimes, per config version. */
export const CRI_PLUGIN = { 2: "io.containerd.grpc.v1.cri", 3: "io.containerd.cri.v1.runtime" } as const;

type Table = Record<string, unknown>;

/** Options of {@link containerdDropIn}. */
export interface ContainerdDropInOptions {
  /** Absolute path of arch-runc (the runtime's `BinaryName`). */
  readonly archRunc: string;
  /** 2: containerd 1.7 format; 3: containerd 2.x. */
  readonly configVersion: 2 | 3;
  /** Make `arch` the CRI default runtime. */
  readonly makeDefault: boolean;
  /** The node's runc runtime table, copied into the `arch` runtime (BinaryName and runtime_type replaced). */
  readonly runcRuntime?: Table;
  /** containerd 1.x: the user's whole CRI plugin table, which the drop-in replaces (see the module doc). */
  readonly criBase?: Table;
}

const isTable = (v: unknown): v is Table => typeof v === "object" && v !== null && !Array.isArray(v);
const clone = <T>(v: T): T => structuredClone(v);

function sub(t: Table, key: string): Table {
  const v = t[key];
  if (isTable(v)) return v;
  const n: Table = {};
  t[key] = n;
  return n;
}

/** The `arch` runtime table: the node's runc runtime with arch-runc as its binary. */
export function archRuntime(archRunc: string, runcRuntime: Table = {}): Table {
  const runtime = clone(runcRuntime);
  runtime.runtime_type = "io.containerd.runc.v2";
  const options = isTable(runtime.options) ? runtime.options : {};
  runtime.options = { ...options, BinaryName: archRunc };
  return runtime;
}

/**
 * The text of the drop-in: a TOML file of `configVersion` with the `arch` runtime (and, with
 * `makeDefault`, `default_runtime_name = "arch"`). Pure.
 *
 * @example
 * ```ts
 * import { containerdDropIn } from "./containerd.ts";
 * const text = containerdDropIn({ archRunc: "/usr/local/bin/arch-runc", configVersion: 3, makeDefault: false });
 * if (!text.includes('[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.arch.options]')) throw new Error();
 * if (!text.includes('BinaryName = "/usr/local/bin/arch-runc"')) throw new Error();
 * ```
 */
export function containerdDropIn(opts: ContainerdDropInOptions): string {
  if (!opts.archRunc.startsWith("/")) {
    throw new UsageError(`arch-runc path "${opts.archRunc}" is not absolute: pass an absolute --arch-runc`);
  }
  if (opts.configVersion === 3 && opts.criBase !== undefined) {
    throw new Error("containerdDropIn: criBase is for containerd 1.x (version 2) only");
  }
  const cri: Table = opts.criBase !== undefined ? clone(opts.criBase) : {};
  const containerd = sub(cri, "containerd");
  if (opts.makeDefault) containerd.default_runtime_name = "arch";
  sub(containerd, "runtimes").arch = archRuntime(opts.archRunc, opts.runcRuntime);
  const header = [
    "# Written by `arch install containerd` (ARCH): the `arch` runtime (runc through arch-runc).",
    "# Removed by `arch uninstall containerd`. Do not edit: re-run `arch install containerd`.",
    ...(opts.criBase !== undefined
      ? [
        "# containerd 1.7 replaces a whole plugin table with an imported one: this file carries a copy",
        "# of the CRI plugin table of the main configuration. After changing that table, re-run",
        "# `arch install containerd`.",
      ]
      : []),
  ];
  return `${header.join("\n")}\n${
    stringify({ version: opts.configVersion, plugins: { [CRI_PLUGIN[opts.configVersion]]: cri } })
  }\n`;
}

// ---------------------------------------------------------------------------------------
// Reading the user's configuration

function parseToml(path: string, text: string): Table {
  try {
    return parse(text) as Table;
  } catch (error) {
    const why = errorMessage(error).split("\n")[0];
    throw new UsageError(`containerd config "${path}" is not valid TOML (${why}): fix it, then run arch install again`);
  }
}

function dirname(path: string): string {
  return path.slice(0, path.lastIndexOf("/")) || "/";
}

/** Cleans a path like Go's `filepath.Clean` (absolute paths). */
function cleanPath(path: string): string {
  const out: string[] = [];
  for (const part of path.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") out.pop();
    else out.push(part);
  }
  return `${path.startsWith("/") ? "/" : ""}${out.join("/")}`;
}

/** An import entry of `parent` as containerd resolves it: a clean absolute path or glob. */
export function resolveImport(parent: string, entry: string): string {
  return cleanPath(entry.startsWith("/") ? entry : `${dirname(parent)}/${entry}`);
}

/** Whether `path` matches the `filepath.Glob` pattern `pattern` (`*`, `?`, `[...]`, no `/` crossing). */
export function globMatches(pattern: string, path: string): boolean {
  if (!/[*?[]/.test(pattern)) return pattern === path;
  let re = "";
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    if (c === "*") re += "[^/]*";
    else if (c === "?") re += "[^/]";
    else if (c === "[") {
      const end = pattern.indexOf("]", i + 1);
      if (end < 0) return false;
      let set = pattern.slice(i + 1, end);
      if (set.startsWith("^")) set = `^${set.slice(1)}`;
      re += `[${set.replace(/\\/g, "\\\\")}]`;
      i = end;
    } else re += c.replace(/[.+^${}()|\\\]]/g, "\\$&");
  }
  return new RegExp(`^${re}$`).test(path);
}

function expand(pattern: string): string[] {
  if (!/[*?[]/.test(pattern)) return [pattern];
  const dir = dirname(pattern);
  if (/[*?[]/.test(dir)) return []; // globs in directory names: not followed (containerd would)
  try {
    return [...Deno.readDirSync(dir)].map((e) => `${dir}/${e.name}`).filter((p) => globMatches(pattern, p)).sort();
  } catch {
    return [];
  }
}

/** A configuration file containerd reads, in containerd's order. */
interface Loaded {
  readonly path: string;
  readonly config: Table;
}

/** Reads `main` and what it imports, in containerd's order, skipping `skip` (the drop-in). */
function loadAll(main: string, mainConfig: Table, skip: string): Loaded[] {
  const out: Loaded[] = [];
  const seen = new Set<string>();
  const pending: { path: string; config?: Table }[] = [{ path: main, config: mainConfig }];
  while (pending.length > 0) {
    const { path, config: given } = pending.shift()!;
    if (seen.has(path)) continue;
    seen.add(path);
    if (path === skip) continue;
    let config = given;
    if (config === undefined) {
      const text = readText(path);
      if (text === null) continue;
      config = parseToml(path, text);
    }
    out.push({ path, config });
    const imports = Array.isArray(config.imports) ? config.imports.filter((i) => typeof i === "string") : [];
    for (const entry of imports as string[]) {
      for (const p of expand(resolveImport(path, entry))) pending.push({ path: p });
    }
  }
  return out;
}

function deepMerge(to: Table, from: Table): Table {
  for (const [k, v] of Object.entries(from)) {
    const cur = to[k];
    to[k] = isTable(cur) && isTable(v) ? deepMerge(cur, v) : clone(v);
  }
  return to;
}

function path(t: unknown, ...keys: string[]): unknown {
  let cur = t;
  for (const k of keys) cur = isTable(cur) ? cur[k] : undefined;
  return cur;
}

/** containerd's major version from `containerd --version` output, `undefined` if not recognised. */
export function parseContainerdMajor(output: string): number | undefined {
  const m = /containerd\s+\S+\s+v?(\d+)\.\d+/.exec(output);
  return m ? Number(m[1]) : undefined;
}

/**
 * Adds `entry` to the top-level `imports` array of a TOML text with a minimal edit (one
 * element, or one `imports = [...]` line after `version`). Pure.
 *
 * @example
 * ```ts
 * import { addImport } from "./containerd.ts";
 * if (addImport('version = 2\n[grpc]\n', "/x.toml") !== 'version = 2\nimports = ["/x.toml"]\n[grpc]\n') throw new Error();
 * if (addImport('imports = ["/a.toml"]\n', "/x.toml") !== 'imports = ["/a.toml", "/x.toml"]\n') throw new Error();
 * ```
 */
export function addImport(text: string, entry: string): string {
  const quoted = JSON.stringify(entry);
  const span = importsSpan(text);
  if (span !== undefined) {
    const inner = text.slice(span.open + 1, span.close);
    const body = inner.replace(/(\s|#[^\n]*)*$/, "");
    const trailingComma = /,\s*$/.test(body);
    const sep = body.trim() === "" || trailingComma ? "" : ", ";
    const insertAt = span.open + 1 + body.length;
    return text.slice(0, insertAt) + sep + (trailingComma ? ` ${quoted}` : quoted) + text.slice(insertAt);
  }
  const lines = text.split("\n");
  const firstTable = lines.findIndex((l) => /^\s*\[/.test(l));
  const top = firstTable < 0 ? lines.length : firstTable;
  const version = lines.slice(0, top).findIndex((l) => /^\s*version\s*=/.test(l));
  const at = version >= 0
    ? version + 1
    : firstTable >= 0
    ? firstTable
    : text.endsWith("\n")
    ? lines.length - 1
    : lines.length;
  lines.splice(at, 0, `imports = [${quoted}]`);
  return lines.join("\n");
}

/**
 * Removes `entry` from the top-level `imports` array (the line, if it then is
 * `imports = []` and `removeEmpty`). Pure; the text unchanged if the entry is not there.
 */
export function removeImport(text: string, entry: string, removeEmpty = true): string {
  const span = importsSpan(text);
  if (span === undefined) return text;
  const quoted = JSON.stringify(entry);
  const inner = text.slice(span.open + 1, span.close);
  const idx = inner.indexOf(quoted);
  if (idx < 0) return text;
  let start = idx, end = idx + quoted.length;
  const after = /^\s*,[ \t]*/.exec(inner.slice(end));
  if (after) end += after[0].length;
  else {
    const before = /,\s*$/.exec(inner.slice(0, start));
    if (before) start -= before[0].length;
  }
  const newInner = inner.slice(0, start) + inner.slice(end);
  if (removeEmpty && newInner.trim() === "") {
    const lineStart = text.lastIndexOf("\n", span.keyStart) + 1;
    let lineEnd = text.indexOf("\n", span.close);
    lineEnd = lineEnd < 0 ? text.length : lineEnd + 1;
    return text.slice(0, lineStart) + text.slice(lineEnd);
  }
  return text.slice(0, span.open + 1) + newInner + text.slice(span.close);
}

/** Where the top-level `imports = [ ... ]` array is: the key, `[` and `]` offsets. */
function importsSpan(text: string): { keyStart: number; open: number; close: number } | undefined {
  const firstTable = /^\s*\[/m.exec(text)?.index ?? text.length;
  const m = /^[ \t]*imports[ \t]*=[ \t]*\[/m.exec(text);
  if (m === null || m.index >= firstTable) return undefined;
  const open = m.index + m[0].length - 1;
  let i = open + 1;
  while (i < text.length) {
    const c = text[i]!;
    if (c === '"' || c === "'") {
      const end = c === '"' ? /^"(?:[^"\\\n]|\\.)*"/.exec(text.slice(i)) : /^'[^'\n]*'/.exec(text.slice(i));
      if (end === null) return undefined;
      i += end[0].length;
      continue;
    }
    if (c === "#") {
      const nl = text.indexOf("\n", i);
      i = nl < 0 ? text.length : nl;
      continue;
    }
    if (c === "]") return { keyStart: m.index, open, close: i };
    i++;
  }
  return undefined;
}

/** What {@link planContainerd} needs. */
export interface ContainerdOptions {
  readonly config: string;
  readonly dropIn: string;
  readonly archRunc: string;
  readonly makeDefault: boolean;
  /** containerd's major version (from `containerd --version`), `undefined` if unknown. */
  readonly containerdMajor: number | undefined;
}

/** The changes of `arch install containerd` and notes for the user. */
export interface ContainerdPlan {
  readonly changes: FileChange[];
  readonly notes: string[];
  readonly configVersion: 2 | 3;
}

/**
 * Plans `arch install containerd`: the drop-in and, if needed, the import in config.toml.
 * Reads the configuration files; writes nothing. Throws a {@link UsageError} (nothing
 * changed) on a config it cannot use.
 */
export function planContainerd(opts: ContainerdOptions): ContainerdPlan {
  if (!opts.config.startsWith("/") || !opts.dropIn.startsWith("/")) {
    throw new UsageError(`containerd paths must be absolute: got "${opts.config}" and "${opts.dropIn}"`);
  }
  const text = readText(opts.config);
  const main = text === null ? {} : parseToml(opts.config, text);
  const fileVersion = typeof main.version === "number" ? main.version : undefined;
  if (text !== null && text.trim() !== "" && fileVersion !== 2 && fileVersion !== 3) {
    throw new UsageError(
      `containerd config "${opts.config}" has version ${fileVersion ?? "1 (no version key)"}, ARCH supports 2 and 3: ` +
        `convert it with "containerd config migrate" first`,
    );
  }
  const major = opts.containerdMajor;
  const notes: string[] = [];
  if (major === 1 && fileVersion === 3) {
    notes.push(
      `warning: "${opts.config}" has version 3, which only containerd 2.x reads (the containerd asked is 1.x)`,
    );
  }
  // The drop-in has the main file's version: containerd 2.x migrates plugin tables of a
  // version 2 configuration only while the merged version is still 2, so a version 3 drop-in
  // would make it ignore the user's version 2 CRI settings.
  const configVersion: 2 | 3 = fileVersion === 2 || fileVersion === 3
    ? fileVersion
    : major !== undefined && major >= 2
    ? 3
    : 2;
  // containerd 1.x replaces a whole plugin table with an imported one; 2.x merges key by key
  // (a version 3 file is read by 2.x only). A copy of the table is right for both.
  const replaces = configVersion === 2 && (major === undefined || major < 2);
  if (major === undefined) {
    notes.push(`containerd's version is unknown (no containerd on PATH): wrote a version ${configVersion} drop-in`);
  }

  const loaded = loadAll(opts.config, main, opts.dropIn);
  // The node's CRI table as containerd sees it (without the drop-in).
  let criBase: Table = {};
  let runtimes: Table = {};
  let defaultName: string | undefined;
  for (const { config } of loaded) {
    const v2 = path(config, "plugins", CRI_PLUGIN[2]);
    const v3 = path(config, "plugins", CRI_PLUGIN[3]);
    if (isTable(v2)) {
      criBase = replaces ? clone(v2) : deepMerge(criBase, v2);
      const rt = path(v2, "containerd", "runtimes");
      runtimes = replaces ? (isTable(rt) ? clone(rt) : {}) : deepMerge(runtimes, isTable(rt) ? rt : {});
      const d = path(v2, "containerd", "default_runtime_name");
      if (replaces) defaultName = typeof d === "string" ? d : undefined;
      else if (typeof d === "string") defaultName = d;
    }
    if (isTable(v3) && !replaces) {
      const rt = path(v3, "containerd", "runtimes");
      if (isTable(rt)) runtimes = deepMerge(runtimes, rt);
      const d = path(v3, "containerd", "default_runtime_name");
      if (typeof d === "string") defaultName = d;
    }
  }
  const runcName = defaultName !== undefined && defaultName !== "arch" && isTable(runtimes[defaultName])
    ? defaultName
    : "runc";
  const runc = isTable(runtimes[runcName]) ? runtimes[runcName] as Table : {};
  const dropIn = containerdDropIn({
    archRunc: opts.archRunc,
    configVersion,
    makeDefault: opts.makeDefault,
    runcRuntime: runc,
    ...(replaces ? { criBase } : {}),
  });
  const changes: FileChange[] = [];

  // Is the drop-in read? By the main file's imports or an imported file's.
  const covering = loaded.find(({ path: p, config }) =>
    Array.isArray(config.imports) &&
    config.imports.some((i) => typeof i === "string" && globMatches(resolveImport(p, i), opts.dropIn))
  );
  if (covering === undefined) {
    const after = text === null
      ? `version = ${configVersion}\nimports = [${JSON.stringify(opts.dropIn)}]\n`
      : addImport(text, opts.dropIn);
    const check = parseToml(opts.config, after);
    const { imports: importsAfter, ...restAfter } = check;
    const { imports: importsBefore, ...restBefore } = main;
    const expected = [...(Array.isArray(importsBefore) ? importsBefore : []), opts.dropIn];
    if (
      text !== null &&
      (JSON.stringify(restAfter) !== JSON.stringify(restBefore) ||
        JSON.stringify(importsAfter) !== JSON.stringify(expected))
    ) {
      throw new UsageError(
        `cannot add the drop-in to "imports" in "${opts.config}" safely: add "${opts.dropIn}" to its imports by hand`,
      );
    }
    changes.push({ target: "containerd", path: opts.config, before: text, after, mode: 0o644 });
  }
  if (replaces) {
    // Files read after the drop-in that set the CRI table would replace it (containerd 1.7).
    const order = loaded.map((l) => l.path);
    const later = order.slice(order.indexOf(covering?.path ?? opts.config) + 1)
      .filter((p) => isTable(path(loaded.find((l) => l.path === p)?.config, "plugins", CRI_PLUGIN[2])));
    if (later.length > 0) {
      notes.push(
        `warning: ${later.join(", ")} may be read after the drop-in and replace its CRI table (containerd 1.7)`,
      );
    }
  }
  changes.push({ target: "containerd", path: opts.dropIn, before: readText(opts.dropIn), after: dropIn, mode: 0o644 });
  return { changes, notes, configVersion };
}

/**
 * Plans the revert of config.toml when it changed since the install (the recorded bytes no
 * longer apply): remove the drop-in's import, or the whole file if ARCH created it and it
 * holds nothing else.
 */
export function revertContainerdConfig(current: string, dropIn: string, createdByArch: boolean): string | null {
  const reverted = removeImport(current, dropIn);
  if (createdByArch && /^\s*(version\s*=\s*\d+\s*)?$/.test(reverted)) return null;
  return reverted;
}
