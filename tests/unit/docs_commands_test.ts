/**
 * The documentation names only commands and options that exist, and links only to files that exist:
 * - every `arch <command>` in a code span or code block of README.md and docs/*.md is a visible
 *   command of the operator CLI (`buildProgram`) or one of `mod.ts`'s roles, and its `--help` works;
 * - every `--flag` written directly after `arch <command>` (in a code span or on a code block's
 *   command line, up to a comment, pipe, redirection or `&&`) is in that command's `--help`;
 * - every relative markdown link points to an existing file;
 * - README.md stays a short first read (at most 200 lines).
 */

import { deepStrictEqual, ok } from "node:assert/strict";
import { buildProgram } from "../../src/cli/main.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const MOD = `${ROOT}mod.ts`;
const README_MAX_LINES = 200;

/** A documentation file: its path relative to the repository and its text. */
interface Doc {
  readonly path: string;
  readonly text: string;
}

/** README.md and every docs/*.md. */
function readDocs(): Doc[] {
  const paths = ["README.md"];
  for (const entry of Deno.readDirSync(`${ROOT}docs`)) {
    if (entry.isFile && entry.name.endsWith(".md")) paths.push(`docs/${entry.name}`);
  }
  return paths.sort().map((path) => ({ path, text: Deno.readTextFileSync(`${ROOT}${path}`) }));
}

/** Where a snippet of code comes from, for messages. */
interface Snippet {
  readonly where: string;
  readonly code: string;
}

const FENCE = /^\s*(```|~~~)/;

/**
 * A document's code: each logical line of its fenced blocks (`\` continuations joined) and
 * each inline code span of the rest (line breaks inside a span are spaces), and its prose
 * (the text outside fenced blocks, for the links).
 */
function splitDoc(doc: Doc): { snippets: Snippet[]; prose: { line: number; text: string }[] } {
  const snippets: Snippet[] = [];
  const prose: { line: number; text: string }[] = [];
  const lines = doc.text.split("\n");
  let fence: string | undefined;
  let pending = "";
  let pendingLine = 0;
  for (const [i, line] of lines.entries()) {
    const marker = FENCE.exec(line)?.[1];
    if (fence === undefined) {
      if (marker !== undefined) {
        fence = marker;
        continue;
      }
      prose.push({ line: i + 1, text: line });
      continue;
    }
    if (marker === fence && line.trim() === marker) {
      fence = undefined;
      continue;
    }
    if (pending === "") pendingLine = i + 1;
    if (line.trimEnd().endsWith("\\")) {
      pending += line.trimEnd().slice(0, -1) + " ";
      continue;
    }
    snippets.push({ where: `${doc.path}:${pendingLine}`, code: pending + line });
    pending = "";
  }
  // Inline code spans of the prose; a span may run over a line break.
  const text = prose.map((p) => p.text).join("\n");
  for (const m of text.matchAll(/(`+)([^`]+?)\1(?!`)/g)) {
    const line = prose[text.slice(0, m.index).split("\n").length - 1]?.line ?? 0;
    snippets.push({ where: `${doc.path}:${line}`, code: m[2]!.replace(/\s+/g, " ").trim() });
  }
  return { snippets, prose };
}

/** One `arch <command> ...` found in the docs, with the `--flags` written right after it. */
interface Use {
  readonly where: string;
  readonly command: string;
  readonly flags: readonly string[];
}

/**
 * `arch` (or a path ending in `/arch`) followed by a command word, not as the value of
 * `--runtime` (`docker run --runtime arch ...`), and not inside another name (`arch-runc`,
 * `<arch>`, `"arch"`).
 */
const INVOCATION = /(?<![\w<>"'.-])(?:\/[\w./-]*\/)?arch[ \t]+([a-z][a-z0-9-]*)/g;
/** Where a command line's arguments end. */
const END_OF_ARGS = /^(#.*|\||\|\||&&|;|>|>>|2>&1|2>|<)$/;

/** Every `arch <command>` in `snippet`, with the flags that follow it. */
function usesIn(snippet: Snippet): Use[] {
  const out: Use[] = [];
  for (const m of snippet.code.matchAll(INVOCATION)) {
    const before = snippet.code.slice(0, m.index);
    if (/--runtime[ =]$/.test(before)) continue;
    const flags: string[] = [];
    const rest = snippet.code.slice(m.index + m[0].length).trim();
    for (const raw of rest === "" ? [] : rest.split(/[ \t]+/)) {
      if (END_OF_ARGS.test(raw) || raw.startsWith("#")) break;
      const token = raw.replace(/^[[(]+/, "").replace(/[\]),.;:]+$/, "").split("=")[0]!;
      if (/^--[a-z][a-z0-9-]*$/.test(token)) flags.push(token);
    }
    out.push({ where: snippet.where, command: m[1]!, flags });
  }
  return out;
}

/** The roles `mod.ts` dispatches on before the CLI (`arch runc-wrapper`, `arch hook`, ...). */
function roles(): Set<string> {
  const source = Deno.readTextFileSync(MOD);
  return new Set([...source.matchAll(/role === "([a-z-]+)"/g)].map((m) => m[1]!));
}

/** The operator CLI's visible commands. */
function visibleCommands(): Set<string> {
  const commands = buildProgram(() => {}).commands.filter((c) => !(c as unknown as { _hidden: boolean })._hidden);
  return new Set(commands.map((c) => c.name()));
}

/** `arch <command> --help`: its output, or a failure with stderr. */
async function help(command: string): Promise<{ ok: boolean; text: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MOD, command, "--help"],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decode = (b: Uint8Array) => new TextDecoder().decode(b);
  return { ok: out.success, text: out.success ? decode(out.stdout) : decode(out.stderr) };
}

const docs = readDocs();
const split = docs.map((doc) => ({ doc, ...splitDoc(doc) }));
const uses = split.flatMap((s) => s.snippets.flatMap(usesIn));

Deno.test("every arch command the docs name exists, its --help works and shows the documented flags", async (t) => {
  const cli = visibleCommands();
  const known = roles();
  ok(known.has("runc-wrapper") && known.has("hook"), `roles found in mod.ts: ${[...known].join(", ")}`);
  const named = new Set(uses.map((u) => u.command));
  ok(named.size >= 8, `only ${named.size} commands found in the docs: ${[...named].join(", ")}`);

  const unknown = uses.filter((u) => !cli.has(u.command) && !known.has(u.command));
  deepStrictEqual(
    unknown.map((u) => `${u.where}: arch ${u.command}`),
    [],
    `not a command of buildProgram (${[...cli].join(", ")}) nor a role of mod.ts (${[...known].join(", ")})`,
  );

  // Each command's --help once, all at the same time.
  const commands = [...named].filter((c) => cli.has(c)).sort();
  const helps = new Map(await Promise.all(commands.map(async (c) => [c, await help(c)] as const)));
  for (const command of commands) {
    await t.step(`arch ${command}`, () => {
      const { ok: success, text } = helps.get(command)!;
      ok(success, `arch ${command} --help failed:\n${text}`);
      const missing = uses
        .filter((u) => u.command === command)
        .flatMap((u) => u.flags.map((flag) => ({ where: u.where, flag })))
        .filter(({ flag }) => !new RegExp(`(^|[\\s,])${flag}(?=[\\s,=<\\[]|$)`, "m").test(text));
      deepStrictEqual(
        missing.map(({ where, flag }) => `${where}: arch ${command} ${flag}`),
        [],
        `documented but not in "arch ${command} --help"`,
      );
    });
  }
});

Deno.test("every relative link of the docs points to an existing file", () => {
  const broken: string[] = [];
  let links = 0;
  for (const { doc, prose } of split) {
    const dir = doc.path.includes("/") ? doc.path.slice(0, doc.path.lastIndexOf("/") + 1) : "";
    for (const { line, text } of prose) {
      // Inline links `[text](target "title")` and reference definitions `[id]: target`; not inside code spans.
      const outsideCode = text.replace(/`[^`]*`/g, "");
      const targets = [
        ...[...outsideCode.matchAll(/\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g)].map((m) => m[1]!),
        ...[...outsideCode.matchAll(/^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)/g)].map((m) => m[1]!),
      ];
      for (const target of targets) {
        if (/^[a-z][a-z0-9+.-]*:/i.test(target) || target.startsWith("#")) continue; // a URL or an anchor
        links++;
        const path = decodeURIComponent(target.split("#")[0]!);
        const resolved = new URL(path, `file://${ROOT}${dir}`).pathname;
        try {
          Deno.statSync(resolved);
        } catch {
          broken.push(`${doc.path}:${line}: ${target}`);
        }
      }
    }
  }
  ok(links > 0, "no relative link found");
  deepStrictEqual(broken, [], "links to files that do not exist");
});

Deno.test(`README.md is at most ${README_MAX_LINES} lines`, () => {
  const readme = docs.find((d) => d.path === "README.md")!;
  const lines = readme.text.replace(/\n$/, "").split("\n").length;
  ok(lines <= README_MAX_LINES, `README.md has ${lines} lines`);
});
