/**
 * The runc wrapper runs on every runc call: no npm package (zod, dax, commander) and no
 * `node:` module may be statically reachable from mod.ts; they are loaded by `import()`.
 */
import { deepEqual as assertEquals } from "node:assert/strict";

Deno.test("mod.ts statically reaches no npm or node: module", async () => {
  const root = new URL("../../", import.meta.url).pathname;
  const out = await new Deno.Command(Deno.execPath(), { args: ["info", "--json", "mod.ts"], cwd: root }).output();
  const info = JSON.parse(new TextDecoder().decode(out.stdout)) as {
    modules: {
      specifier: string;
      dependencies?: { specifier: string; code?: { specifier: string }; isDynamic?: boolean }[];
    }[];
  };
  const bySpecifier = new Map(info.modules.map((m) => [m.specifier, m]));
  const seen = new Set<string>();
  const stack = [new URL("mod.ts", `file://${root}`).href];
  while (stack.length > 0) {
    const spec = stack.pop()!;
    if (seen.has(spec)) continue;
    seen.add(spec);
    for (const dep of bySpecifier.get(spec)?.dependencies ?? []) {
      if (dep.code?.specifier !== undefined && dep.isDynamic !== true) stack.push(dep.code.specifier);
    }
  }
  const heavy = [...seen].filter((s) => s.startsWith("npm:") || s.startsWith("node:"));
  assertEquals(heavy, []);
  // and the walk did see the wrapper's modules
  assertEquals([...seen].some((s) => s.endsWith("/src/runc/handoff.ts")), true);
});
