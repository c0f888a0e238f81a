/**
 * The operator commands and observability against a real checkpoint and restore (Docker of
 * one engine generation): `arch ls` sees the container and its checkpoint (key, size,
 * status, then consumed by the restoring container), `arch inspect` reads the workload's
 * process and memory from CRIU's images, `arch gc --dry-run` changes nothing and `arch gc`
 * removes the consumed, old quarantined and stale directories but keeps another key's current
 * checkpoint, a recent quarantine (until `--quarantined`) and a key a live process holds, keys
 * named like the store's own entries are refused by `docker run`, the metrics and events
 * files count what happened, `arch log --level error` filters and prints no control
 * character a container set, and `arch doctor --json` has the new checks.
 */

import { deepEqual as assertEquals, ok } from "node:assert/strict";
import type { EmbeddedStack } from "../harness/stack.ts";
import { ARCH, archCli, archDockerRun, ENGINES, SKIP, startStack, uniqueName } from "./_env.ts";
import { fullId, waitTicks } from "./_workload.ts";
import { claimKey } from "../../src/store/claim.ts";

const MEM_MIB = 48;

const arch = archCli;

async function json<T>(stack: EmbeddedStack, args: string[], env: Record<string, string> = {}): Promise<T> {
  const r = await arch(stack, args, env);
  assertEquals(r.code, 0, `arch ${args.join(" ")}: ${r.stdout}${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}

interface CheckpointRow {
  scope: string;
  key: string;
  status: string;
  bytes: number;
  path: string;
  consumedBy?: { container: string };
}

function treeBytes(dir: string): number {
  let n = 0;
  for (const e of Deno.readDirSync(dir)) {
    const p = `${dir}/${e.name}`;
    if (e.isDirectory) n += treeBytes(p);
    else if (e.isFile) n += Deno.lstatSync(p).size;
  }
  return n;
}

const names = (dir: string) => [...Deno.readDirSync(dir)].map((e) => e.name).sort();

Deno.test({
  name: `operator commands and observability [${ENGINES[0]?.name ?? "no engines"}]`,
  ignore: SKIP,
  sanitizeResources: false,
  sanitizeOps: false,
}, async (t) => {
  await using stack = await startStack(ENGINES[0], {
    // The metrics file of this stack, not the node's (the events file defaults beside the log).
    prepare: (scratch) => {
      const path = `${scratch}/arch/config.json`;
      const config = JSON.parse(Deno.readTextFileSync(path));
      Deno.writeTextFileSync(path, JSON.stringify({ ...config, metricsFile: `${scratch}/arch/metrics/arch.prom` }));
      return Promise.resolve();
    },
  });
  const metricsFile = `${stack.scratch}/arch/metrics/arch.prom`;
  const eventsFile = `${stack.scratch}/arch/events.jsonl`;
  const key = uniqueName("ops");
  const keyDir = `${stack.checkpointRoot}/moby/${key}`;
  const first = uniqueName("first");
  let firstId = "";
  let second = "";
  let secondId = "";

  await t.step("arch ls shows the running container; after the checkpoint, the committed checkpoint", async () => {
    await stack.docker(archDockerRun(first, key, [], ["workload", "--mem", String(MEM_MIB), "--interval-ms", "50"]));
    await waitTicks(stack, first, 5);
    firstId = await fullId(stack, first);
    const containers = await json<{ id: string; key: string; state: string }[]>(stack, ["ls", "--json"]);
    assertEquals(containers.map((c) => [c.id, c.key, c.state]), [[firstId, key, "running"]]);
    const r = await arch(stack, ["checkpoint", firstId]);
    assertEquals(r.code, 0, r.stdout + r.stderr);
    const rows = await json<CheckpointRow[]>(stack, ["ls", "--checkpoints", "--json"]);
    assertEquals(rows.map((c) => [c.scope, c.key, c.status]), [["moby", key, "committed"]]);
    const current = `${keyDir}/${Deno.readLinkSync(`${keyDir}/current`)}`;
    assertEquals(rows[0]!.path, current);
    assertEquals(rows[0]!.bytes, treeBytes(current));
    ok(rows[0]!.bytes > MEM_MIB * 2 ** 20, `${rows[0]!.bytes} bytes hold the workload's ${MEM_MIB} MiB`);
    const table = await arch(stack, ["ls"]);
    ok(table.stdout.split("\n").some((l) => l.startsWith(`moby   ${key}`) && l.includes("committed")), table.stdout);
  });

  await t.step("arch inspect reads the workload's process and memory from CRIU's images", async () => {
    const out = await json<{
      signature: string;
      manifest: { containerId: string; listedBytes: number };
      criu: { processes: { pid: number; comm?: string; pages?: number }[]; memoryBytes: number };
      layer: { files: number };
    }>(stack, ["inspect", key, "--json"]);
    assertEquals(out.signature, "valid");
    assertEquals(out.manifest.containerId, firstId);
    const workload = out.criu.processes.find((p) => p.comm === "workload");
    ok(workload !== undefined, JSON.stringify(out.criu.processes));
    const mem = MEM_MIB * 2 ** 20;
    ok(out.criu.memoryBytes >= mem && out.criu.memoryBytes < mem + 32 * 2 ** 20, `${out.criu.memoryBytes}`);
    ok(workload.pages! * 4096 >= mem, `${workload.pages} pages`);
    const text = await arch(stack, ["inspect", `moby/${key}`]);
    ok(/^memory dumped: +4[89]\.\d MiB$/m.test(text.stdout), text.stdout);
    ok(/^\d+ +\d+ +1 +4[89]\.\d MiB +.*workload$/m.test(text.stdout), text.stdout);
    const missing = await arch(stack, ["inspect", "no-such-key"]);
    assertEquals(missing.code, 2);
    ok(missing.stderr.includes('no checkpoint key "no-such-key"'), missing.stderr);
  });

  await t.step("a new container of the key restores it: ls says consumed, by whom", async () => {
    second = uniqueName("second");
    await stack.docker(archDockerRun(second, key, [], ["workload", "--mem", String(MEM_MIB), "--interval-ms", "50"]));
    const p = await waitTicks(stack, second, 8);
    assertEquals(p.starts, 0, "restored, not started fresh");
    secondId = await fullId(stack, second);
    const rows = await json<CheckpointRow[]>(stack, ["ls", "--checkpoints", "--json"]);
    assertEquals(rows.map((c) => [c.key, c.status, c.consumedBy?.container]), [[key, "consumed", secondId]]);
  });

  const other = uniqueName("other");
  const otherKeyDir = `${stack.checkpointRoot}/moby/${other}`;
  await t.step("arch gc --dry-run lists consumed, quarantined and stale directories and changes nothing", async () => {
    // another key with a committed checkpoint (kept), a quarantined one and a dead writer's temporary
    const name = uniqueName("o");
    await stack.docker(archDockerRun(name, other));
    await waitTicks(stack, name, 3);
    assertEquals((await arch(stack, ["checkpoint", await fullId(stack, name)])).code, 0);
    Deno.mkdirSync(`${otherKeyDir}/quarantine-20260101T000000000Z-1-0`, { mode: 0o700 });
    Deno.writeTextFileSync(`${otherKeyDir}/quarantine-20260101T000000000Z-1-0/x`, "q".repeat(4096));
    // quarantined an hour ago: kept by default (host gc.quarantineDays, 7), listed with --quarantined
    const recent = `quarantine-${new Date(Date.now() - 3_600_000).toISOString().replace(/[-:.]/g, "")}-1-0`;
    Deno.mkdirSync(`${otherKeyDir}/${recent}`, { mode: 0o700 });
    Deno.mkdirSync(`${keyDir}/.tmp-20260101T000000000Z-1-0`, { mode: 0o700 });
    const before = [names(keyDir), names(otherKeyDir)];
    const plan = await json<{ remove: CheckpointRow[]; bytes: number }>(stack, ["gc", "--dry-run", "--json"]);
    const planned = plan.remove.map((r) => [r.key, r.status]).sort();
    assertEquals(planned, [[key, "consumed"], [key, "stale"], [other, "quarantined"]].sort());
    ok(!plan.remove.some((r) => r.path.endsWith(recent)), "a recent quarantine is kept by default");
    assertEquals(plan.bytes, plan.remove.reduce((n, r) => n + r.bytes, 0));
    const all = await json<{ remove: CheckpointRow[] }>(stack, ["gc", "--dry-run", "--quarantined", "--json"]);
    ok(all.remove.some((r) => r.path.endsWith(recent)), "--quarantined: any age");
    assertEquals([names(keyDir), names(otherKeyDir)], before, "a dry run changes nothing");
  });

  await t.step(
    "arch gc skips a key held by a live process, then removes and keeps the other key's current",
    async () => {
      const held = await claimKey(otherKeyDir, "checkpoint", { waitMs: 0 });
      try {
        const r = await arch(stack, ["gc"]);
        assertEquals(r.code, 0, r.stdout + r.stderr);
        ok(r.stdout.includes(`skipped moby/${other}: checkpoint key is busy`), r.stdout);
        ok(names(otherKeyDir).some((n) => n.startsWith("quarantine-")), "held key untouched");
        assertEquals(names(keyDir), [], "consumed checkpoint, its link and the stale temporary are gone");
      } finally {
        held.release();
      }
      const r = await arch(stack, ["gc"]);
      assertEquals(r.code, 0, r.stdout + r.stderr);
      ok(r.stdout.includes("removed 1 checkpoint directory"), r.stdout);
      const rows = await json<CheckpointRow[]>(stack, ["ls", "--checkpoints", "--json"]);
      assertEquals(rows.map((c) => [c.key, c.status]).sort(), [[other, "committed"], [other, "quarantined"]]);
      const q = await arch(stack, ["gc", "--quarantined"]);
      ok(q.stdout.includes("removed 1 checkpoint directory"), q.stdout);
      const after = await json<CheckpointRow[]>(stack, ["ls", "--checkpoints", "--json"]);
      assertEquals(after.map((c) => [c.key, c.status]), [[other, "committed"]]);
    },
  );

  await t.step("finding 1: a key named like the store's own entries is refused by docker run", async () => {
    for (const bad of [".tmp-x", "ckpt-x", ".claim", "current"]) {
      const name = uniqueName("reserved");
      const r = await stack.docker(archDockerRun(name, bad, [], ["true"], false), { check: false });
      await stack.docker(["rm", "-f", name], { check: false });
      assertEquals(r.code, 125, r.stderr);
      ok(r.stderr.includes(`ARCH_CHECKPOINT_ID="${bad}" is not a valid checkpoint id: it `), r.stderr);
      ok(!names(`${stack.checkpointRoot}/moby`).includes(bad), "nothing created");
    }
  });

  await t.step("metrics and events count the checkpoints and the restore", () => {
    const prom = Deno.readTextFileSync(metricsFile);
    ok(prom.includes('arch_checkpoints_total{result="ok"} 2\n'), prom);
    ok(prom.includes('arch_checkpoints_total{result="failed"} 0\n'), prom);
    ok(prom.includes('arch_restores_total{result="ok"} 1\n'), prom);
    ok(prom.includes("arch_checkpoint_duration_seconds_count 2\n"), prom);
    assertEquals(Deno.statSync(metricsFile).mode! & 0o777, 0o644);
    const events = Deno.readTextFileSync(eventsFile).trim().split("\n").map((l) => JSON.parse(l));
    assertEquals(events.map((e) => [e.kind, e.result, e.key]), [
      ["checkpoint", "ok", key],
      ["restore", "ok", key],
      ["checkpoint", "ok", other],
    ]);
    assertEquals(events[0].id, firstId);
    ok(events[0].bytes > MEM_MIB * 2 ** 20 && events[0].durationMs > 0, JSON.stringify(events[0]));
    ok(events[1].timings.restore > 0, JSON.stringify(events[1]));
    assertEquals(Deno.statSync(eventsFile).mode! & 0o777, 0o600);
  });

  await t.step("arch log --level error shows only errors", async () => {
    // a container refused by ARCH: its error goes to ARCH's log
    const bad = uniqueName("bad");
    const refused = await stack.docker(
      archDockerRun(bad, uniqueName("k"), ["--env", "ARCH_CHECKPOINT_HOST_PATH=/nonexistent/arch"]),
      { check: false },
    );
    ok(refused.code !== 0, "refused");
    const errors = await arch(stack, ["log", "--level", "error", "--json"]);
    assertEquals(errors.code, 0, errors.stderr);
    const records = errors.stdout.trim().split("\n").map((l) => JSON.parse(l));
    ok(records.length > 0 && records.every((r) => r.level === "error"), errors.stdout);
    ok(records.some((r) => String(r.msg).includes("/nonexistent/arch")), errors.stdout);
    // finding 10: a value the container set, with terminal controls, reaches the log; printed without them
    const evil = uniqueName("evil");
    await stack.docker(archDockerRun(evil, "x\x1b]0;owned\x07\u009by z", [], ["true"], false), { check: false });
    await stack.docker(["rm", "-f", evil], { check: false });
    const shown = await arch(stack, ["log", "--level", "error"]);
    // escaped where the refusal quotes it (log/log.ts quoteValue): visible, never interpreted
    ok(shown.stdout.includes('ARCH_CHECKPOINT_ID="x\\u001b]0;owned\\u0007\\u009by z" is not a valid'), shown.stdout);
    ok(!["\x1b", "\x07", "\u009b"].some((c) => shown.stdout.includes(c)), "no control character reaches the terminal");
    const restored = await arch(stack, ["log", "--container", secondId.slice(0, 12)]);
    const lines = restored.stdout.trim().split("\n");
    ok(lines.some((l) => l.includes(" info  runc-wrapper restored from checkpoint")), restored.stdout);
    ok(lines.every((l) => l.includes(` id=${secondId} `)), restored.stdout);
    const byKey = await arch(stack, ["log", "--key", key, "--json"]);
    ok(byKey.stdout.trim().split("\n").every((l) => JSON.parse(l).key === key), byKey.stdout);
    await stack.docker(["rm", "-f", bad], { check: false });
  });

  await t.step("arch log --follow prints records appended later; a log file readable by others is said", async () => {
    const file = `${stack.scratch}/other.log`;
    Deno.writeTextFileSync(file, JSON.stringify({ time: new Date().toISOString(), level: "info", msg: "old" }) + "\n", {
      mode: 0o644,
    });
    Deno.chmodSync(file, 0o644);
    const child = new Deno.Command(ARCH, {
      args: ["log", "--file", file, "--follow", "--level", "warn"],
      env: { ARCH_CONFIG: stack.archConfig },
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    try {
      await new Promise((r) => setTimeout(r, 700));
      const append = (level: string, msg: string) =>
        Deno.writeTextFileSync(file, JSON.stringify({ time: new Date().toISOString(), level, msg }) + "\n", {
          append: true,
        });
      append("info", "skipped");
      append("warn", "later");
      const reader = child.stdout.getReader();
      let text = "";
      const deadline = Date.now() + 10_000;
      while (!text.includes("later") && Date.now() < deadline) {
        const { value, done } = await reader.read();
        if (done) break;
        text += new TextDecoder().decode(value);
      }
      reader.releaseLock();
      ok(/ warn {2}- later$/m.test(text) && !text.includes("skipped") && !text.includes("old"), text);
    } finally {
      child.kill("SIGTERM");
      const stderr = new TextDecoder().decode((await child.output()).stderr);
      ok(stderr.includes("has mode 644, not 0600"), stderr);
    }
  });

  await t.step("arch doctor --json has the kernel, engine, root and watcher checks", async () => {
    const out = await json<{ ok: boolean; checks: { name: string; status: string; detail: string }[] }>(
      stack,
      ["doctor", "--json"], // the node's /etc/docker/daemon.json, Docker's default
    );
    const by = (name: string) => out.checks.find((c) => c.name === name);
    assertEquals(out.ok, true, JSON.stringify(out.checks));
    assertEquals(by("kernel")?.status, "ok");
    assertEquals(by("docker runtime")?.status, "ok", JSON.stringify(by("docker runtime")));
    ok(by("containerd runtime") && by("podman hooks"), "every engine is checked");
    assertEquals(by("spot-notice watcher")?.status, "warn", "no watcher runs in the stack");
    assertEquals(by(`checkpoint root ${stack.extraCheckpointRoot}`)?.status, "ok");
    assertEquals(by(`default checkpoint root ${stack.checkpointRoot}`)?.status, "ok");
  });
  await t.step(
    "arch finalize on a terminal: a live progress line; the finalize is in the metrics and events",
    async () => {
      await stack.docker(["rm", "-f", first, second], { check: false }); // the only running container is this one
      const name = uniqueName("fin");
      await stack.docker(archDockerRun(name, uniqueName("fk")));
      await waitTicks(stack, name, 3);
      const out = await stack.run({ cmd: "script", args: ["-qec", `${ARCH} finalize`, "/dev/null"] }, false);
      const text = out.stdout;
      assertEquals(out.code, 0, text);
      ok(/finalize: 0\/1 done, 0 failed, [\d.]+ s, \d+ s left/.test(text), text);
      ok(/^ok {4}moby\/\w+ key=fk-/m.test(text.replaceAll("\r\x1b[2K", "\n")), text);
      ok(/finalize: 1 saved, 0 failed, 0 not started in [\d.]+ s; concurrency [\d→]+ \(auto\)\r?\n/.test(text), text);
      assertEquals((await arch(stack, ["finalize", "--undo"])).code, 0);
      const prom = Deno.readTextFileSync(metricsFile);
      ok(prom.includes('arch_last_finalize_containers{result="ok"} 1\n'), prom);
      ok(/^arch_last_finalize_timestamp_seconds \d+/m.test(prom), prom);
      const last = JSON.parse(Deno.readTextFileSync(eventsFile).trim().split("\n").at(-1)!);
      assertEquals([last.kind, last.result, last.containers], ["finalize", "ok", { ok: 1, failed: 0, not_started: 0 }]);
      assertEquals(last.concurrency[0].concurrency, navigator.hardwareConcurrency, "auto starts at the CPU count");
      await stack.docker(["rm", "-f", name], { check: false });
    },
  );
});
