/**
 * The change engine of `arch install` / `arch uninstall`, in a temporary directory: the unified
 * diff, atomic writes that keep mode and owner, the root-only install record with the original
 * bytes, a second install that changes nothing, and an uninstall that puts back exactly what
 * was there (and removes the directories it made); plus the CLI's revert by meaning of a
 * daemon.json someone changed after the install.
 */

import { deepEqual as assertEquals, ok, rejects } from "node:assert/strict";
import {
  applyInstall,
  applyUninstall,
  type FileChange,
  loadRecord,
  originalText,
  unifiedDiff,
} from "../../src/install/changes.ts";
import { install, uninstall } from "../../src/cli/install.ts";
import { systemdRuns } from "../../src/install/systemd.ts";
import { watchUnitText } from "../../src/watch/unit.ts";

Deno.test("unifiedDiff", async (t) => {
  await t.step("equal: empty", () => assertEquals(unifiedDiff("/f", "a\n", "a\n"), ""));
  await t.step("new file and removed file", () => {
    assertEquals(unifiedDiff("/f", null, "a\nb\n"), "--- /dev/null\n+++ /f\n@@ -0,0 +1,2 @@\n+a\n+b\n");
    assertEquals(unifiedDiff("/f", "a\n", null), "--- /f\n+++ /dev/null\n@@ -1,1 +0,0 @@\n-a\n");
  });
  await t.step("hunks with three lines of context, far changes in separate hunks", () => {
    const a = Array.from({ length: 20 }, (_, i) => `l${i + 1}`);
    const b = [...a];
    b[1] = "X";
    b[17] = "Y";
    const d = unifiedDiff("/f", a.join("\n") + "\n", b.join("\n") + "\n");
    assertEquals(d.match(/^@@/gm)?.length, 2, d);
    ok(d.includes("@@ -1,5 +1,5 @@\n l1\n-l2\n+X\n l3\n l4\n l5\n"), d);
    ok(d.includes("@@ -15,6 +15,6 @@\n l15\n l16\n l17\n-l18\n+Y\n l19\n l20\n"), d);
  });
  await t.step("a missing final newline is marked", () => {
    ok(unifiedDiff("/f", "a", "a\n").includes("\\ No newline at end of file"));
  });
});

Deno.test("applyInstall / applyUninstall round trip", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "arch-install-changes-" });
  try {
    const record = `${dir}/state/install.json`;
    const existing = `${dir}/etc/app.conf`;
    Deno.mkdirSync(`${dir}/etc`);
    Deno.writeTextFileSync(existing, "original\n");
    Deno.chmodSync(existing, 0o640);
    const created = `${dir}/etc/new/deep/arch.conf`;
    const changes: FileChange[] = [
      { target: "t", path: existing, before: "original\n", after: "changed\n" },
      { target: "t", path: created, before: null, after: "ours\n", mode: 0o644 },
    ];
    assertEquals((await applyInstall(changes, record)).changed, [existing, created]);
    assertEquals(Deno.readTextFileSync(existing), "changed\n");
    assertEquals(Deno.statSync(existing).mode! & 0o777, 0o640, "mode kept");
    assertEquals(Deno.statSync(record).mode! & 0o777, 0o600, "record root-only");
    assertEquals(Deno.statSync(`${dir}/state`).mode! & 0o777, 0o700);
    const entries = loadRecord(record).entries;
    assertEquals(entries.map((e) => [e.path, originalText(e)]), [[existing, "original\n"], [created, null]]);
    assertEquals(entries[1]!.createdDirs, [`${dir}/etc/new/deep`, `${dir}/etc/new`]);
    ok(![...Deno.readDirSync(`${dir}/etc`)].some((e) => e.name.includes(".arch-")), "no temporary file left");

    // A second change of the same file keeps the first original.
    await applyInstall([{ target: "t", path: existing, before: "changed\n", after: "changed twice\n" }], record);
    assertEquals(originalText(loadRecord(record).entries[0]!), "original\n");

    applyUninstall("t", [
      { target: "t", path: existing, before: "changed twice\n", after: "original\n" },
      { target: "t", path: created, before: "ours\n", after: null },
    ], record);
    assertEquals(Deno.readTextFileSync(existing), "original\n");
    assertEquals(Deno.statSync(existing).mode! & 0o777, 0o640);
    assertEquals([...Deno.readDirSync(`${dir}/etc`)].map((e) => e.name), ["app.conf"], "made directories removed");
    ok(
      !Deno.statSync(`${dir}/state`).isFile && [...Deno.readDirSync(`${dir}/state`)].length === 0,
      "empty record removed",
    );
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("arch uninstall docker after the user changed daemon.json: only ARCH's part is removed", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "arch-install-docker-" });
  const log = console.log;
  const lines: string[] = [];
  console.log = (s: string) => lines.push(s);
  try {
    const config = `${dir}/daemon.json`;
    const record = `${dir}/install.json`;
    Deno.writeTextFileSync(config, '{\n  "default-runtime": "runc"\n}\n');
    const opts = { dockerConfig: config, archRunc: "/opt/arch-runc", record, default: true };
    assertEquals(await install(["docker"], opts), 0);
    const value = JSON.parse(Deno.readTextFileSync(config));
    value["log-level"] = "debug"; // the admin's own change after the install
    Deno.writeTextFileSync(config, JSON.stringify(value, null, 2) + "\n");
    assertEquals(await uninstall(["docker"], { record }), 0);
    assertEquals(JSON.parse(Deno.readTextFileSync(config)), { "default-runtime": "runc", "log-level": "debug" });
    ok(lines.some((l) => l.includes("changed since the install")), lines.join("\n"));
  } finally {
    console.log = log;
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("arch install watch without systemd: the unit is written and the commands printed; --json", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "arch-install-watch-" });
  const log = console.log;
  const lines: string[] = [];
  console.log = (s: string) => lines.push(s);
  try {
    const unit = `${dir}/arch-watch.service`;
    const record = `${dir}/install.json`;
    const opts = { watchUnit: unit, record, arch: "/usr/local/bin/arch", provider: "aws", json: true };
    assertEquals(await install(["watch"], opts), 0);
    assertEquals(Deno.readTextFileSync(unit), watchUnitText("/usr/local/bin/arch", "aws"));
    const [report] = JSON.parse(lines.pop()!);
    assertEquals([report.target, report.changed, report.dryRun], ["watch", [unit], false]);
    ok(report.diff.startsWith(`--- /dev/null\n+++ ${unit}\n`));
    if (!systemdRuns()) {
      ok(report.notes.some((n: string) => n.includes('"systemctl enable --now arch-watch.service"')), report.notes);
    }
    assertEquals(await uninstall(["watch"], { record }), 0);
    assertEquals([...Deno.readDirSync(dir)].length, 0);
    await rejects(() => install(["watch"], { ...opts, provider: "mars" }), /provider "mars"/);
    await rejects(() => install([], {}), /no target given/);
    await rejects(() => install(["crio"], {}), /unknown target "crio"/);
    const docker = { dockerConfig: `${dir}/daemon.json`, record, archRunc: "/usr/sbin/runc" };
    await rejects(() => install(["docker"], docker), /is the system's runc, not ARCH's/);
    assertEquals([...Deno.readDirSync(dir)].length, 0, "a refusal changes nothing");
  } finally {
    console.log = log;
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("arch uninstall containerd after the user edited config.toml: only the import is taken out", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "arch-install-ctd-" });
  const log = console.log;
  console.log = () => {};
  try {
    const config = `${dir}/config.toml`;
    const record = `${dir}/install.json`;
    Deno.writeTextFileSync(config, 'version = 3\nroot = "/r"\n');
    const opts = { containerdConfig: config, containerd: `${dir}/no-containerd`, archRunc: "/opt/arch-runc", record };
    assertEquals(await install(["containerd"], opts), 0);
    assertEquals(Deno.readTextFileSync(config), `version = 3\nimports = ["${dir}/conf.d/arch.toml"]\nroot = "/r"\n`);
    Deno.writeTextFileSync(config, Deno.readTextFileSync(config) + 'state = "/s"\n'); // the admin's edit
    assertEquals(await uninstall(["containerd"], { record }), 0);
    assertEquals(Deno.readTextFileSync(config), 'version = 3\nroot = "/r"\nstate = "/s"\n');
    assertEquals([...Deno.readDirSync(dir)].map((e) => e.name), ["config.toml"]);
  } finally {
    console.log = log;
    Deno.removeSync(dir, { recursive: true });
  }
});
