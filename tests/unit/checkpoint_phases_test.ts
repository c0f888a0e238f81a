/**
 * src/checkpoint/checkpoint.ts phase by phase against a fake runc (`_fake_runc.ts`), on a
 * real overlay rootfs and a real checkpoint root: what each phase leaves behind when it
 * succeeds or fails. Requires root (an overlay mount); the real runc and CRIU are the
 * integration tests' part.
 */
import { deepEqual as assertEquals, ok, rejects } from "node:assert/strict";
import { existsSync } from "node:fs";
import { checkpointContainer, CheckpointError } from "../../src/checkpoint/checkpoint.ts";
import { listMarkers } from "../../src/checkpoint/pause_guard.ts";
import { KeyStore } from "../../src/store/store.ts";
import { FakeRunc, SPAWN_FAILS } from "./_fake_runc.ts";
import { isRoot, lab } from "./_overlay_lab.ts";

const options = (state: string) => ({ stateDir: state, secret: new Uint8Array(32).fill(7) });
const committed = (l: ReturnType<typeof lab>) => new KeyStore(l.record.checkpointRoot as string, "tenant-a", "job-1");
/** Whatever is left in the key's directory besides committed checkpoints (tmp, aborted). */
const leftovers = (l: ReturnType<typeof lab>) => {
  const store = committed(l);
  return existsSync(store.dir)
    ? [...Deno.readDirSync(store.dir)].map((e) => e.name).filter((n) =>
      !n.startsWith("ckpt-") && n !== "current" && !n.startsWith(".")
    )
    : [];
};

Deno.test({
  name: "checkpoint: pause → layer → dump → manifest → commit → stop, in that order",
  ignore: !isRoot && Deno.env.get("CI") !== "true",
  async fn() {
    using l = lab();
    using runc = new FakeRunc("running");
    const result = await checkpointContainer(l.record, "/usr/sbin/runc", l.registry, options(l.state));
    assertEquals(runc.calls.map((c) => c.split(" ")[0]), ["pause", "checkpoint", "kill", "state"]);
    assertEquals(runc.status, "stopped");
    ok(result.dir.startsWith(committed(l).dir), result.dir);
    assertEquals(committed(l).currentPath(), result.dir);
    for (const f of ["manifest.json", "manifest.hmac", "criu/pages-1.img", "criu/inventory.img"]) {
      ok(existsSync(`${result.dir}/${f}`), f);
    }
    const manifest = JSON.parse(Deno.readTextFileSync(`${result.dir}/manifest.json`));
    assertEquals([manifest.scope, manifest.key, manifest.containerId], ["tenant-a", "job-1", "c1"]);
    ok(manifest.files.some((f: { path: string }) => f.path === "criu/pages-1.img"));
    assertEquals(listMarkers(l.state), []);
    assertEquals(l.registry.get("moby", "c1"), undefined); // stopped by its checkpoint: the record goes
  },
});

Deno.test({
  name: "checkpoint: a failed dump resumes the container, commits nothing, leaves no temporary directory",
  ignore: !isRoot && Deno.env.get("CI") !== "true",
  async fn() {
    using l = lab();
    using runc = new FakeRunc("running", { checkpoint: "criu failed: type NOTIFY errno 0" });
    runc.dumpLog = "(00.001) Error (criu/rlimit.c:10): rlimit: Can't setup RLIMIT_NOFILE for self\n" +
      "(00.200) Error (criu/files-reg.c:1): Can't dump ghost file /tmp/big of 209715200 size, increase limit\n";
    const error = await checkpointContainer(l.record, "/usr/sbin/runc", l.registry, options(l.state)).catch((e) => e);
    ok(error instanceof CheckpointError, String(error));
    assertEquals([error.step, error.code], ["dump", "checkpoint-dump"]);
    // CRIU's real cause from its log, not runc's "criu failed" nor the rlimit noise before it
    ok(error.message.includes('deleted file ("/tmp/big", 200.0 MiB)'), error.message);
    ok(
      error.message.includes('"ghostFileLimitBytes"') && error.message.includes("the job keeps running"),
      error.message,
    );
    assertEquals(runc.status, "running");
    assertEquals(runc.calls.map((c) => c.split(" ")[0]), ["pause", "checkpoint", "resume", "state"]);
    assertEquals(committed(l).currentPath(), undefined);
    assertEquals(leftovers(l), []);
    assertEquals(listMarkers(l.state), []);
    ok(l.registry.get("moby", "c1") !== undefined);
  },
});

Deno.test({
  name: "checkpoint: a failed pause changes nothing",
  ignore: !isRoot && Deno.env.get("CI") !== "true",
  async fn() {
    using l = lab();
    using runc = new FakeRunc("running", { pause: "container not running" });
    await rejects(
      checkpointContainer(l.record, "/usr/sbin/runc", l.registry, options(l.state)),
      (e: unknown) => e instanceof CheckpointError && e.step === "pause" && /container not running/.test(e.message),
    );
    assertEquals(runc.status, "running");
    assertEquals(committed(l).currentPath(), undefined);
    assertEquals(leftovers(l), []);
    assertEquals(listMarkers(l.state), []);
  },
});

Deno.test({
  name: "checkpoint: committed but the container cannot be stopped: the error says so, the record comes back",
  ignore: !isRoot && Deno.env.get("CI") !== "true",
  async fn() {
    using l = lab();
    using runc = new FakeRunc("running", { kill: "permission denied" });
    const error = await checkpointContainer(l.record, "/usr/sbin/runc", l.registry, options(l.state)).catch((e) => e);
    ok(error instanceof CheckpointError && error.step === "release", String(error));
    ok(committed(l).currentPath() !== undefined, "the checkpoint stays committed");
    assertEquals(runc.status, "paused"); // never resumed past its checkpoint
    assertEquals(listMarkers(l.state).map((m) => m.phase), ["committed"]); // the next arch command retries
    ok(l.registry.get("moby", "c1") !== undefined);
  },
});

Deno.test({
  name: "checkpoint: a runc that cannot be started fails the capture step and resumes the container",
  ignore: !isRoot && Deno.env.get("CI") !== "true",
  async fn() {
    using l = lab();
    using runc = new FakeRunc("running", { checkpoint: SPAWN_FAILS });
    const error = await checkpointContainer(l.record, "/usr/sbin/runc", l.registry, options(l.state)).catch((e) => e);
    ok(error instanceof CheckpointError && error.step === "capture", String(error));
    assertEquals(runc.status, "running");
    assertEquals(committed(l).currentPath(), undefined);
    assertEquals(leftovers(l), []);
    assertEquals(listMarkers(l.state), []);
  },
});

Deno.test({
  name: "checkpoint: a pid file that cannot be read stops it before the pause (the size checks need the pid)",
  ignore: !isRoot && Deno.env.get("CI") !== "true",
  async fn() {
    using l = lab();
    using runc = new FakeRunc("running");
    const record = { ...l.record, pidFile: `${l.dir}/no-such-pid` };
    const error = await checkpointContainer(record, "/usr/sbin/runc", l.registry, options(l.state)).catch((e) => e);
    ok(error instanceof CheckpointError && error.step === "prepare", String(error));
    assertEquals(runc.calls, []);
  },
});

Deno.test({
  name: "checkpoint --dry-run: dumps, says how big and how long paused, keeps nothing, resumes the job",
  ignore: !isRoot && Deno.env.get("CI") !== "true",
  async fn() {
    using l = lab();
    using runc = new FakeRunc("running");
    const result = await checkpointContainer(l.record, "/usr/sbin/runc", l.registry, {
      ...options(l.state),
      dryRun: true,
    });
    assertEquals(result.dryRun, true);
    ok(result.bytes > 0 && result.timings.paused !== undefined && result.timings.dump !== undefined);
    assertEquals(runc.calls.map((c) => c.split(" ")[0]), ["pause", "checkpoint", "resume", "state"]);
    assertEquals(runc.status, "running");
    assertEquals(committed(l).currentPath(), undefined);
    assertEquals(leftovers(l), []);
    assertEquals(listMarkers(l.state), []);
    ok(l.registry.get("moby", "c1") !== undefined, "the record stays: the job runs on");
  },
});
