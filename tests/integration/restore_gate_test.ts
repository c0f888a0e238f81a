/**
 * The restore gate through real Docker, runc and CRIU: the checkpoint's page data
 * (`criu/pages-*.img`) is hashed while `runc restore` runs, and CRIU's post-restore action
 * script holds the restored tasks until ARCH's verdict. Asserted: a restore still resumes the
 * workload; a page file changed in the middle (same size) lets runc restore start but no
 * instruction of the restored process run (the workload starts fresh, from tick 1), and the
 * checkpoint is quarantined with one sentence naming the file; a parsed image changed is
 * refused before runc restore starts; ARCH killed while the script waits fails the restore at
 * once, with nothing of it left (no runc container, no CRIU).
 */

import { deepEqual as assertEquals, ok } from "node:assert/strict";
import type { EmbeddedStack } from "../harness/stack.ts";
import { criuLogDir } from "../../src/criu/logs.ts";
import { dockerProgress, fullId, parseProgress, waitTicks } from "./_workload.ts";
import { archCli, archDockerRun, eventually, stackTest, uniqueName } from "./_env.ts";

/** Runs an ARCH container with `key` until tick `ticks`, checkpoints it, returns the committed checkpoint. */
async function checkpointed(stack: EmbeddedStack, key: string, ticks: number, cmd: string[] = []) {
  const name = uniqueName("a");
  await stack.docker(archDockerRun(name, key, [], cmd));
  await waitTicks(stack, name, ticks);
  const r = await archCli(stack, ["checkpoint", await fullId(stack, name)]);
  assertEquals(r.code, 0, r.stdout + r.stderr);
  const keyDir = `${stack.checkpointRoot}/moby/${key}`;
  const before = await dockerProgress(stack, name);
  return { name, keyDir, before, current: `${keyDir}/${Deno.readLinkSync(`${keyDir}/current`)}` };
}

/** Overwrites one byte in the middle of `path`, keeping its size. */
function flipMiddle(path: string): void {
  const file = Deno.openSync(path, { read: true, write: true });
  try {
    const at = Math.floor(file.statSync().size / 2);
    const byte = new Uint8Array(1);
    file.seekSync(at, Deno.SeekMode.Start);
    file.readSync(byte);
    byte[0] = byte[0]! ^ 0xff;
    file.seekSync(at, Deno.SeekMode.Start);
    file.writeSync(byte);
  } finally {
    file.close();
  }
}

const imageOf = (current: string, prefix: string) =>
  [...Deno.readDirSync(`${current}/criu`)].map((e) => e.name).filter((n) => n.startsWith(prefix)).sort()[0]!;

/** Lines of the ARCH log that mention `text`. */
const logLines = (stack: EmbeddedStack, text: string) =>
  Deno.readTextFileSync(stack.archLog).split("\n").filter((l) => l.includes(text));

/** The kept CRIU restore logs of `key`. */
function restoreLogs(stack: EmbeddedStack, key: string): string[] {
  try {
    return [...Deno.readDirSync(`${criuLogDir(stack.archLog)}/moby/${key}`)].map((e) => e.name)
      .filter((n) => n.includes("-restore-"));
  } catch {
    return [];
  }
}

/** Command lines of the processes mentioning `text`, by pid. */
function processes(text: string): Map<number, string[]> {
  const out = new Map<number, string[]>();
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name) || Number(entry.name) === Deno.pid) continue;
    try {
      const argv = Deno.readTextFileSync(`/proc/${entry.name}/cmdline`).split("\0").filter((a) => a !== "");
      if (argv.join(" ").includes(text)) out.set(Number(entry.name), argv);
    } catch { /* gone */ }
  }
  return out;
}

const parentOf = (pid: number) => Number(Deno.readTextFileSync(`/proc/${pid}/stat`).split(") ")[1]!.split(" ")[1]);

/** A new container with `key` starts fresh, from tick 1, with no restored tick before; the checkpoint is quarantined. */
async function assertFreshAndQuarantined(stack: EmbeddedStack, key: string, keyDir: string) {
  const name = uniqueName("b");
  await stack.docker(archDockerRun(name, key));
  await waitTicks(stack, name, 3);
  const out = (await stack.docker(["logs", name])).stdout;
  const p = parseProgress(out);
  assertEquals([p.starts, p.firstTick], [1, 1], "started fresh; the restored process printed nothing");
  const logs = out.split("\n").filter((l) => l !== "");
  ok(logs[0]!.startsWith("start "), `nothing before the fresh start: ${logs[0]}`);
  ok(p.ticks.every((n, i) => n === i + 1), `ticks 1, 2, 3...: ${p.ticks.join(" ")}`);
  const names = [...Deno.readDirSync(keyDir)].map((e) => e.name);
  ok(names.some((n) => n.startsWith("quarantine-")) && !names.includes("current"), names.join(" "));
  return name;
}

stackTest("restore gate: page data verified while runc restores", async (t, stack) => {
  await t.step("a restore resumes the workload, its page data verified beside runc restore", async () => {
    const key = uniqueName("gate");
    const { name, before } = await checkpointed(stack, key, 10, [
      "workload",
      "--mem",
      "64",
      "--interval-ms",
      "50",
      "--verify-every",
      "5",
    ]);
    const second = uniqueName("second");
    await stack.docker(archDockerRun(second, key));
    const after = await waitTicks(stack, second, before.lastTick + 10);
    assertEquals([after.starts, after.firstTick, after.verifyFailures], [0, before.lastTick + 1, 0]);
    const restored = logLines(stack, "restored from checkpoint").filter((l) => l.includes(`/${key}/`));
    assertEquals(restored.length, 1);
    ok(restored[0]!.includes("pagesVerified"), `the page data was verified beside runc restore: ${restored[0]}`);
    await stack.docker(["rm", "-f", name, second]);
  });

  await t.step("a page file changed in the middle: runc restore starts, the process never runs", async () => {
    const key = uniqueName("pages");
    const { name, keyDir, current } = await checkpointed(stack, key, 5);
    const pages = imageOf(current, "pages-");
    const size = Deno.statSync(`${current}/criu/${pages}`).size;
    flipMiddle(`${current}/criu/${pages}`);
    assertEquals(Deno.statSync(`${current}/criu/${pages}`).size, size);
    const b = await assertFreshAndQuarantined(stack, key, keyDir);
    // The log is JSON: the sentence's quotes come escaped.
    const why = logLines(stack, "does not match its manifest checksum").filter((l) => l.includes(`criu/${pages}`));
    ok(why.length > 0, "the log names the file");
    ok(why.some((l) => l.includes(`${key}/ckpt-`) && l.includes("failed verification")), why.join("\n"));
    // runc restore did start and CRIU aborted at the gate: its kept log says so.
    const failed = restoreLogs(stack, key).filter((n) => n.endsWith("-restore-failed.log"));
    assertEquals(failed.length, 1, restoreLogs(stack, key).join(" "));
    const criuLog = Deno.readTextFileSync(`${criuLogDir(stack.archLog)}/moby/${key}/${failed[0]}`);
    ok(criuLog.includes("Aborting restore due to post-restore script"), "CRIU aborted at post-restore");
    ok(criuLog.includes("verdict: fail"), "on ARCH's fail verdict");
    await stack.docker(["rm", "-f", name, b]);
  });

  await t.step("a parsed image changed (core): refused before runc restore starts", async () => {
    const key = uniqueName("core");
    const { name, keyDir, current } = await checkpointed(stack, key, 5);
    const core = imageOf(current, "core-");
    flipMiddle(`${current}/criu/${core}`);
    const b = await assertFreshAndQuarantined(stack, key, keyDir);
    ok(logLines(stack, "does not match its manifest checksum").some((l) => l.includes(`criu/${core}`)));
    assertEquals(restoreLogs(stack, key), [], "runc restore never ran");
    await stack.docker(["rm", "-f", name, b]);
  });

  await t.step("ARCH killed while the script waits: the restore fails at once, nothing left", async () => {
    const key = uniqueName("killed");
    const { name, current } = await checkpointed(stack, key, 3, [
      "workload",
      "--mem",
      "768",
      "--interval-ms",
      "50",
    ]);
    const victim = uniqueName("victim");
    const running = stack.docker(archDockerRun(victim, key), { check: false });
    // runc restore of this checkpoint: its parent is ARCH's create. Stop ARCH before its verdict.
    let found: readonly [number, string[]] | undefined;
    for (const deadline = Date.now() + 60_000; found === undefined && Date.now() < deadline;) {
      for (const [pid, argv] of processes(`${current}/criu`)) {
        if (argv.includes("restore") && argv.includes("--work-path")) found = [pid, argv];
      }
      if (found === undefined) await new Promise((r) => setTimeout(r, 2));
    }
    ok(found !== undefined, "runc restore started");
    const [runcPid, argv] = found;
    const arch = parentOf(runcPid);
    Deno.kill(arch, "SIGSTOP");
    const work = argv[argv.indexOf("--work-path") + 1]!;
    const root = argv[argv.indexOf("--root") + 1]!;
    const id = argv.at(-1)!;
    try {
      await eventually("the script waits at the gate", () => {
        try {
          Deno.statSync(stack.hostPath(`${work}/gate.seen`));
          return Promise.resolve(true);
        } catch {
          return Promise.resolve(undefined);
        }
      }, 60_000);
      ok(processes(`${work}/gate.lock`).size > 0, "the script waits for the verdict");
    } finally {
      Deno.kill(arch, "SIGKILL");
    }
    const killedAt = performance.now();
    const run = await running;
    ok(run.code !== 0, "the create whose ARCH was killed fails");
    await eventually("no runc or CRIU of the killed restore", () => {
      const left = [...processes(work).values(), ...processes(`${current}/criu`).values()];
      return Promise.resolve(left.length === 0 ? true : undefined);
    }, 60_000);
    ok(performance.now() - killedAt < 60_000, "well within the script's bound (120 s)");
    let verdict = "none";
    try {
      verdict = Deno.readTextFileSync(stack.hostPath(`${work}/verdict`)).trim();
    } catch { /* never written: ARCH died first */ }
    assertEquals(verdict, "none");
    // The root seen from the host is the node's (else a wrong path would pass for "no container").
    ok(Deno.statSync(stack.hostPath(root)).isDirectory, stack.hostPath(root));
    const state = await new Deno.Command(stack.engines.runc, { args: ["--root", stack.hostPath(root), "state", id] })
      .output();
    ok(state.code !== 0, `no runc container ${id} left: ${new TextDecoder().decode(state.stdout)}`);
    await stack.docker(["rm", "-f", victim], { check: false });
    // Still the key's checkpoint (ARCH died, it judged nothing): the next container restores it.
    const next = uniqueName("next");
    await stack.docker(archDockerRun(next, key));
    const p = await waitTicks(stack, next, 1);
    assertEquals(p.starts, 0, "restored, not started fresh");
    await stack.docker(["rm", "-f", name, next]);
  });
});
