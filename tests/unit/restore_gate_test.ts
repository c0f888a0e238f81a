/**
 * The restore gate without CRIU: the real action script (sh + flock) against a gate that
 * this process opens, as CRIU would run it at `post-restore`; and the split verification
 * of a signed checkpoint (page data deferred, everything else checked at once).
 */

import { isPageData, MANIFEST_VERSION } from "../../src/store/layout.ts";
import { deepEqual as assertEquals, ok, rejects } from "node:assert/strict";
import { CRIU_ACTION_SCRIPT, CRIU_CONFIG_ANNOTATION, criuConfig } from "../../src/criu/config.ts";
import { bundleHonoursGate, gateTimedOut, gateTimeoutSeconds, openGate } from "../../src/restore/restore_gate.ts";
import {
  hashFiles,
  type Manifest,
  verifyCheckpoint,
  verifyCheckpointExcept,
  verifyFiles,
  writeManifest,
} from "../../src/store/manifest.ts";

function scratch(): string {
  const dir = Deno.makeTempDirSync({ prefix: "arch-gate-test-" });
  const script = `${dir}/criu-action.sh`;
  Deno.writeTextFileSync(script, CRIU_ACTION_SCRIPT, { mode: 0o700 });
  Deno.mkdirSync(`${dir}/work`);
  return dir;
}

/** Runs the action script as CRIU does at `action`; resolves to its exit code and how long it took. */
async function runScript(dir: string, action: string, env: Record<string, string>) {
  const started = performance.now();
  const out = await new Deno.Command("sh", {
    args: [`${dir}/criu-action.sh`], // as CRIU runs it: its first line is #!/bin/sh
    env: { CRTOOLS_SCRIPT_ACTION: action, ...env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: out.code, ms: performance.now() - started, stderr: new TextDecoder().decode(out.stderr) };
}

Deno.test("the script lets the tasks resume only after an ok verdict", async () => {
  const dir = scratch();
  const gate = openGate(`${dir}/work`, 120);
  const running = runScript(dir, "post-restore", gate.env);
  await new Promise((r) => setTimeout(r, 300));
  ok(gate.seen(), "the script marked the gate before waiting");
  gate.settle(true);
  const r = await running;
  assertEquals(r.code, 0, r.stderr);
  ok(r.ms >= 250, `it waited for the verdict (${r.ms} ms)`);
  Deno.removeSync(dir, { recursive: true });
});

Deno.test("a fail verdict fails the script at once", async () => {
  const dir = scratch();
  const gate = openGate(`${dir}/work`, 120);
  const running = runScript(dir, "post-restore", gate.env);
  await new Promise((r) => setTimeout(r, 100));
  gate.settle(false);
  const r = await running;
  assertEquals(r.code, 1);
  ok(r.stderr.includes("verdict: fail"), r.stderr);
  Deno.removeSync(dir, { recursive: true });
});

Deno.test("ARCH killed while the script waits: the kernel releases the lock, the script fails at once", async () => {
  const dir = scratch();
  const work = `${dir}/work`;
  const module = new URL("../../src/restore/restore_gate.ts", import.meta.url).href;
  const holder = new Deno.Command(Deno.execPath(), {
    args: [
      "eval",
      `import { openGate } from "${module}"; openGate(${JSON.stringify(work)}, 120); console.log("held");
      setTimeout(() => {}, 60000);`,
    ],
    stdout: "piped",
  }).spawn();
  const reader = holder.stdout.getReader();
  const first = await reader.read();
  assertEquals(new TextDecoder().decode(first.value).trim(), "held");
  const running = runScript(dir, "post-restore", { ARCH_RESTORE_GATE: work, ARCH_RESTORE_GATE_TIMEOUT: "120" });
  await new Promise((r) => setTimeout(r, 300));
  ok(Deno.statSync(`${work}/gate.seen`).isFile, "the script waits");
  const killedAt = performance.now();
  holder.kill("SIGKILL");
  const r = await running;
  assertEquals(r.code, 1);
  ok(performance.now() - killedAt < 2000, "fails at once, not at the bound");
  ok(r.stderr.includes("verdict: none"), r.stderr);
  reader.releaseLock();
  await holder.stdout.cancel();
  await holder.status;
  Deno.removeSync(dir, { recursive: true });
});

Deno.test("the wait is bounded: a verdict that never comes fails the script after the bound", async () => {
  const dir = scratch();
  const gate = openGate(`${dir}/work`, 1);
  const r = await runScript(dir, "post-restore", gate.env);
  assertEquals(r.code, 1);
  ok(r.ms >= 900 && r.ms < 5000, `${r.ms} ms`);
  ok(gateTimedOut(`${dir}/work`), "it leaves gate.timeout, so ARCH keeps the checkpoint");
  gate.settle(true);
  Deno.removeSync(dir, { recursive: true });
});

Deno.test("without a gate, and at other actions, the script does not wait and succeeds", async () => {
  const dir = scratch();
  assertEquals((await runScript(dir, "post-restore", {})).code, 0);
  assertEquals((await runScript(dir, "post-restore", { ARCH_RESTORE_GATE: "" })).code, 0);
  const gate = openGate(`${dir}/work`, 120);
  const r = await runScript(dir, "post-dump", gate.env);
  assertEquals(r.code, 0);
  ok(r.ms < 2000);
  gate.settle(true);
  Deno.removeSync(dir, { recursive: true });
});

Deno.test("bundleHonoursGate: only a configuration whose action script carries the gate", () => {
  const dir = scratch();
  const bundle = `${dir}/bundle`;
  Deno.mkdirSync(bundle);
  const spec = (config: string) =>
    Deno.writeTextFileSync(
      `${bundle}/config.json`,
      JSON.stringify({ annotations: { [CRIU_CONFIG_ANNOTATION]: config } }),
    );
  Deno.writeTextFileSync(`${dir}/criu.conf`, criuConfig(`${dir}/criu-action.sh`));
  spec(`${dir}/criu.conf`);
  ok(bundleHonoursGate(bundle));
  Deno.writeTextFileSync(`${dir}/old.sh`, "#!/bin/sh\nexit 0\n");
  Deno.writeTextFileSync(`${dir}/old.conf`, criuConfig(`${dir}/old.sh`));
  spec(`${dir}/old.conf`);
  ok(!bundleHonoursGate(bundle), "an older script");
  spec(`${dir}/missing.conf`);
  ok(!bundleHonoursGate(bundle), "a missing configuration");
  Deno.writeTextFileSync(`${bundle}/config.json`, "{}");
  ok(!bundleHonoursGate(bundle), "no annotation");
  Deno.removeSync(dir, { recursive: true });
});

Deno.test("gateTimeoutSeconds: 600 s, more for very large page data", () => {
  assertEquals(gateTimeoutSeconds(512 << 20), 600);
  assertEquals(gateTimeoutSeconds(8 * 1024 ** 3), 1024);
});

Deno.test("a verdict in time leaves no timeout mark", async () => {
  const dir = scratch();
  const gate = openGate(`${dir}/work`, 5);
  gate.settle(true);
  assertEquals((await runScript(dir, "post-restore", gate.env)).code, 0);
  ok(!gateTimedOut(`${dir}/work`));
  Deno.removeSync(dir, { recursive: true });
});

const SECRET = new Uint8Array(32).fill(7);
const EXPECTED = { scope: "s", key: "k", image: "img" };

async function checkpoint(): Promise<string> {
  const dir = Deno.makeTempDirSync({ prefix: "arch-gate-ckpt-" });
  Deno.mkdirSync(`${dir}/criu`);
  Deno.writeTextFileSync(`${dir}/criu/core-1.img`, "core");
  Deno.writeTextFileSync(`${dir}/criu/pagemap-1.img`, "pagemap");
  Deno.writeFileSync(`${dir}/criu/pages-1.img`, new Uint8Array(1 << 20).fill(1));
  Deno.writeTextFileSync(`${dir}/rootfs.tar`, "tar");
  const files = await hashFiles(dir, ["criu/core-1.img", "criu/pagemap-1.img", "criu/pages-1.img", "rootfs.tar"]);
  const manifest: Manifest = {
    version: MANIFEST_VERSION,
    containerId: "c",
    namespace: "n",
    scope: "s",
    key: "k",
    image: "img",
    createdAt: new Date().toISOString(),
    arch: { version: "t" },
    runc: { version: "t" },
    criu: { version: "t" },
    kernel: "t",
    cpuArch: "x86_64",
    rootfs: { archive: "rootfs.tar", upperdir: null },
    timings: {},
    files,
  };
  await writeManifest(dir, manifest, SECRET);
  return dir;
}

/** Overwrites one byte in the middle of `path`, keeping its size. */
function flipMiddle(path: string): void {
  const bytes = Deno.readFileSync(path);
  bytes[bytes.length >> 1]! ^= 0xff;
  Deno.writeFileSync(path, bytes);
}

Deno.test("isPageData: only criu/pages-<n>.img", () => {
  ok(isPageData("criu/pages-1.img"));
  ok(isPageData("criu/pages-12.img"));
  for (const p of ["criu/pagemap-1.img", "criu/core-1.img", "pages-1.img", "criu/pages-1.img.x", "rootfs.tar"]) {
    ok(!isPageData(p), p);
  }
});

Deno.test("split verification: page data deferred, everything else at once", async () => {
  const dir = await checkpoint();
  const { manifest, deferred } = await verifyCheckpointExcept(dir, SECRET, EXPECTED, isPageData);
  assertEquals(deferred.map((f) => f.path), ["criu/pages-1.img"]);
  await verifyFiles(dir, deferred);
  assertEquals((await verifyCheckpoint(dir, SECRET, EXPECTED)).files, manifest.files);

  flipMiddle(`${dir}/criu/pages-1.img`);
  const split = await verifyCheckpointExcept(dir, SECRET, EXPECTED, isPageData); // content not read yet
  await rejects(verifyFiles(dir, split.deferred), /"criu\/pages-1.img" does not match its manifest checksum/);
  await rejects(verifyCheckpoint(dir, SECRET, EXPECTED), /"criu\/pages-1.img" does not match/);

  Deno.writeFileSync(`${dir}/criu/pages-1.img`, new Uint8Array(10)); // size changed: refused up front
  await rejects(verifyCheckpointExcept(dir, SECRET, EXPECTED, isPageData), /"criu\/pages-1.img" does not match/);
  Deno.removeSync(dir, { recursive: true });
});

Deno.test("split verification: a parsed image or the layer archive is never deferred", async () => {
  const dir = await checkpoint();
  flipMiddle(`${dir}/criu/core-1.img`);
  await rejects(verifyCheckpointExcept(dir, SECRET, EXPECTED, isPageData), /"criu\/core-1.img" does not match/);
  Deno.removeSync(dir, { recursive: true });
  const again = await checkpoint();
  flipMiddle(`${again}/rootfs.tar`);
  await rejects(verifyCheckpointExcept(again, SECRET, EXPECTED, () => true), /"rootfs.tar" does not match/);
  Deno.removeSync(again, { recursive: true });
});
