import { deepEqual as assertEquals, throws } from "node:assert/strict";
import { Registry } from "../../src/registry/registry.ts";

Deno.test("Registry puts, lists and removes records with private permissions", () => {
  const dir = Deno.makeTempDirSync();
  try {
    const registry = new Registry(dir);
    const record = { namespace: "moby", id: "abc", root: "/r/moby", bundle: "/b", key: "k", createdAt: "t" };
    registry.put(record);
    registry.put({ ...record, namespace: "default", id: "c1" });
    assertEquals(registry.get("moby", "abc"), record);
    assertEquals(registry.list().map((r) => `${r.namespace}/${r.id}`), ["default/c1", "moby/abc"]);
    assertEquals(Deno.statSync(registry.path("moby", "abc")).mode! & 0o777, 0o600);
    assertEquals(Deno.statSync(`${dir}/registry/moby`).mode! & 0o777, 0o700);
    registry.remove("moby", "abc");
    registry.remove("moby", "abc");
    assertEquals(registry.get("moby", "abc"), undefined);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("Registry refuses ids and namespaces that would escape", () => {
  const registry = new Registry("/tmp/none");
  throws(() => registry.path("..", "x"));
  throws(() => registry.path("moby", "../../etc/passwd"));
});

Deno.test("Registry.list skips a damaged record instead of failing every command that lists", () => {
  const dir = Deno.makeTempDirSync();
  try {
    const registry = new Registry(dir);
    registry.put({ namespace: "moby", id: "good", root: "/r/moby", bundle: "/b", key: "k", createdAt: "t" });
    Deno.writeTextFileSync(`${dir}/registry/moby/torn.json`, '{"namespace": "moby", "id": "to');
    assertEquals(registry.list().map((r) => r.id), ["good"]);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("a restored record's mark is runc's state file; none without one, for a fresh record, or once removed", () => {
  const dir = Deno.makeTempDirSync();
  try {
    const registry = new Registry(dir);
    const record = { namespace: "moby", id: "abc", root: `${dir}/runc/`, bundle: "/b", key: "k", createdAt: "t" };
    const mark = registry.restoredMark("moby", "abc");
    const state = `${dir}/runc/abc/state.json`;
    const same = () => {
      const [a, b] = [Deno.statSync(mark), Deno.statSync(state)];
      return a.ino === b.ino && a.dev === b.dev;
    };
    registry.put({ ...record, restored: true }); // runc has no state of it: no mark
    throws(() => Deno.statSync(mark));
    Deno.mkdirSync(`${dir}/runc/abc`, { recursive: true });
    Deno.writeTextFileSync(state, "{}");
    registry.put({ ...record, restored: true });
    assertEquals(same(), true);
    assertEquals(registry.list().map((r) => r.id), ["abc"]); // the mark is not a record
    registry.put({ ...record, restored: true }); // put again: linked again
    assertEquals(same(), true);
    registry.put(record); // a new container of the id, created fresh
    throws(() => Deno.statSync(mark));
    registry.put({ ...record, restored: true });
    registry.remove("moby", "abc");
    throws(() => Deno.statSync(mark));
    assertEquals(Deno.readTextFileSync(state), "{}"); // runc's state untouched
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
