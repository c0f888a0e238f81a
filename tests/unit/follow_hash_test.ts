/**
 * The hash follower (`src/store/follow_hash.ts`) against a full re-hash (`sha256File`): files
 * appended to in steps while it follows them, files that appear late, a replaced file, and
 * an abort. Deno's op and resource sanitizers check that nothing (timer, read, open file) is
 * left once `finish` or `abort` has settled.
 */

import { PAGES_IMAGE } from "../../src/store/layout.ts";
import { deepEqual as assertEquals, ok } from "node:assert/strict";
import { HashFollower } from "../../src/store/follow_hash.ts";
import { sha256File } from "../../src/store/manifest.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Deterministic bytes (not all the same, so that a misplaced chunk changes the digest). */
function bytes(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed * 2654435761 >>> 0;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    out[i] = x >>> 24;
  }
  return out;
}

/** Appends `steps` chunks of odd sizes to `path`, pausing between them. */
async function appendInSteps(path: string, steps: number[], pauseMs: number): Promise<void> {
  const file = await Deno.open(path, { write: true, create: true, append: true });
  try {
    for (const [i, n] of steps.entries()) {
      const data = bytes(n, i + 1);
      for (let off = 0; off < n;) off += await file.write(data.subarray(off));
      await sleep(pauseMs);
    }
  } finally {
    file.close();
  }
}

async function writeAll(path: string, data: Uint8Array): Promise<void> {
  const file = await Deno.open(path, { write: true, create: true, append: true });
  try {
    for (let off = 0; off < data.length;) off += await file.write(data.subarray(off));
  } finally {
    file.close();
  }
}

Deno.test("follower: files appended to in steps hash the same as sha256File of the finished files", async () => {
  const root = Deno.makeTempDirSync();
  try {
    const follower = new HashFollower(root, "criu", PAGES_IMAGE, 2);
    await sleep(10); // the directory does not exist yet
    Deno.mkdirSync(`${root}/criu`);
    const steps = [1, 4095, 4096, 5 << 20, 123457, 0, 3 << 20, 7, (4 << 20) + 1, 65536];
    await Promise.all([
      appendInSteps(`${root}/criu/pages-1.img`, steps, 3),
      appendInSteps(`${root}/criu/pages-2.img`, [...steps].reverse(), 5),
      sleep(20).then(() => appendInSteps(`${root}/criu/pages-13.img`, [8192, 8192], 1)), // appears late
      writeAll(`${root}/criu/pagemap-1.img`, bytes(1000, 9)), // not followed
    ]);
    await writeAll(`${root}/criu/pages-3.img`, new Uint8Array()); // empty, created after the writers
    const got = await follower.finish();
    assertEquals([...got.keys()].sort(), [
      "criu/pages-1.img",
      "criu/pages-13.img",
      "criu/pages-2.img",
      "criu/pages-3.img",
    ]);
    for (const [rel, digest] of got) assertEquals(digest, await sha256File(`${root}/${rel}`), rel);
    assertEquals(got.get("criu/pages-3.img")?.size, 0);
    ok(follower.followedBytes > 0, "bytes were hashed while the writers were writing");
    assertEquals(follower.followedBytes + follower.tailBytes, 2 * steps.reduce((a, b) => a + b) + 16384);
    assertEquals(follower.rehashed, 0);
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test("follower: a file written entirely after the writer's last poll is hashed by finish (the tail)", async () => {
  const root = Deno.makeTempDirSync();
  try {
    Deno.mkdirSync(`${root}/criu`);
    const follower = new HashFollower(root, "criu", PAGES_IMAGE, 60_000); // never polls again
    await sleep(5);
    await writeAll(`${root}/criu/pages-1.img`, bytes(3 << 20, 4));
    const got = await follower.finish();
    assertEquals(got.get("criu/pages-1.img"), await sha256File(`${root}/criu/pages-1.img`));
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test("follower: a path replaced by another file is hashed again from its start", async () => {
  const root = Deno.makeTempDirSync();
  try {
    Deno.mkdirSync(`${root}/criu`);
    await writeAll(`${root}/criu/pages-1.img`, bytes(1 << 20, 1));
    const follower = new HashFollower(root, "criu", PAGES_IMAGE, 1);
    while (follower.followedBytes < 1 << 20) await sleep(2);
    await writeAll(`${root}/criu/new`, bytes(1 << 20, 2));
    Deno.renameSync(`${root}/criu/new`, `${root}/criu/pages-1.img`);
    const got = await follower.finish();
    assertEquals(got.get("criu/pages-1.img"), await sha256File(`${root}/criu/pages-1.img`));
    assertEquals(follower.rehashed, 1);
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test("follower: abort while the writer writes leaves nothing open or pending, and is idempotent", async () => {
  const root = Deno.makeTempDirSync();
  try {
    Deno.mkdirSync(`${root}/criu`);
    const follower = new HashFollower(root, "criu", PAGES_IMAGE, 1);
    const writing = appendInSteps(`${root}/criu/pages-1.img`, [1 << 20, 1 << 20, 1 << 20], 2);
    await sleep(3);
    await follower.abort();
    await follower.abort();
    await writing;
    await assertRejects(() => follower.finish());
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test("follower: abort before the directory exists", async () => {
  const root = Deno.makeTempDirSync();
  try {
    const follower = new HashFollower(root, "criu", PAGES_IMAGE);
    await follower.abort();
    assertEquals(follower.followedBytes, 0);
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

async function assertRejects(fn: () => Promise<unknown>): Promise<void> {
  let rejected = false;
  try {
    await fn();
  } catch {
    rejected = true;
  }
  ok(rejected, "expected a rejection");
}

Deno.test("follower: a followed file removed before finish is left out", async () => {
  const root = Deno.makeTempDirSync();
  try {
    Deno.mkdirSync(`${root}/criu`);
    await writeAll(`${root}/criu/pages-1.img`, bytes(5000, 1));
    await writeAll(`${root}/criu/pages-2.img`, bytes(5000, 2));
    const follower = new HashFollower(root, "criu", PAGES_IMAGE, 1);
    while (follower.followedBytes < 10000) await sleep(2);
    Deno.removeSync(`${root}/criu/pages-1.img`);
    const got = await follower.finish();
    assertEquals([...got.keys()], ["criu/pages-2.img"]);
    assertEquals(got.get("criu/pages-2.img"), await sha256File(`${root}/criu/pages-2.img`));
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});
