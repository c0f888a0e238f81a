/**
 * The change engine of `arch install` / `arch uninstall`, in a temporary directory: the unified
 * diff, atomic writes that keep mode and owner, the root-only install record with the original
 * bytes, a second install that changes nothing, and an uninstall that puts back exactly what
 * was there (and removes the directories it made); plus the CLI's revert by meaning of a
 * daemon.json someone changed after the install; symlinked config files (changed where they
 * point, the link kept, restored exactly); ARCH's own files edited since the install (kept, and
 * said); and the one atomic writer (`util/atomic.ts`): planted symlinks never followed, the
 * target replaced whole, the mode exact whatever the umask.
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
import { writeFileAtomic } from "../../src/util/atomic.ts";

const existsSync = (path: string) => {
  try {
    Deno.lstatSync(path);
    return true;
  } catch {
    return false;
  }
};
import { systemdRuns } from "../../src/install/systemd.ts";
import { watchUnitText } from "../../src/spot/unit.ts";

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

Deno.test("writeFileAtomic: planted symlinks are never followed; the target is replaced whole; exact mode", async (t) => {
  const dir = Deno.makeTempDirSync({ prefix: "arch-atomic-" });
  try {
    const victim = `${dir}/victim`;
    Deno.writeTextFileSync(victim, "precious\n");
    Deno.chmodSync(victim, 0o600);
    const path = `${dir}/arch.prom`;
    await t.step(
      "symlinks at every predictable name (old temp names, the final name): only the final is replaced",
      () => {
        for (const name of [`${path}.${Deno.pid}.tmp`, `${path}.tmp-${Deno.pid}`, `${path}.tmp`, path]) {
          Deno.symlinkSync(victim, name);
        }
        writeFileAtomic(path, "new\n", { mode: 0o644 });
        assertEquals(Deno.readTextFileSync(victim), "precious\n", "the victim is untouched");
        assertEquals(Deno.statSync(victim).mode! & 0o777, 0o600, "and keeps its mode");
        ok(!Deno.lstatSync(path).isSymlink, "the final name is now a regular file");
        assertEquals(Deno.readTextFileSync(path), "new\n");
        assertEquals(Deno.statSync(path).mode! & 0o777, 0o644);
      },
    );
    await t.step("the temporary name is random and created O_EXCL: two writes use two names, none stays", () => {
      const names = new Set<string>();
      for (let i = 0; i < 20; i++) writeFileAtomic(path, `v${i}\n`, { mode: 0o644, fsync: false });
      for (const e of Deno.readDirSync(dir)) names.add(e.name);
      ok(![...names].some((n) => n.includes(".arch-")), [...names].join(" "));
      assertEquals(Deno.readTextFileSync(path), "v19\n");
    });
    await t.step("the mode is exact under a narrowing umask", () => {
      const old = Deno.umask(0o077);
      try {
        writeFileAtomic(`${dir}/wide`, "x", { mode: 0o644 });
        writeFileAtomic(`${dir}/narrow`, "x", { mode: 0o600 });
      } finally {
        Deno.umask(old);
      }
      assertEquals(Deno.statSync(`${dir}/wide`).mode! & 0o7777, 0o644);
      assertEquals(Deno.statSync(`${dir}/narrow`).mode! & 0o7777, 0o600);
    });
    await t.step("a reader sees the old file or the new one, never a part", async () => {
      const big = "a".repeat(1 << 20);
      const other = "b".repeat(1 << 20);
      writeFileAtomic(path, big, { mode: 0o644, fsync: false });
      let torn = 0;
      let stop = false;
      const reader = (async () => {
        while (!stop) {
          const text = await Deno.readTextFile(path);
          if (text !== big && text !== other) torn++;
        }
      })();
      for (let i = 0; i < 30; i++) {
        writeFileAtomic(path, i % 2 ? big : other, { mode: 0o644, fsync: false });
        await new Promise((r) => setTimeout(r, 1));
      }
      stop = true;
      await reader;
      assertEquals(torn, 0);
    });
    await t.step("a directory that does not exist: thrown, nothing left", () => {
      let thrown = false;
      try {
        writeFileAtomic(`${dir}/missing/f`, "x", { mode: 0o600 });
      } catch {
        thrown = true;
      }
      ok(thrown);
    });
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("install/uninstall through a symlinked file: its target is changed and restored exactly, the link stays", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "arch-install-link-" });
  try {
    Deno.mkdirSync(`${dir}/real`);
    Deno.mkdirSync(`${dir}/etc`);
    const real = `${dir}/real/app.conf`;
    const link = `${dir}/etc/app.conf`;
    Deno.writeTextFileSync(real, "original\n");
    Deno.chmodSync(real, 0o640);
    Deno.symlinkSync("../real/app.conf", link);
    const record = `${dir}/install.json`;
    await applyInstall([{ target: "t", path: link, before: "original\n", after: "ours\n" }], record);
    ok(Deno.lstatSync(link).isSymlink, "the link stays");
    assertEquals(Deno.readLinkSync(link), "../real/app.conf");
    assertEquals(Deno.readTextFileSync(real), "ours\n");
    assertEquals(Deno.statSync(real).mode! & 0o777, 0o640);
    assertEquals(loadRecord(record).entries[0]!.resolved, real, "the record names the file written");
    applyUninstall("t", [{ target: "t", path: link, before: "ours\n", after: "original\n" }], record);
    ok(Deno.lstatSync(link).isSymlink);
    assertEquals(Deno.readTextFileSync(real), "original\n");
    assertEquals(Deno.statSync(real).mode! & 0o777, 0o640);

    // A link to nothing: refused with one sentence before anything is written.
    Deno.symlinkSync(`${dir}/nowhere.conf`, `${dir}/etc/dangling.conf`);
    await rejects(
      () =>
        applyInstall([
          { target: "t", path: link, before: "original\n", after: "ours\n" },
          { target: "t", path: `${dir}/etc/dangling.conf`, before: null, after: "x\n" },
        ], record),
      /"[^"]*dangling.conf" is a symlink to "[^"]*nowhere.conf", which does not exist: create that file or replace/,
    );
    assertEquals(Deno.readTextFileSync(real), "original\n", "nothing written");
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("arch uninstall of an ARCH file edited since: kept and said; an unchanged one is removed", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "arch-install-edited-" });
  const log = console.log;
  const lines: string[] = [];
  console.log = (s: string) => lines.push(s);
  try {
    const hooksDir = `${dir}/hooks.d`;
    const conf = `${dir}/containers.conf.d/arch.conf`;
    const record = `${dir}/install.json`;
    const opts = {
      podmanHooksDir: hooksDir,
      podmanConfig: conf,
      arch: "/opt/arch",
      archRunc: "/opt/arch-runc",
      record,
    };
    assertEquals(await install(["podman"], opts), 0);
    const edited = Deno.readTextFileSync(conf) + "# the admin's line\n";
    Deno.writeTextFileSync(conf, edited);
    lines.length = 0;
    assertEquals(await uninstall(["podman"], { record }), 0);
    assertEquals(Deno.readTextFileSync(conf), edited, "the edited drop-in is kept as it is");
    ok(!existsSync(hooksDir), "the unchanged hooks.d files are removed (and the directory ARCH made)");
    const said = lines.filter((l) => l.includes(conf));
    ok(said.some((l) => l.includes("was changed since ARCH wrote it: kept as it is")), lines.join("\n"));
    ok(!lines.some((l) => l.includes("removed ARCH's part only")), lines.join("\n"));
    ok(!lines.some((l) => l.startsWith("podman: changed") && l.includes(conf)), "not listed as changed");
  } finally {
    console.log = log;
    Deno.removeSync(dir, { recursive: true });
  }
});
