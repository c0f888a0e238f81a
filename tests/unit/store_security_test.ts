/**
 * The store's defences against a hostile tenant or a forged checkpoint (issue 7, points 2,
 * 3 and 7): authenticated and confined manifests, symlink-safe key directories, the per-key
 * claim. Real files in a temporary directory, as root; no engine.
 */

import { MANIFEST_VERSION } from "../../src/store/layout.ts";
import { deepEqual as assertEquals, ok, rejects, throws } from "node:assert/strict";
import { KeyStore, makeDurable } from "../../src/store/store.ts";
import {
  CheckpointVersionError,
  ForeignCheckpoint,
  hashFiles,
  listFiles,
  type Manifest,
  UnauthenticatedCheckpoint,
  verifyCheckpoint,
  writeManifest,
} from "../../src/store/manifest.ts";
import { loadSecret, sign } from "../../src/store/secret.ts";
import { beneath, UnsafePathError } from "../../src/store/safe_dir.ts";
import { claimKey, ClaimTimeout, isStale } from "../../src/store/claim.ts";
import { parseStartTime, processStartTime } from "../../src/process/liveness.ts";
import { releaseAction } from "../../src/checkpoint/pause_guard.ts";

const SECRET = new TextEncoder().encode("0123456789abcdef0123456789abcdef");
const EXPECTED = { scope: "moby", key: "job-1", image: "sha256:aa" };

function tempRoot(): string {
  const dir = Deno.makeTempDirSync();
  Deno.chmodSync(dir, 0o700);
  return dir;
}

/** A committed checkpoint with a CRIU image file and a layer archive, signed with SECRET. */
async function makeCheckpoint(root: string, patch: Partial<Manifest> = {}): Promise<KeyStore> {
  const store = new KeyStore(root, EXPECTED.scope, EXPECTED.key);
  const tmp = store.beginCheckpoint();
  Deno.mkdirSync(`${tmp}/criu`);
  Deno.writeTextFileSync(`${tmp}/criu/pages-1.img`, "memory");
  Deno.writeTextFileSync(`${tmp}/rootfs.tar`, "layer");
  const files = await hashFiles(tmp, listFiles(tmp, new Set()));
  const manifest: Manifest = {
    version: MANIFEST_VERSION,
    containerId: "c1",
    namespace: "moby",
    ...EXPECTED,
    createdAt: new Date().toISOString(),
    arch: { version: "0" },
    runc: { version: "1" },
    criu: { version: "4.2" },
    kernel: "6",
    cpuArch: "x86_64",
    rootfs: { archive: "rootfs.tar", upperdir: "/u" },
    timings: {},
    files,
    ...patch,
  };
  await writeManifest(tmp, manifest, SECRET);
  await makeDurable(tmp);
  store.commit(tmp);
  return store;
}

/** Rewrites the current manifest as an attacker without the secret (or with it, if `secret`). */
async function forge(
  store: KeyStore,
  edit: (m: Record<string, unknown>) => void,
  secret?: Uint8Array,
): Promise<void> {
  const dir = store.currentPath()!;
  const manifest = JSON.parse(Deno.readTextFileSync(`${dir}/manifest.json`));
  edit(manifest);
  const bytes = new TextEncoder().encode(JSON.stringify(manifest));
  Deno.writeFileSync(`${dir}/manifest.json`, bytes);
  if (secret !== undefined) Deno.writeTextFileSync(`${dir}/manifest.hmac`, await sign(secret, bytes));
}

Deno.test("point 2: only authentic, confined checkpoints verify", async (t) => {
  const root = tempRoot();
  try {
    await t.step("a checkpoint ARCH wrote verifies", async () => {
      const store = await makeCheckpoint(root);
      assertEquals((await verifyCheckpoint(store.currentPath()!, SECRET, EXPECTED)).key, "job-1");
    });
    await t.step('"files: []" without the secret is refused', async () => {
      const store = await makeCheckpoint(root);
      await forge(store, (m) => (m.files = []));
      await rejects(verifyCheckpoint(store.currentPath()!, SECRET, EXPECTED), /not signed with this node's/);
    });
    await t.step("a checkpoint signed with another secret is refused", async () => {
      const store = await makeCheckpoint(root);
      await forge(store, () => {}, new TextEncoder().encode("another-secret-another-secret-xx"));
      // its own class: a node without the cluster's secret leaves it alone (not quarantined)
      await rejects(verifyCheckpoint(store.currentPath()!, SECRET, EXPECTED), UnauthenticatedCheckpoint);
    });
    await t.step("an unsigned checkpoint is refused", async () => {
      const store = await makeCheckpoint(root);
      Deno.removeSync(`${store.currentPath()}/manifest.hmac`);
      await rejects(verifyCheckpoint(store.currentPath()!, SECRET, EXPECTED), /no signature/);
    });
    // Even a holder of the secret cannot make ARCH read outside the checkpoint.
    await t.step('rootfs.archive "../../x" is refused even when signed', async () => {
      const store = await makeCheckpoint(root);
      await forge(store, (m) => (m.rootfs = { archive: "../../../../etc/shadow", upperdir: null }), SECRET);
      await rejects(verifyCheckpoint(store.currentPath()!, SECRET, EXPECTED));
    });
    await t.step("a listed path that climbs is refused even when signed", async () => {
      const store = await makeCheckpoint(root);
      await forge(store, (m) => {
        const files = m.files as { path: string }[];
        files[0]!.path = "criu/../../../../etc/passwd";
      }, SECRET);
      await rejects(verifyCheckpoint(store.currentPath()!, SECRET, EXPECTED));
    });
    await t.step("files the manifest does not list are refused", async () => {
      const store = await makeCheckpoint(root);
      Deno.writeTextFileSync(`${store.currentPath()}/criu/extra.img`, "x");
      await rejects(verifyCheckpoint(store.currentPath()!, SECRET, EXPECTED), /"criu\/extra.img" is not listed/);
    });
    await t.step("a symlink in the checkpoint is refused", async () => {
      const store = await makeCheckpoint(root);
      Deno.removeSync(`${store.currentPath()}/criu/pages-1.img`);
      Deno.symlinkSync("/etc/shadow", `${store.currentPath()}/criu/pages-1.img`);
      await rejects(verifyCheckpoint(store.currentPath()!, SECRET, EXPECTED), /neither a file nor a directory/);
    });
    await t.step("point 1: another key, scope or image is a foreign checkpoint", async () => {
      const store = await makeCheckpoint(root);
      const dir = store.currentPath()!;
      await rejects(verifyCheckpoint(dir, SECRET, { ...EXPECTED, scope: "k8s.io+other" }), ForeignCheckpoint);
      await rejects(verifyCheckpoint(dir, SECRET, { ...EXPECTED, key: "job-2" }), ForeignCheckpoint);
      await rejects(verifyCheckpoint(dir, SECRET, { ...EXPECTED, image: "sha256:bb" }), /another image/);
    });
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test("point 2: the checkpoint secret is root-only and long enough", () => {
  const dir = tempRoot();
  try {
    const made = loadSecret(`${dir}/secret`, true);
    ok(made.length >= 32);
    assertEquals(Deno.statSync(`${dir}/secret`).mode! & 0o777, 0o600);
    assertEquals(loadSecret(`${dir}/secret`, false), made); // stable
    Deno.chmodSync(`${dir}/secret`, 0o644);
    throws(() => loadSecret(`${dir}/secret`, false), /mode 0600/);
    Deno.writeTextFileSync(`${dir}/short`, "x", { mode: 0o600 });
    throws(() => loadSecret(`${dir}/short`, false), /shorter than 32 bytes/);
    throws(() => loadSecret(`${dir}/missing`, false), /is missing/);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("point 3: key directories are never reached through a symlink", async (t) => {
  const root = tempRoot();
  const victim = tempRoot();
  try {
    await t.step("a symlink planted as the scope directory is refused, nothing created through it", () => {
      Deno.symlinkSync(victim, `${root}/moby`);
      throws(() => new KeyStore(root, "moby", "job").ensure(), UnsafePathError);
      assertEquals([...Deno.readDirSync(victim)].length, 0);
      Deno.removeSync(`${root}/moby`);
    });
    await t.step("a symlink planted as the key directory is refused", () => {
      Deno.mkdirSync(`${root}/moby`, { mode: 0o700 });
      Deno.symlinkSync(victim, `${root}/moby/job`);
      throws(() => new KeyStore(root, "moby", "job").beginCheckpoint(), UnsafePathError);
      new KeyStore(root, "moby", "job").removeAll(); // the link goes, never what it points at
      assertEquals([...Deno.readDirSync(victim)].length, 0);
      assertEquals([...Deno.readDirSync(`${root}/moby`)].length, 0);
    });
    await t.step("a directory a tenant owns on the way is refused", () => {
      Deno.mkdirSync(`${root}/moby/job`, { mode: 0o700 });
      Deno.chownSync(`${root}/moby/job`, 1000, 1000);
      throws(() => new KeyStore(root, "moby", "job").ensure(), /owned by uid 1000/);
      Deno.removeSync(`${root}/moby/job`);
    });
    await t.step("a root writable by others is refused", () => {
      Deno.chmodSync(root, 0o777);
      throws(() => beneath(root, ["moby"], false), /writable by group or others/);
      Deno.chmodSync(root, 0o700);
    });
  } finally {
    Deno.removeSync(root, { recursive: true });
    Deno.removeSync(victim, { recursive: true });
  }
});

Deno.test("point 7: the per-key claim", async (t) => {
  const dir = tempRoot();
  try {
    await t.step("a second claim waits, bounded, and names the holder", async () => {
      using _held = await claimKey(dir, "checkpoint", { waitMs: 1000 });
      await rejects(claimKey(dir, "restore", { waitMs: 200 }), (e: Error) => {
        ok(e instanceof ClaimTimeout);
        ok(e.message.includes(`"checkpoint" by pid ${Deno.pid}`), e.message);
        return true;
      });
    });
    await t.step("released, it can be taken again; waiting claims get it in turn", async () => {
      const first = await claimKey(dir, "a", { waitMs: 1000 });
      const order: string[] = [];
      const second = claimKey(dir, "b", { waitMs: 5000 }).then((c) => (order.push("b"), c));
      order.push("a-release");
      first.release();
      (await second).release();
      assertEquals(order, ["a-release", "b"]);
    });
    await t.step("a claim left by a dead process on this host is broken at once", async () => {
      const child = new Deno.Command(Deno.execPath(), { args: ["--version"], stdout: "null" }).spawn();
      const pid = child.pid;
      await child.status;
      Deno.mkdirSync(`${dir}/.claim`);
      Deno.writeTextFileSync(
        `${dir}/.claim/owner.json`,
        JSON.stringify({ host: Deno.hostname(), pid, start: 1, op: "checkpoint", nonce: "dead", at: "then" }),
      );
      using _c = await claimKey(dir, "restore", { waitMs: 100 });
    });
    await t.step("staleness: same host by liveness, other hosts by age", () => {
      const owner = { host: "h1", pid: 1, start: 5, op: "x", nonce: "n", at: "" };
      assertEquals(isStale(owner, 0, "h1", 10_000, 1000, () => true), false);
      assertEquals(isStale(owner, 0, "h1", 10_000, 1000, () => false), true);
      assertEquals(isStale(owner, 9_500, "h2", 10_000, 1000), false);
      assertEquals(isStale(owner, 8_000, "h2", 10_000, 1000), true);
    });
    await t.step("a claim on a deleted key fails instead of recreating the key", async () => {
      await rejects(claimKey(`${dir}/gone`, "restore", { waitMs: 100 }), /is gone/);
    });
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("process identity survives pid reuse", () => {
  assertEquals(parseStartTime("7 (x) y (z)) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 4242 0 0"), 4242);
  ok((processStartTime(Deno.pid) ?? 0) > 0);
  assertEquals(processStartTime(2 ** 22 + 1), undefined);
});

Deno.test("point 5: what a release does in each phase of a checkpoint", () => {
  const ckpt = "/nonexistent/key/ckpt-1";
  assertEquals(releaseAction({ phase: "paused", keepRunning: false }), "resume");
  assertEquals(releaseAction({ phase: "committing", checkpoint: ckpt, keepRunning: false }), "resume");
  assertEquals(releaseAction({ phase: "committed", keepRunning: false }), "stop");
  assertEquals(releaseAction({ phase: "committed", keepRunning: true }), "resume");
});

Deno.test("a signed checkpoint of another format version is left for an ARCH that reads it, never taken for damage", async () => {
  const root = tempRoot();
  try {
    for (const version of [MANIFEST_VERSION + 2, 1, "2", null]) {
      const store = await makeCheckpoint(root);
      await forge(store, (m) => (m.version = version), SECRET); // authentic: signed with this node's secret
      await rejects(
        verifyCheckpoint(store.currentPath()!, SECRET, EXPECTED),
        (e: unknown) =>
          e instanceof CheckpointVersionError && e.code === "checkpoint-version" &&
          e.message.includes(`reads versions ${MANIFEST_VERSION} and ${MANIFEST_VERSION + 1}`),
      );
      await forge(store, (m) => (m.containerId = "c2")); // a change without the secret: the signature is checked first
      await rejects(verifyCheckpoint(store.currentPath()!, SECRET, EXPECTED), UnauthenticatedCheckpoint);
    }
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test("templates: a key's checkpoint is never restored as a template, nor a template as a key's, nor another's name", async () => {
  const root = tempRoot();
  try {
    const own = await makeCheckpoint(root);
    await rejects(verifyCheckpoint(own.currentPath()!, SECRET, { ...EXPECTED, template: "warm" }), ForeignCheckpoint);
    const published = { name: "warm", fromKey: EXPECTED.key, publishedAt: new Date().toISOString() };
    const template = await makeCheckpoint(tempRootIn(root), { template: published });
    const dir = template.currentPath()!;
    await rejects(verifyCheckpoint(dir, SECRET, EXPECTED), ForeignCheckpoint); // not this key's own checkpoint
    await rejects(verifyCheckpoint(dir, SECRET, { ...EXPECTED, template: "cold" }), ForeignCheckpoint);
    await rejects(
      verifyCheckpoint(dir, SECRET, { ...EXPECTED, scope: "tenant-b", template: "warm" }),
      ForeignCheckpoint,
    );
    await rejects(
      verifyCheckpoint(dir, SECRET, { ...EXPECTED, image: "sha256:other", template: "warm" }),
      ForeignCheckpoint,
    );
    // Any key of the scope and image may start from it.
    const m = await verifyCheckpoint(dir, SECRET, { ...EXPECTED, key: "job-2", template: "warm" });
    assertEquals(m.template?.name, "warm");
    // The template's name is signed: renaming it in the manifest without the secret is refused.
    await forge(template, (t) => ((t.template as { name: string }).name = "cold"));
    await rejects(verifyCheckpoint(dir, SECRET, { ...EXPECTED, template: "cold" }), UnauthenticatedCheckpoint);
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

function tempRootIn(parent: string): string {
  const dir = Deno.makeTempDirSync({ dir: parent });
  Deno.chmodSync(dir, 0o700);
  return dir;
}
