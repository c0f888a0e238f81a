/**
 * No program is spawned that the install plan does not provide. A fresh clone is not a fresh
 * machine: a program that happens to be on the CI machine (the docker CLI once was) must
 * still come from a package `install.ts` installs, or from an Essential package.
 */

import { ok } from "node:assert/strict";
import { PROGRAMS, resolveProgram, SEARCH_PATH } from "../../src/process/programs.ts";
import { ALL_PLANNED_PACKAGES, PREREQUISITE_PACKAGES } from "../../scripts/setup/plan.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const known = new Set(PROGRAMS.map((p) => p.name));

/** Spawn sites whose program is not a literal: what they run, and why that is covered. */
const DYNAMIC = new Map<string, string>([
  ["spec.cmd", "the one runner: its callers are scanned"],
  ["TOOLS", "tests/integration/tenant_test.ts: the tenant's tools, compiled from tests/fixtures/tenant_tools.c"],
  ["cmd", "a helper's parameter: its callers are scanned"],
  ["binary", "EmbeddedStack#daemon: the engine generation's containerd or dockerd (tests/harness/engines.ts)"],
  ["this.target.runc", "the configured real runc (the runc client, src/runc/client.ts)"],
  ["runcPath", "the configured real runc"],
  ["runc", "the configured real runc"],
  ["ctx.runc", "the configured real runc"],
  ["this.runc", "the configured real runc"],
  ["RUNC", "the system's runc"],
  ["this.engines.ctr", "the engine generation's ctr (tests/harness/engines.ts)"],
  ["this.engines.docker", "the engine generation's docker CLI (tests/harness/engines.ts)"],
  ["this.engines.runc", "the engine generation's runc (tests/harness/engines.ts)"],
  ["ARCH", "ARCH itself (dist/arch)"],
  ["this.arch", "ARCH itself (selfArch(): the exit watcher runs a container's requested checkpoint)"],
  ["ARCH_RUNC", "ARCH itself (dist/arch-runc)"],
  ["INSTALLED_ARCH", "ARCH itself, as the release file installs it on a node (release_test.ts)"],
  ["Deno.execPath()", "the pinned Deno"],
  ["`${dist}/arch`", "ARCH itself, just built"],
  ["`${prefix", "ARCH installed from the release artifact (tests/integration/release_test.ts)"],
  ["stack.engines.runc", "the engine generation's runc (tests/harness/engines.ts)"],
]);

function sources(dir: string): string[] {
  const out: string[] = [];
  for (const entry of Deno.readDirSync(dir)) {
    const path = `${dir}/${entry.name}`;
    if (entry.isDirectory && entry.name !== "node_modules") out.push(...sources(path));
    else if (entry.isFile && entry.name.endsWith(".ts")) out.push(path);
  }
  return out;
}

Deno.test("every spawned program is listed in src/process/programs.ts", () => {
  const files = [...["src", "tests", "scripts"].flatMap((d) => sources(`${ROOT}${d}`)), `${ROOT}install.ts`];
  const unknown: string[] = [];
  for (const file of files) {
    const text = Deno.readTextFileSync(file);
    const consts = new Map([...text.matchAll(/const (\w+) = "([^"]+)";/g)].map((m) => [m[1]!, m[2]!]));
    const sites = [
      ...text.matchAll(/\bcmd:\s*([^,}\n]+)/g),
      ...text.matchAll(/new Deno\.Command\(\s*([^,)\n]+\)?)/g),
      ...text.matchAll(/#daemon\(\s*([^,)\n]+)/g),
    ].map((m) => m[1]!.trim());
    for (const expr of sites) {
      if (/^(\w+:\s*)?string/.test(expr)) continue; // a type annotation
      const literal = /^"([^"]+)"$/.exec(expr)?.[1] ?? consts.get(expr);
      if (literal !== undefined ? !known.has(literal) : !DYNAMIC.has(expr)) {
        unknown.push(`${file.slice(ROOT.length)}: ${expr}`);
      }
    }
  }
  ok(
    unknown.length === 0,
    `add to PROGRAMS (and its package to the install plan) or to DYNAMIC: ${unknown.join("; ")}`,
  );
});

const run = async (cmd: string, args: string[]) => {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "null" }).output();
  return out.success ? new TextDecoder().decode(out.stdout) : undefined;
};

/** The package that owns `path` (dpkg records /bin or /usr/bin, whichever the package shipped). */
async function owner(path: string): Promise<string | undefined> {
  const real = Deno.realPathSync(path);
  const aliases = new Set([path, real]);
  for (const p of [path, real]) {
    if (/^\/usr\/s?bin\//.test(p)) aliases.add(p.slice(4));
    else if (/^\/s?bin\//.test(p)) aliases.add(`/usr${p}`);
  }
  for (const alias of aliases) {
    const out = await run("dpkg", ["-S", alias]);
    const line = out?.split("\n").find((l) => !l.startsWith("diversion ") && l.includes(": "));
    if (line !== undefined) return line.slice(0, line.lastIndexOf(": ")).split(", ")[0]!.split(":")[0];
  }
  return undefined;
}

Deno.test({
  name: "every program comes from a planned or Essential package",
  ignore: (await run("dpkg", ["--version"])) === undefined,
}, async (t) => {
  const planned = new Set([...ALL_PLANNED_PACKAGES, ...PREREQUISITE_PACKAGES]);
  const ci = Deno.env.get("CI") === "true";
  for (const program of PROGRAMS) {
    await t.step(program.name, async () => {
      if (program.onlyWhere !== undefined) return; // the node's own, run only where it is (see Program)
      const path = resolveProgram(program.name);
      if (path === undefined) {
        ok(!ci, `${program.name} is not on ${SEARCH_PATH}: the install plan does not provide it`);
        console.error(`  (${program.name} is not installed here: run install.ts)`);
        return;
      }
      const pkg = await owner(path);
      ok(pkg !== undefined, `${path} belongs to no Debian package`);
      const essential = (await run("dpkg-query", ["-W", "-f", "${Essential}", pkg]))?.trim() === "yes";
      ok(planned.has(pkg) || essential, `${path} comes from "${pkg}", which is neither planned nor Essential`);
    });
  }
});
