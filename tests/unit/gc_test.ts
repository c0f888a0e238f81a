/**
 * Checkpoint retention: the selection (pure), and against a real checkpoint root (root
 * needed for the ownership checks): symlinks planted in a root are never followed by the
 * scan or the removal, a key whose claim a live process holds is left alone, a dead writer's
 * claim and temporary directory are cleaned up, and the options are validated.
 */

import { deepEqual as assertEquals, ok, throws } from "node:assert/strict";
import { type CheckpointEntry, type KeyEntry, readKeyDir, scanCheckpoints } from "../../src/store/listing.ts";
import { collectGarbage, type GcPolicy, quarantinedAt, selectGarbage, selectKey } from "../../src/store/gc.ts";
import { claimKey } from "../../src/store/claim.ts";
import { gcPolicy } from "../../src/cli/gc.ts";
import { UsageError } from "../../src/util/errors.ts";

const DAY = 86_400_000;
const NOW = Date.parse("2026-11-29T12:00:00Z");

function entry(name: string, status: CheckpointEntry["status"], daysOld: number): CheckpointEntry {
  return {
    root: "/r",
    scope: "s",
    key: "k",
    keyDir: "/r/s/k",
    name,
    path: `/r/s/k/${name}`,
    status,
    createdAt: new Date(NOW - daysOld * DAY).toISOString(),
    bytes: 100,
    files: 1,
  };
}
const key = (checkpoints: CheckpointEntry[], claim?: KeyEntry["claim"]): KeyEntry => ({
  root: "/r",
  scope: "s",
  key: "k",
  keyDir: "/r/s/k",
  checkpoints,
  ...(claim !== undefined ? { claim } : {}),
});
const policy = (p: Partial<GcPolicy> = {}): GcPolicy => ({
  now: NOW,
  keepPerKey: 1,
  includeCurrent: false,
  consumedIsGarbage: true,
  quarantineMinAgeMs: 0,
  ...p,
});
const removed = (k: KeyEntry, p: GcPolicy, held = false) =>
  selectKey(k, p, held).filter((d) => d.remove).map((d) => d.entry.name).sort();

Deno.test("gc selection", async (t) => {
  const all = [
    entry("ckpt-3", "committed", 10),
    entry("ckpt-2", "superseded", 20),
    entry("quarantine-1", "quarantined", 1),
    entry(".tmp-4", "stale", 0),
    entry(".tmp-5", "in-progress", 0),
  ];
  await t.step("stale temporaries, quarantined and superseded go; the current one and a live writer's stay", () => {
    assertEquals(removed(key(all), policy()), [".tmp-4", "ckpt-2", "quarantine-1"]);
  });
  await t.step("the current checkpoint stays past the age limit unless --include-current", () => {
    assertEquals(removed(key(all), policy({ maxAgeMs: 7 * DAY })), [".tmp-4", "ckpt-2", "quarantine-1"]);
    assertEquals(removed(key(all), policy({ maxAgeMs: 7 * DAY, includeCurrent: true })), [
      ".tmp-4",
      "ckpt-2",
      "ckpt-3",
      "quarantine-1",
    ]);
    assertEquals(removed(key(all), policy({ maxAgeMs: 30 * DAY, includeCurrent: true })), [
      ".tmp-4",
      "ckpt-2",
      "quarantine-1",
    ]);
  });
  await t.step("--keep 0 removes the current one only with --include-current", () => {
    const one = key([entry("ckpt-3", "committed", 0)]);
    assertEquals(removed(one, policy({ keepPerKey: 0 })), []);
    assertEquals(removed(one, policy({ keepPerKey: 0, includeCurrent: true })), ["ckpt-3"]);
  });
  await t.step("consumed goes when checkpoints are never restored twice, else it is the current one", () => {
    const consumed = key([entry("ckpt-3", "consumed", 0)]);
    assertEquals(removed(consumed, policy()), ["ckpt-3"]);
    assertEquals(removed(consumed, policy({ consumedIsGarbage: false })), []);
  });
  await t.step("a key whose claim is live keeps everything; under our own claim a temporary is a dead writer's", () => {
    const busy = key(all, { op: "checkpoint", pid: 42, host: "h", at: "", live: true, understood: true });
    assertEquals(removed(busy, policy()), []);
    ok(selectGarbage([busy], policy()).every((d) => d.reason.startsWith('key busy: "checkpoint" by pid 42')));
    assertEquals(removed(key(all), policy(), true), [".tmp-4", ".tmp-5", "ckpt-2", "quarantine-1"]);
  });
});

Deno.test("finding 12: a quarantined checkpoint goes only after the quarantine age, or with --quarantined", () => {
  const stampOf = (daysAgo: number) => new Date(NOW - daysAgo * DAY).toISOString().replace(/[-:.]/g, "");
  // createdAt (when the checkpoint was made) is old for both: the age counts from the quarantine stamp.
  const recent = { ...entry(`quarantine-${stampOf(2)}-7-0`, "quarantined", 40) };
  const old = { ...entry(`quarantine-${stampOf(8)}-7-1`, "quarantined", 40) };
  assertEquals(quarantinedAt(recent), NOW - 2 * DAY);
  const week = policy({ quarantineMinAgeMs: 7 * DAY });
  assertEquals(removed(key([recent, old]), week), [old.name]);
  ok(selectKey(key([recent]), week)[0]!.reason.includes("--quarantined"));
  assertEquals(removed(key([recent, old]), policy({ quarantineMinAgeMs: 0 })), [old.name, recent.name].sort());
  // A name without a stamp: its creation time counts.
  assertEquals(removed(key([entry("quarantine-x", "quarantined", 3)]), week), []);
});

Deno.test("gc options: host defaults, overrides, one sentence on a bad value", () => {
  const host = { gc: { maxAgeDays: 30, keepPerKey: 2, quarantineDays: 7 }, restoreConsumed: "never" };
  const p = gcPolicy({}, host, NOW);
  assertEquals([p.maxAgeMs, p.keepPerKey, p.consumedIsGarbage, p.includeCurrent], [30 * DAY, 2, true, false]);
  const q = gcPolicy(
    { olderThan: "12h", keep: "0", includeCurrent: true },
    { ...host, restoreConsumed: "always" },
    NOW,
  );
  assertEquals([q.maxAgeMs, q.keepPerKey, q.consumedIsGarbage, q.includeCurrent], [12 * 3_600_000, 0, false, true]);
  assertEquals(p.quarantineMinAgeMs, 7 * DAY, "quarantined checkpoints: host gc.quarantineDays");
  assertEquals(gcPolicy({ quarantined: true }, host, NOW).quarantineMinAgeMs, 0, "--quarantined: any age");
  throws(
    () => gcPolicy({ olderThan: "soon" }, host, NOW),
    (e: Error) => e instanceof UsageError && /"soon"/.test(e.message),
  );
  throws(
    () => gcPolicy({ keep: "-1" }, host, NOW),
    (e: Error) => e instanceof UsageError && /--keep "-1"/.test(e.message),
  );
});

const ROOT_ONLY = Deno.uid() !== 0;

/** A checkpoint root with one key: a committed current checkpoint, a quarantined one, a temporary one. */
function makeRoot(): { base: string; root: string; keyDir: string; outside: string } {
  const base = Deno.makeTempDirSync({ prefix: "arch-gc-" });
  Deno.chmodSync(base, 0o755);
  const root = `${base}/root`;
  const keyDir = `${root}/moby/k1`;
  for (const d of [root, `${root}/moby`, keyDir, `${keyDir}/ckpt-1`, `${keyDir}/quarantine-2`, `${keyDir}/.tmp-3`]) {
    Deno.mkdirSync(d, { mode: 0o700 });
  }
  Deno.writeTextFileSync(`${keyDir}/ckpt-1/manifest.json`, JSON.stringify({ createdAt: new Date().toISOString() }));
  Deno.writeTextFileSync(`${keyDir}/quarantine-2/data`, "x".repeat(1000));
  Deno.symlinkSync("ckpt-1", `${keyDir}/current`);
  // Outside the root: something that looks like a key, which must never be read or removed.
  const outside = `${base}/outside`;
  Deno.mkdirSync(`${outside}/k2/quarantine-9`, { recursive: true, mode: 0o700 });
  Deno.writeTextFileSync(`${outside}/k2/quarantine-9/precious`, "keep me");
  return { base, root, keyDir, outside };
}

const names = (dir: string) => [...Deno.readDirSync(dir)].map((e) => e.name).sort();

Deno.test(
  { name: "gc and the scan never follow a symlink planted in a checkpoint root", ignore: ROOT_ONLY },
  async () => {
    const { base, root, keyDir, outside } = makeRoot();
    try {
      Deno.symlinkSync(outside, `${root}/moby/evil`); // a "scope" or "key" that is a link
      Deno.symlinkSync(`${outside}/k2/quarantine-9`, `${keyDir}/quarantine-8`); // a checkpoint dir that is a link
      Deno.symlinkSync(`${outside}/k2`, `${root}/evil-scope`);
      const catalog = scanCheckpoints([{ path: root, shared: false }], Date.now());
      assertEquals(catalog.keys.map((k) => k.keyDir), [keyDir]);
      assertEquals(catalog.keys[0]!.checkpoints.map((c) => c.name).sort(), [".tmp-3", "ckpt-1", "quarantine-2"]);
      const report = await collectGarbage(catalog.keys, policy({ now: Date.now(), maxAgeMs: 0, includeCurrent: true }));
      assertEquals(report.removed.map((d) => d.entry.name).sort(), [".tmp-3", "ckpt-1", "quarantine-2"]);
      assertEquals(names(keyDir), ["quarantine-8"], "the planted link itself is left, not followed");
      assertEquals(Deno.readTextFileSync(`${outside}/k2/quarantine-9/precious`), "keep me");
      // A root that is a symlink is not walked at all.
      Deno.symlinkSync(outside, `${base}/linkroot`);
      const viaLink = scanCheckpoints([{ path: `${base}/linkroot`, shared: false }], Date.now());
      assertEquals(viaLink.keys, []);
      ok(viaLink.skipped[0]?.includes("symbolic link"), viaLink.skipped.join());
    } finally {
      Deno.removeSync(base, { recursive: true });
    }
  },
);

Deno.test({ name: "gc leaves a key alone while a live process holds its claim", ignore: ROOT_ONLY }, async () => {
  const { base, root, keyDir } = makeRoot();
  try {
    using _claim = await claimKey(keyDir, "checkpoint", { waitMs: 0 }); // as a running checkpoint holds it
    const catalog = scanCheckpoints([{ path: root, shared: false }], Date.now());
    assertEquals(catalog.keys[0]!.claim?.live, true);
    assertEquals(catalog.keys[0]!.checkpoints.find((c) => c.name === ".tmp-3")?.status, "in-progress");
    const report = await collectGarbage(catalog.keys, policy({ now: Date.now(), maxAgeMs: 0, includeCurrent: true }));
    assertEquals(report.removed, []);
    ok(report.skipped[0]?.includes('checkpoint key is busy ("checkpoint" by pid'), report.skipped.join());
    assertEquals(names(keyDir), [".claim", ".tmp-3", "ckpt-1", "current", "quarantine-2"]);
  } finally {
    Deno.removeSync(base, { recursive: true });
  }
});

Deno.test(
  { name: "gc breaks a dead writer's claim and removes its temporary directory", ignore: ROOT_ONLY },
  async () => {
    const { base, root, keyDir } = makeRoot();
    try {
      Deno.mkdirSync(`${keyDir}/.claim`, { mode: 0o700 });
      const dead = { host: Deno.hostname(), pid: 2 ** 22 + 7, start: 1, op: "checkpoint", nonce: "n", at: "" };
      Deno.writeTextFileSync(`${keyDir}/.claim/owner.json`, JSON.stringify(dead));
      const catalog = scanCheckpoints([{ path: root, shared: false }], Date.now());
      assertEquals(catalog.keys[0]!.claim?.live, false);
      assertEquals(catalog.keys[0]!.checkpoints.find((c) => c.name === ".tmp-3")?.status, "stale");
      const report = await collectGarbage(catalog.keys, policy({ now: Date.now() }));
      assertEquals(report.removed.map((d) => d.entry.name).sort(), [".tmp-3", "quarantine-2"]);
      assertEquals(report.bytes, 1000);
      assertEquals(names(keyDir), ["ckpt-1", "current"], "the current checkpoint stays, the claim is released");
      assertEquals(readKeyDir(keyDir)?.checkpoints.map((c) => c.status), ["committed"]);
    } finally {
      Deno.removeSync(base, { recursive: true });
    }
  },
);

/** A key directory as the store leaves it: `ckpt-<n>` with a manifest, `current` naming the newest. */
function makeKey(keyDir: string, checkpoints = ["ckpt-1"]): void {
  Deno.mkdirSync(keyDir, { mode: 0o700 });
  for (const c of checkpoints) {
    Deno.mkdirSync(`${keyDir}/${c}`, { mode: 0o700 });
    Deno.writeTextFileSync(`${keyDir}/${c}/manifest.json`, JSON.stringify({ createdAt: new Date().toISOString() }));
    Deno.writeTextFileSync(`${keyDir}/${c}/rootfs.tar`, "state of " + keyDir);
  }
  Deno.symlinkSync(checkpoints.at(-1)!, `${keyDir}/current`);
}

/** Every file below `dir` (relative), to see that nothing was removed. */
function allFiles(dir: string, rel = ""): string[] {
  return [...Deno.readDirSync(`${dir}/${rel}`)].flatMap((e) => {
    const p = rel ? `${rel}/${e.name}` : e.name;
    return e.isDirectory ? allFiles(dir, p) : [p];
  }).sort();
}

const HOSTILE = [".tmp-job7", "ckpt-x", "quarantine-y", ".claim", "current", ".current-z"];

Deno.test(
  {
    name: "finding 1: keys named like the store's own entries (on disk from an older node) are keys of their own",
    ignore: ROOT_ONLY,
  },
  async (t) => {
    const { base, root } = makeRoot(); // moby/k1 is a normal key
    const scope = `${root}/moby`;
    try {
      for (const name of ["job-a", "job-c", ...HOSTILE]) makeKey(`${scope}/${name}`);
      // old so that a claim (were the scope taken for a key) would count as stale at once
      const old = new Date(Date.now() - 3600_000);
      Deno.utimeSync(`${scope}/.claim`, old, old);
      await t.step("ls: every key is found, none is hidden, the scope is never a key", () => {
        const catalog = scanCheckpoints([{ path: root, shared: false }], Date.now());
        assertEquals(
          catalog.keys.map((k) => k.key).sort(),
          [...HOSTILE, "job-a", "job-c", "k1"].sort(),
        );
        ok(catalog.keys.every((k) => k.keyDir === `${scope}/${k.key}` && k.scope === "moby"));
        for (const k of catalog.keys.filter((k) => k.key !== "k1")) {
          assertEquals(k.checkpoints.map((c) => [c.name, c.status]), [["ckpt-1", "committed"]], k.key);
          assertEquals(k.claim, undefined, k.key);
        }
      });
      await t.step(
        "gc (default policy) removes no key's committed checkpoint and leaves the scope as it was",
        async () => {
          const before = allFiles(scope).filter((f) => !f.startsWith("k1/"));
          const catalog = scanCheckpoints([{ path: root, shared: false }], Date.now());
          const report = await collectGarbage(catalog.keys, policy({ now: Date.now(), quarantineMinAgeMs: 7 * DAY }));
          assertEquals(report.removed.map((d) => d.entry.path).sort(), [`${scope}/k1/.tmp-3`]);
          assertEquals(report.skipped, []);
          assertEquals(allFiles(scope).filter((f) => !f.startsWith("k1/")), before);
          for (const name of HOSTILE) assertEquals(Deno.readLinkSync(`${scope}/${name}/current`), "ckpt-1");
        },
      );
      await t.step("a manual mkdir of an empty .tmp-* or .claim in the scope does not make it a key", async () => {
        Deno.mkdirSync(`${scope}/.tmp-manual`, { mode: 0o700 });
        Deno.mkdirSync(`${root}/other`, { mode: 0o700 });
        makeKey(`${root}/other/job-d`);
        Deno.mkdirSync(`${root}/other/.claim`, { mode: 0o700 });
        Deno.utimeSync(`${root}/other/.claim`, old, old);
        const catalog = scanCheckpoints([{ path: root, shared: false }], Date.now());
        ok(!catalog.keys.some((k) => k.keyDir === scope || k.keyDir === `${root}/other`));
        ok(catalog.keys.some((k) => k.keyDir === `${root}/other/job-d`));
        const report = await collectGarbage(catalog.keys, policy({ now: Date.now(), quarantineMinAgeMs: 0 }));
        assertEquals(report.removed.map((d) => d.entry.path), [`${scope}/k1/quarantine-2`], "only k1's garbage");
        assertEquals(names(`${root}/other`), [".claim", "job-d"]);
        assertEquals(names(`${root}/other/job-d`), ["ckpt-1", "current"]);
      });
    } finally {
      Deno.removeSync(base, { recursive: true });
    }
  },
);

Deno.test(
  {
    name: "finding 1: gc takes the victim key's own claim: a live holder of that key keeps it whole",
    ignore: ROOT_ONLY,
  },
  async () => {
    const { base, root } = makeRoot();
    const scope = `${root}/moby`;
    try {
      // The victim has a superseded checkpoint (garbage) and a live restore running on it.
      makeKey(`${scope}/.tmp-job7`, ["ckpt-0", "ckpt-1"]);
      makeKey(`${scope}/job-b`, ["ckpt-0", "ckpt-1"]);
      using _restore = await claimKey(`${scope}/.tmp-job7`, "restore", { waitMs: 0 });
      const catalog = scanCheckpoints([{ path: root, shared: false }], Date.now());
      const report = await collectGarbage(catalog.keys, policy({ now: Date.now() }));
      assertEquals(
        report.removed.map((d) => d.entry.path).sort(),
        [`${scope}/job-b/ckpt-0`, `${scope}/k1/.tmp-3`, `${scope}/k1/quarantine-2`],
      );
      ok(
        report.skipped.some((s) => s.startsWith('moby/.tmp-job7: checkpoint key is busy ("restore"')),
        report.skipped.join(),
      );
      assertEquals(names(`${scope}/.tmp-job7`), [".claim", "ckpt-0", "ckpt-1", "current"]);
      ok(!names(scope).includes(".claim"), "no claim was taken on the scope");
    } finally {
      Deno.removeSync(base, { recursive: true });
    }
  },
);

Deno.test(
  { name: "finding 1: gc never breaks a claim it does not recognise", ignore: ROOT_ONLY },
  async () => {
    const { base, root, keyDir } = makeRoot();
    try {
      Deno.mkdirSync(`${keyDir}/.claim`, { mode: 0o700 });
      Deno.writeTextFileSync(`${keyDir}/.claim/owner.json`, "{not json");
      const old = new Date(Date.now() - 3600_000);
      Deno.utimeSync(`${keyDir}/.claim/owner.json`, old, old);
      Deno.utimeSync(`${keyDir}/.claim`, old, old);
      const catalog = scanCheckpoints([{ path: root, shared: false }], Date.now());
      assertEquals(catalog.keys[0]!.claim?.understood, false);
      const report = await collectGarbage(catalog.keys, policy({ now: Date.now() }));
      assertEquals(report.removed, []);
      ok(report.skipped[0]?.includes("does not recognise"), report.skipped.join());
      assertEquals(Deno.readTextFileSync(`${keyDir}/.claim/owner.json`), "{not json");
      assertEquals(names(keyDir), [".claim", ".tmp-3", "ckpt-1", "current", "quarantine-2"]);
    } finally {
      Deno.removeSync(base, { recursive: true });
    }
  },
);
