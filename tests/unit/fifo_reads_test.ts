/**
 * Files of a checkpoint tree a tenant may replace (a FIFO, a symbolic link, a huge file) are
 * read only as small regular files, opened without blocking: `manifest.json`,
 * `manifest.hmac`, a claim's `owner.json`, `consumed`, CRIU images. Each case runs in a fresh
 * Deno under a time limit, so that a regression hangs that process, not the test run.
 */

import { deepEqual as assertEquals, ok } from "node:assert/strict";

const module = (path: string) => JSON.stringify(new URL(`../../src/${path}`, import.meta.url).href);

/** Seconds a case may take: a read that blocks on a FIFO never returns. */
const LIMIT_MS = 30_000;

/** Runs `code` (which prints one JSON value) in a fresh Deno, killed after {@link LIMIT_MS}; returns that value. */
async function guarded(code: string): Promise<Record<string, unknown>> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--ext=ts", code],
    cwd: new URL("../../", import.meta.url).pathname,
    signal: AbortSignal.timeout(LIMIT_MS),
  }).output();
  const stdout = new TextDecoder().decode(out.stdout);
  ok(out.success, `the case failed or hung: ${new TextDecoder().decode(out.stderr)}`);
  return JSON.parse(stdout.trim().split("\n").at(-1)!);
}

/** Creates a FIFO at `path` (0600), through libc: no program is spawned. */
function mkfifo(path: string): void {
  const lib = Deno.dlopen("libc.so.6", { mkfifo: { parameters: ["buffer", "u32"], result: "i32" } });
  try {
    if (lib.symbols.mkfifo(new TextEncoder().encode(`${path}\0`), 0o600) !== 0) {
      throw new Error(`mkfifo ${path} failed`);
    }
  } finally {
    lib.close();
  }
  if (!Deno.lstatSync(path).isFifo) throw new Error(`${path} is not a FIFO`);
}

/** A temporary checkpoint-like tree: `<root>/moby/job-1/{current -> ckpt-1, ckpt-1/criu, .claim}`. */
function checkpointTree(): { root: string; keyDir: string; ckpt: string } {
  const root = Deno.makeTempDirSync({ prefix: "arch-fifo-" });
  Deno.chmodSync(root, 0o700);
  const keyDir = `${root}/moby/job-1`;
  const ckpt = `${keyDir}/ckpt-1`;
  Deno.mkdirSync(`${ckpt}/criu`, { recursive: true, mode: 0o700 });
  Deno.symlinkSync("ckpt-1", `${keyDir}/current`);
  return { root, keyDir, ckpt };
}

Deno.test("a FIFO planted as manifest.json is refused at once as not a regular file, not read", async () => {
  const { root, ckpt } = checkpointTree();
  try {
    mkfifo(`${ckpt}/manifest.json`);
    const result = await guarded(`
      import { verifyCheckpoint } from ${module("store/manifest.ts")};
      const started = performance.now();
      let message = "";
      try {
        await verifyCheckpoint(${
      JSON.stringify(ckpt)
    }, new Uint8Array(32), { scope: "moby", key: "job-1", image: "i" });
      } catch (error) {
        message = error.message;
      }
      console.log(JSON.stringify({ message, ms: performance.now() - started }));
    `);
    ok(String(result.message).includes("not a regular file"), String(result.message));
    ok(String(result.message).includes("manifest.json"), String(result.message));
    ok(Number(result.ms) < 2_000, `took ${result.ms} ms`);
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test("manifest.json through a link or over the size cap, and a FIFO manifest.hmac, are refused", async () => {
  const { root, ckpt } = checkpointTree();
  try {
    Deno.writeTextFileSync(`${root}/elsewhere.json`, "{}");
    Deno.symlinkSync(`${root}/elsewhere.json`, `${ckpt}/manifest.json`);
    const other = `${root}/moby/job-2/ckpt-1`;
    Deno.mkdirSync(other, { recursive: true });
    Deno.writeTextFileSync(`${other}/manifest.json`, "{}");
    mkfifo(`${other}/manifest.hmac`);
    const huge = `${root}/moby/job-3/ckpt-1`;
    Deno.mkdirSync(huge, { recursive: true });
    Deno.writeTextFileSync(`${huge}/manifest.json`, "");
    Deno.truncateSync(`${huge}/manifest.json`, (64 << 20) + 1); // sparse: nothing is written
    const result = await guarded(`
      import { readManifestBytes, UnauthenticatedCheckpoint, verifyCheckpoint } from ${module("store/manifest.ts")};
      const out: Record<string, unknown> = {};
      try { readManifestBytes(${JSON.stringify(ckpt)}); } catch (error) { out.link = error.message; }
      try { readManifestBytes(${JSON.stringify(huge)}); } catch (error) { out.huge = error.message; }
      try {
        await verifyCheckpoint(${
      JSON.stringify(other)
    }, new Uint8Array(32), { scope: "moby", key: "job-2", image: "i" });
      } catch (error) {
        out.hmac = error.message;
        out.unauthenticated = error instanceof UnauthenticatedCheckpoint;
      }
      console.log(JSON.stringify(out));
    `);
    ok(String(result.link).includes("is a symbolic link"), String(result.link));
    ok(String(result.huge).includes(`is larger than ${64 << 20} bytes`), String(result.huge));
    ok(String(result.hmac).includes('manifest.hmac" is not a regular file'), String(result.hmac));
    assertEquals(result.unauthenticated, true);
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test("a FIFO owner.json, consumed or CRIU image is treated as unknown, without blocking", async () => {
  const { root, keyDir, ckpt } = checkpointTree();
  try {
    Deno.mkdirSync(`${keyDir}/.claim`, { mode: 0o700 });
    mkfifo(`${keyDir}/.claim/owner.json`);
    mkfifo(`${ckpt}/consumed`);
    mkfifo(`${ckpt}/criu/pstree.img`);
    const result = await guarded(`
      import { claimKey } from ${module("store/claim.ts")};
      import { KeyStore } from ${module("store/store.ts")};
      import { readCriuImages } from ${module("criu/images.ts")};
      const out: Record<string, unknown> = {};
      try {
        (await claimKey(${JSON.stringify(keyDir)}, "restore", { waitMs: 200 })).release();
      } catch (error) {
        out.claim = error.message;
      }
      const store = new KeyStore(${JSON.stringify(root)}, "moby", "job-1");
      out.consumedBy = store.consumedBy() ?? null;
      out.processes = readCriuImages(${JSON.stringify(`${ckpt}/criu`)})?.processes.length ?? null;
      console.log(JSON.stringify(out));
    `);
    ok(String(result.claim).includes("checkpoint key is busy (a process that is starting)"), String(result.claim));
    assertEquals(result.consumedBy, null);
    assertEquals(result.processes, 0);
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test("consumed and owner.json that are regular files are still read", async () => {
  const { root, keyDir, ckpt } = checkpointTree();
  try {
    Deno.writeTextFileSync(
      `${ckpt}/consumed`,
      JSON.stringify({ at: "2026-01-01T00:00:00Z\x1b[2J", container: "c2", node: "n1" }),
    );
    const result = await guarded(`
      import { claimKey } from ${module("store/claim.ts")};
      import { KeyStore } from ${module("store/store.ts")};
      const claim = await claimKey(${JSON.stringify(keyDir)}, "checkpoint", { waitMs: 200 });
      let busy = "";
      try {
        await claimKey(${JSON.stringify(keyDir)}, "restore", { waitMs: 100 });
      } catch (error) {
        busy = error.message;
      }
      claim.release();
      const by = new KeyStore(${JSON.stringify(root)}, "moby", "job-1").consumedBy();
      console.log(JSON.stringify({ busy, by }));
    `);
    ok(String(result.busy).includes(`("checkpoint" by pid `), String(result.busy));
    assertEquals(result.by, 'by container "c2" on node "n1" at 2026-01-01T00:00:00Z2J');
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});
