/**
 * Host configuration trust rules (src/config/host.ts) and the schema's defaults and refusals
 * (src/config/host_schema.ts). Creating files owned by another uid needs root.
 */
import { deepEqual as assertEquals, ok } from "node:assert/strict";
import { readHostBasics, unsafeOwnership, unusableRunc } from "../../src/config/host.ts";
import { HostConfigSchema } from "../../src/config/host_schema.ts";

const isRoot = Deno.uid() === 0;

Deno.test("unsafeOwnership", async (t) => {
  await t.step("root 0644 is fine", () => assertEquals(unsafeOwnership("/x", { uid: 0, mode: 0o100644 }), undefined));
  await t.step("group-writable", () => ok(unsafeOwnership("/x", { uid: 0, mode: 0o100664 })?.includes("writable")));
  await t.step("world-writable", () => ok(unsafeOwnership("/x", { uid: 0, mode: 0o100666 })?.includes("mode 666")));
  await t.step("not root", () => ok(unsafeOwnership("/x", { uid: 1000, mode: 0o100600 })?.includes("uid 1000")));
});

Deno.test({
  name: "readHostBasics uses a root-owned file and ignores an unsafe one",
  ignore: !isRoot,
  fn: () => {
    const dir = Deno.makeTempDirSync();
    try {
      const path = `${dir}/config.json`;
      Deno.writeTextFileSync(path, JSON.stringify({ runc: "/usr/sbin/runc", stateDir: "/tmp/s", logFile: "/tmp/l" }));
      Deno.chmodSync(path, 0o644);
      const good = readHostBasics(path, []);
      assertEquals([good.stateDir, good.logFile, good.problems], ["/tmp/s", "/tmp/l", []]);
      Deno.chmodSync(path, 0o666);
      const bad = readHostBasics(path, []);
      assertEquals(bad.stateDir, "/run/arch");
      ok(bad.problems[0]?.startsWith("ignoring host configuration"));
      Deno.chmodSync(path, 0o644);
      Deno.chownSync(path, 65534, 65534);
      ok(readHostBasics(path, []).problems[0]?.includes("not root"));
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "unusableRunc refuses relative paths, scripts and ARCH itself",
  ignore: !isRoot,
  fn: () => {
    const dir = Deno.makeTempDirSync();
    try {
      ok(unusableRunc("runc", [])?.includes("not absolute"));
      ok(unusableRunc(`${dir}/missing`, [])?.includes("does not exist"));
      Deno.writeTextFileSync(`${dir}/shim`, '#!/bin/sh\nexec arch runc-wrapper "$@"\n', { mode: 0o755 });
      Deno.chmodSync(`${dir}/shim`, 0o755);
      ok(unusableRunc(`${dir}/shim`, [])?.includes("would run ARCH again"));
      const self = Deno.execPath();
      ok(unusableRunc(self, [self])?.includes("would run ARCH again"));
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});

Deno.test("a missing configuration means defaults", () => {
  const basics = readHostBasics("/nonexistent/arch.json", []);
  assertEquals([basics.stateDir, basics.problems], ["/run/arch", []]);
});

Deno.test("HostConfigSchema defaults and refusals", () => {
  const d = HostConfigSchema.parse({});
  assertEquals([d.stateDir, d.checkpointRoots, d.onRestoreFailure, d.restoreConsumed, d.secretFile], [
    "/run/arch",
    [], // only defaultCheckpointRoot, unless the admin lists more
    "fresh",
    "never",
    "/etc/arch/secret",
  ]);
  assertEquals(HostConfigSchema.safeParse({ restoreConsumed: true }).success, false);
  assertEquals(HostConfigSchema.safeParse({ scope: "a+b" }).success, false);
  assertEquals(HostConfigSchema.safeParse({ stateDir: "relative" }).success, false);
  assertEquals(HostConfigSchema.safeParse({ checkpointRoots: ["/a/../b"] }).success, false);
  assertEquals(HostConfigSchema.safeParse({ unknownField: 1 }).success, false);
});
