/**
 * src/restore/restore.ts phase by phase against a fake runc (`_fake_runc.ts`): a checkpoint
 * taken by the real checkpoint code (fake runc, real overlay rootfs, real store) restored
 * into a new container of the same image. What each outcome leaves: the saved files in the
 * new rootfs, the checkpoint current, quarantined or untouched, runc's half-restored
 * container deleted. Requires root; the real runc and CRIU are the integration tests' part.
 */
import { deepEqual as assertEquals, ok, rejects } from "node:assert/strict";
import { existsSync } from "node:fs";
import { checkpointContainer } from "../../src/checkpoint/checkpoint.ts";
import { restoreContainer } from "../../src/restore/restore.ts";
import { parseRuncArgv } from "../../src/runc/argv.ts";
import { imageIdentity } from "../../src/rootfs/image_identity.ts";
import { KeyStore } from "../../src/store/store.ts";
import { sign } from "../../src/store/secret.ts";
import { CRIU_DIR, MANIFEST_FILE, SIGNATURE_FILE } from "../../src/store/layout.ts";
import { nodeCpuFeatures } from "../../src/criu/cpu_features.ts";
import { FakeRunc, SPAWN_FAILS } from "./_fake_runc.ts";
import { isRoot, lab } from "./_overlay_lab.ts";

const SECRET = new Uint8Array(32).fill(7);
const ignore = !isRoot && Deno.env.get("CI") !== "true";

/** A committed checkpoint of job-1 (progress "41"), and a new container of the same image with an empty upper layer. */
async function setup() {
  const old = lab();
  {
    using _runc = new FakeRunc("running");
    await checkpointContainer(old.record, "/usr/sbin/runc", old.registry, { stateDir: old.state, secret: SECRET });
  }
  const fresh = lab({ lower: old.lower, progress: null });
  const store = new KeyStore(old.record.checkpointRoot as string, "tenant-a", "job-1");
  const rootfs = `${fresh.dir}/bundle/rootfs`;
  const image = await imageIdentity(rootfs, fresh.state);
  const parsed = parseRuncArgv(["--root", "/run/fake", "create", "--bundle", `${fresh.dir}/bundle`, "c2"]);
  if (!parsed.ok || image === undefined) throw new Error("setup");
  const restore = (extra: { cpuFeatureCheck?: boolean } = {}) =>
    restoreContainer(parsed.call, store, "/usr/sbin/runc", {
      stateDir: fresh.state,
      secret: SECRET,
      expected: { scope: "tenant-a", key: "job-1", image },
      rootfs,
      ...extra,
    });
  return {
    old,
    fresh,
    store,
    rootfs,
    restore,
    [Symbol.dispose]() {
      fresh[Symbol.dispose]();
      old[Symbol.dispose]();
    },
  };
}

Deno.test({
  name: "restore: verify → apply the saved layer → runc restore; the container runs with its files",
  ignore,
  async fn() {
    using s = await setup();
    using runc = new FakeRunc("gone");
    const current = s.store.currentPath();
    const outcome = await s.restore();
    assertEquals(outcome.kind, "restored", JSON.stringify(outcome));
    assertEquals(runc.calls, ["restore c2"]);
    assertEquals(runc.status, "running");
    assertEquals(Deno.readTextFileSync(`${s.rootfs}/progress`), "41\n"); // the saved writable layer
    assertEquals(s.store.currentPath(), current);
  },
});

Deno.test({
  name: "restore: runc restore fails → the half-restored container is deleted, the checkpoint quarantined",
  ignore,
  async fn() {
    using s = await setup();
    using runc = new FakeRunc("gone", { restore: "criu failed: type RESTORE errno 0" });
    const outcome = await s.restore();
    ok(outcome.kind === "failed", JSON.stringify(outcome));
    ok(outcome.reason.includes("runc restore exited with 1"), outcome.reason);
    ok(outcome.applied, "the rootfs was changed: the caller resets it");
    ok(outcome.quarantined !== undefined && existsSync(outcome.quarantined));
    assertEquals(runc.calls, ["restore c2", "delete c2"]);
    assertEquals(s.store.currentPath(), undefined);
  },
});

Deno.test({
  name: "restore: damaged page data → quarantined before runc restore runs (no gate in this bundle)",
  ignore,
  async fn() {
    using s = await setup();
    using runc = new FakeRunc("gone");
    Deno.writeTextFileSync(`${s.store.currentPath()}/${CRIU_DIR}/pages-1.img`, "PAGES"); // same size, other bytes
    const outcome = await s.restore();
    ok(outcome.kind === "failed" && /failed verification/.test(outcome.reason), JSON.stringify(outcome));
    assertEquals(runc.calls, []);
    ok(!existsSync(`${s.rootfs}/progress`), "nothing applied");
  },
});

Deno.test({
  name: "restore: a checkpoint of another format version is refused and left as it is",
  ignore,
  async fn() {
    using s = await setup();
    using runc = new FakeRunc("gone");
    const dir = s.store.currentPath()!;
    const manifest = JSON.parse(Deno.readTextFileSync(`${dir}/${MANIFEST_FILE}`));
    const bytes = new TextEncoder().encode(JSON.stringify({ ...manifest, version: manifest.version + 2 }));
    Deno.writeFileSync(`${dir}/${MANIFEST_FILE}`, bytes);
    Deno.writeTextFileSync(`${dir}/${SIGNATURE_FILE}`, await sign(SECRET, bytes));
    const outcome = await s.restore();
    ok(outcome.kind === "refused" && outcome.reason.includes("format version"), JSON.stringify(outcome));
    assertEquals(runc.calls, []);
    assertEquals(s.store.currentPath(), dir);
  },
});

Deno.test({
  name: "restore: a runc that cannot be started is no verdict on the checkpoint: it stays current",
  ignore,
  async fn() {
    using s = await setup();
    using _runc = new FakeRunc("gone", { restore: SPAWN_FAILS });
    const current = s.store.currentPath();
    await rejects(s.restore(), Deno.errors.PermissionDenied);
    assertEquals(s.store.currentPath(), current);
  },
});

Deno.test({
  name: "restore: a checkpoint made on a CPU with an extension this one lacks is refused, naming it, and left",
  ignore,
  async fn() {
    using s = await setup();
    using runc = new FakeRunc("gone");
    const here = nodeCpuFeatures() ?? [];
    const dir = s.store.currentPath()!;
    const manifest = JSON.parse(Deno.readTextFileSync(`${dir}/${MANIFEST_FILE}`));
    assertEquals(manifest.cpuFeatures, here, "the checkpoint records this CPU's extensions");
    const lacking = "avx512_fp16_arch_test"; // an avx512 flag no CPU has: counted, and missing here
    const bytes = new TextEncoder().encode(JSON.stringify({ ...manifest, cpuFeatures: [...here, lacking] }));
    Deno.writeFileSync(`${dir}/${MANIFEST_FILE}`, bytes);
    Deno.writeTextFileSync(`${dir}/${SIGNATURE_FILE}`, await sign(SECRET, bytes));
    const outcome = await s.restore();
    ok(outcome.kind === "refused" && outcome.reason.includes(`lacks (${lacking})`), JSON.stringify(outcome));
    ok(outcome.reason.includes('"cpuFeatureCheck"'), outcome.reason);
    assertEquals(runc.calls, []);
    assertEquals(s.store.currentPath(), dir);
    // the admin relaxes it: restored
    assertEquals((await s.restore({ cpuFeatureCheck: false })).kind, "restored");
  },
});
