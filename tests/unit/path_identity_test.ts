/**
 * Paths are compared as identities, never as strings: the node layout that broke ARCH on every
 * standard Docker node (`/var/run` → `/run`, Docker's default exec root `/var/run/docker`),
 * rebuilt in a temporary directory.
 */

import { deepEqual as assertEquals, ok } from "node:assert/strict";
import { isWithin, resolvedPath, samePath } from "../../src/util/paths.ts";
import { describesRuncContainer } from "../../src/registry/unprotected.ts";
import { mountAt } from "../../src/util/mounts.ts";

/** `<tmp>/run` and `<tmp>/var/run` → `../run`, as on Debian, Ubuntu and Amazon Linux. */
function nodeLayout(): { top: string; run: string; varRun: string; [Symbol.dispose](): void } {
  const top = Deno.realPathSync(Deno.makeTempDirSync({ prefix: "arch-layout-" }));
  Deno.mkdirSync(`${top}/run`);
  Deno.mkdirSync(`${top}/var`);
  Deno.symlinkSync("../run", `${top}/var/run`);
  return {
    top,
    run: `${top}/run`,
    varRun: `${top}/var/run`,
    [Symbol.dispose]: () => Deno.removeSync(top, { recursive: true }),
  };
}

Deno.test("samePath and isWithin see through /var/run -> /run", async (t) => {
  using l = nodeLayout();
  Deno.mkdirSync(`${l.run}/docker/moby/c1`, { recursive: true });
  Deno.mkdirSync(`${l.run}/docker/moby/c2`, { recursive: true });
  const cases: [string, string, boolean][] = [
    [`${l.varRun}/docker/moby/c1`, `${l.run}/docker/moby/c1`, true],
    [`${l.varRun}/docker/moby/c1/`, `${l.run}//docker/moby/c1`, true],
    [`${l.varRun}/docker/moby/c1`, `${l.run}/docker/moby/c2`, false],
    // Gone on both sides: the resolved spellings decide.
    [`${l.varRun}/docker/gone`, `${l.run}/docker/gone`, true],
    // One exists, the other not: never the same.
    [`${l.varRun}/docker/moby/c1`, `${l.run}/docker/gone`, false],
  ];
  for (const [a, b, same] of cases) {
    await t.step(`${a.slice(l.top.length)} vs ${b.slice(l.top.length)}`, () => assertEquals(samePath(a, b), same));
  }
  ok(isWithin(`${l.varRun}/docker/moby/c1`, `${l.run}/docker`));
  ok(isWithin(`${l.run}/docker/moby`, `${l.varRun}/docker/`));
  ok(!isWithin(`${l.run}/dockerx`, `${l.varRun}/docker`));
  assertEquals(resolvedPath(`${l.varRun}/docker/`), `${l.run}/docker`);
});

Deno.test("a record made through /var/run is the container runc labels with /run (not a stale record)", () => {
  using l = nodeLayout();
  const root = `${l.varRun}/docker/runtime-runc/moby`;
  const bundle = `${l.varRun}/docker/containerd/daemon/io.containerd.runtime.v2.task/moby/c1`;
  Deno.mkdirSync(`${root}/c1`, { recursive: true });
  Deno.mkdirSync(bundle, { recursive: true });
  // runc chdirs into the bundle and records the working directory: the resolved path.
  const label = `bundle=${Deno.realPathSync(bundle)}`;
  ok(label.startsWith(`bundle=${l.run}/`), "the label is the resolved path");
  Deno.writeTextFileSync(`${root}/c1/state.json`, JSON.stringify({ config: { labels: [label] } }));
  ok(describesRuncContainer(bundle, root, "c1"), "the engine's spelling of its own bundle matches runc's");

  // A later container of the id in a bundle directory made anew is another container.
  Deno.removeSync(bundle, { recursive: true });
  Deno.mkdirSync(bundle);
  Deno.mkdirSync(`${l.run}/elsewhere`);
  Deno.writeTextFileSync(
    `${root}/c1/state.json`,
    JSON.stringify({ config: { labels: [`bundle=${l.run}/elsewhere`] } }),
  );
  ok(!describesRuncContainer(bundle, root, "c1"), "a record of another bundle is stale");
});

Deno.test("mountAt resolves the path it is asked about", () => {
  using l = nodeLayout();
  Deno.mkdirSync(`${l.run}/efs`);
  Deno.symlinkSync(`${l.run}/efs`, `${l.top}/efs`);
  const mountinfo = `36 1 0:40 / ${l.run}/efs rw,relatime shared:1 - fuse.sshfs srv:/x rw\n`;
  assertEquals(mountAt(`${l.top}/efs`, mountinfo)?.fstype, "fuse.sshfs");
  assertEquals(mountAt(`${l.varRun}/efs/`, mountinfo)?.fstype, "fuse.sshfs");
  assertEquals(mountAt(`${l.run}`, mountinfo), undefined);
});
