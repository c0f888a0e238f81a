/**
 * The page images of a checkpoint are hashed while CRIU writes them (`store/follow_hash.ts`):
 * through real Docker, runc and CRIU, every sha256 and size in the committed manifest must
 * equal a full re-hash of the committed file, and the checkpoint must restore with its memory
 * intact (the restore side verifies it again). It prints the step timings (`hash` is the time
 * left after the dump: the tail of the page images and the small files).
 */

import { PAGES_IMAGE, UNLISTED } from "../../src/store/layout.ts";
import { deepEqual as assertEquals, ok } from "node:assert/strict";
import { listFiles, sha256File } from "../../src/store/manifest.ts";

import { dockerProgress, fullId, waitTicks } from "./_workload.ts";
import { archCli, archDockerRun, stackTest, uniqueName } from "./_env.ts";

const WORKLOAD = (mib: number) => ["workload", "--mem", String(mib), "--interval-ms", "50", "--verify-every", "5"];

stackTest("checkpoint hashes: the page images hashed during the dump match a full re-hash", async (t, stack) => {
  await t.step("256 MiB workload: manifest digests equal sha256File of every committed file", async () => {
    const key = uniqueName("hash");
    const name = uniqueName("job");
    await stack.docker(archDockerRun(name, key, [], WORKLOAD(256)));
    await waitTicks(stack, name, 3);
    const r = await archCli(stack, ["checkpoint", "--leave-running", await fullId(stack, name)]);
    assertEquals(r.code, 0, r.stdout + r.stderr);
    const dir = `${stack.checkpointRoot}/moby/${key}/${
      Deno.readLinkSync(`${stack.checkpointRoot}/moby/${key}/current`)
    }`;
    const manifest = JSON.parse(Deno.readTextFileSync(`${dir}/manifest.json`)) as {
      files: { path: string; size: number; sha256: string }[];
      timings: Record<string, number>;
    };
    assertEquals(manifest.files.map((f) => f.path), listFiles(dir, UNLISTED), "every file listed, in order");
    for (const f of manifest.files) {
      assertEquals({ size: f.size, sha256: f.sha256 }, await sha256File(`${dir}/${f.path}`), f.path);
    }
    const pages = manifest.files.filter((f) => PAGES_IMAGE.test(f.path.replace(/^criu\//, "")));
    ok(pages.reduce((n, f) => n + f.size, 0) >= 256 * 2 ** 20, "the page images hold the workload's memory");
    ok(manifest.timings.hash !== undefined && manifest.timings.fsync !== undefined, JSON.stringify(manifest.timings));
    console.log(JSON.stringify({ checkpointHashTimings: manifest.timings }));

    // The checkpoint restores: the restore side verifies every file again.
    const at = (await dockerProgress(stack, name)).lastTick;
    await stack.docker(["rm", "-f", name]);
    const next = uniqueName("next");
    await stack.docker(archDockerRun(next, key, [], WORKLOAD(256)));
    const first = (await waitTicks(stack, next, 1)).firstTick;
    const p = await waitTicks(stack, next, first + 6); // past a full verify of the restored memory
    assertEquals([p.starts, p.verifyFailures], [0, 0], "restored from the checkpoint, memory intact");
    ok(first > 1 && first <= at + 1, `goes on from tick ${first} (checkpoint at <= ${at})`);
    await stack.docker(["rm", "-f", next]);
  });
});
