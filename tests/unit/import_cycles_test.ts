/**
 * The tree has no import cycle: no module reaches itself through imports of any kind
 * (static, type-only or dynamic `import()`), from the program's entry (`mod.ts`), the dev
 * setup (`install.ts`) and the build scripts. A cycle means two modules that cannot be read,
 * tested or moved apart; the fix is to move what both need into a third module.
 */
import { deepEqual as assertEquals } from "node:assert/strict";

const root = new URL("../../", import.meta.url).pathname;

/** The module graph of `entries` as `deno info` resolves it: file → files it imports (all kinds). */
async function importGraph(entries: string[]): Promise<Map<string, string[]>> {
  const graph = new Map<string, string[]>();
  for (const entry of entries) {
    const out = await new Deno.Command(Deno.execPath(), { args: ["info", "--json", entry], cwd: root }).output();
    const info = JSON.parse(new TextDecoder().decode(out.stdout)) as {
      modules: { specifier: string; dependencies?: { code?: { specifier: string }; type?: { specifier: string } }[] }[];
    };
    for (const m of info.modules) {
      if (!m.specifier.startsWith("file://")) continue;
      const deps = (m.dependencies ?? []).flatMap((d) => [d.code?.specifier, d.type?.specifier])
        .filter((s): s is string => s?.startsWith("file://") === true);
      graph.set(
        m.specifier.slice(`file://${root}`.length),
        [...new Set(deps)].map((s) => s.slice(`file://${root}`.length)),
      );
    }
  }
  return graph;
}

/** The strongly connected components of more than one module (Tarjan), each sorted. */
function cycles(graph: Map<string, string[]>): string[][] {
  let next = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const found: string[][] = [];
  const visit = (v: string) => {
    index.set(v, next);
    low.set(v, next++);
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) === index.get(v)) {
      const component: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        component.push(w);
      } while (w !== v);
      if (component.length > 1 || (graph.get(v) ?? []).includes(v)) found.push(component.sort());
    }
  };
  for (const v of graph.keys()) if (!index.has(v)) visit(v);
  return found;
}

Deno.test("cycles() finds a cycle and ignores a chain (the check can fail)", () => {
  assertEquals(cycles(new Map([["a", ["b"]], ["b", ["c"]], ["c", ["a"]], ["d", ["a"]]])), [["a", "b", "c"]]);
  assertEquals(cycles(new Map([["a", ["b"]], ["b", ["c"]], ["c", []]])), []);
});

Deno.test("no import cycle in the program, the dev setup or the scripts", async () => {
  const graph = await importGraph([
    "mod.ts",
    "install.ts",
    "scripts/build.ts",
    "scripts/release.ts",
    "scripts/test.ts",
  ]);
  // the walk did read the tree (a broken `deno info` would find no cycle in an empty graph)
  assertEquals(graph.has("src/wrapper/wrapper.ts") && graph.has("src/cli/main.ts") && graph.size > 80, true);
  assertEquals(cycles(graph), []);
});
