/**
 * The runc wrapper runs on every runc call: no npm package (zod, commander, smol-toml) and no
 * `node:` module may be statically reachable from mod.ts; they are loaded by `import()`.
 */
import { deepEqual as assertEquals } from "node:assert/strict";

/** Every module `entry` reaches through static imports. */
async function staticClosure(entry: string): Promise<string[]> {
  const root = new URL("../../", import.meta.url).pathname;
  const out = await new Deno.Command(Deno.execPath(), { args: ["info", "--json", entry], cwd: root }).output();
  const info = JSON.parse(new TextDecoder().decode(out.stdout)) as {
    modules: {
      specifier: string;
      dependencies?: { specifier: string; code?: { specifier: string }; isDynamic?: boolean }[];
    }[];
  };
  const bySpecifier = new Map(info.modules.map((m) => [m.specifier, m]));
  const seen = new Set<string>();
  const stack = [new URL(entry, `file://${root}`).href];
  while (stack.length > 0) {
    const spec = stack.pop()!;
    if (seen.has(spec)) continue;
    seen.add(spec);
    for (const dep of bySpecifier.get(spec)?.dependencies ?? []) {
      if (dep.code?.specifier !== undefined && dep.isDynamic !== true) stack.push(dep.code.specifier);
    }
  }
  return [...seen];
}

const heavy = (modules: string[]) => modules.filter((s) => s.startsWith("npm:") || s.startsWith("node:"));

Deno.test("mod.ts statically reaches no npm or node: module", async () => {
  const seen = await staticClosure("mod.ts");
  assertEquals(heavy(seen), []);
  // and the walk did see the wrapper's modules
  assertEquals(seen.some((s) => s.endsWith("/src/wrapper/handoff.ts")), true);
});

Deno.test("start and delete of an ARCH container load no npm or node: module (zod is for create)", async () => {
  const seen = await staticClosure("src/wrapper/lifecycle.ts");
  assertEquals(heavy(seen), []);
  assertEquals(seen.some((s) => s.endsWith("/src/store/store.ts")), true);
});
