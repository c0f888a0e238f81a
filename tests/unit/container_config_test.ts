/**
 * src/config/container_config.ts: the checkpoint root a container asks for (allowed, real,
 * not nested, not revealing what exists) and the mounts that would reach it. Real
 * directories in a temporary directory; changing a directory's owner needs root.
 */

import { deepEqual as assertEquals, ok } from "node:assert/strict";
import { checkRoot, mountsReachingRoot, resolveRoot } from "../../src/config/container_config.ts";

Deno.test("checkRoot: one sentence naming the variable, the value and the fix", async (t) => {
  const dir = Deno.makeTempDirSync();
  try {
    Deno.mkdirSync(`${dir}/allowed/moby`, { recursive: true });
    Deno.mkdirSync(`${dir}/other`);
    Deno.mkdirSync(`${dir}/open`, { mode: 0o777 });
    Deno.chmodSync(`${dir}/open`, 0o777);
    Deno.mkdirSync(`${dir}/tenant`);
    Deno.chownSync(`${dir}/tenant`, 1000, 1000);
    Deno.symlinkSync(`${dir}/other`, `${dir}/escape`);
    const allowed = [`${dir}/allowed`, `${dir}/open`, `${dir}/tenant`, `${dir}/escape`, `${dir}/missing`];
    const V = "ARCH_CHECKPOINT_HOST_PATH";
    await t.step("an allowed root, exactly (a trailing or doubled slash is the same path)", () => {
      assertEquals(checkRoot(`${dir}/allowed`, V, allowed), undefined);
      assertEquals(checkRoot(`${dir}//allowed/`, V, allowed), undefined);
      // a root the admin wrote as a link is the admin's: it resolves once, to its target
      assertEquals(resolveRoot(`${dir}/escape`, V, allowed), { real: `${dir}/other` });
    });
    const refused: [string, string][] = [
      ["relative", "is not an absolute path"],
      [`${dir}/allowed/../other`, 'contains ".."'],
      [`${dir}/missing`, "does not exist"],
      [`${dir}/other`, "is not one of the roots the admin allows"],
      // issue 24 finding 4: a directory below an allowed root (a scope, a key, a checkpoint) is never a root
      [`${dir}/allowed/moby`, "is not one of the roots the admin allows"],
      // a root others could change, or a link, is refused, not used
      [`${dir}/open`, "cannot be used:"],
      [`${dir}/tenant`, "cannot be used:"],
    ];
    for (const [value, why] of refused) {
      await t.step(value, () => {
        const msg = checkRoot(value, V, allowed) ?? "";
        ok(msg.startsWith(`${V}="${value}" ${why}`), msg);
        ok(msg.includes(`use one of the roots the admin allows (host config "checkpointRoots": "${dir}/allowed"`), msg);
      });
    }
    await t.step("roots that nest with another root or ARCH directory are refused", () => {
      const msg = String(resolveRoot(`${dir}/allowed`, V, allowed, "checkpointRoots", [`${dir}/allowed/moby`]));
      ok(msg.includes(`holds "${dir}/allowed/moby"`) && msg.includes("do not nest"), msg);
      const inside = String(resolveRoot(`${dir}/allowed`, V, allowed, "checkpointRoots", [dir]));
      ok(inside.includes(`lies inside "${dir}"`), inside);
    });
    // outside the allowed roots, an existing and a missing path get the same answer
    await t.step("does not reveal whether a host path exists", () => {
      const existing = checkRoot("/etc", V, allowed)!.replace("/etc", "X");
      const missing = checkRoot("/nonexistent-arch-path", V, allowed)!.replace("/nonexistent-arch-path", "X");
      assertEquals(existing, missing);
    });
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("a container that mounts its checkpoint root, or what holds it, is refused", () => {
  const spec = (source: string) => ({ mounts: [{ destination: "/data", type: "bind", source, options: ["rbind"] }] });
  ok(
    mountsReachingRoot(spec("/var/lib/arch/checkpoints/moby"), "/var/lib/arch/checkpoints", "V")?.includes(
      "lies inside",
    ),
  );
  ok(mountsReachingRoot(spec("/var/lib"), "/var/lib/arch/checkpoints", "V")?.includes("holds"));
  assertEquals(mountsReachingRoot(spec("/srv/data"), "/var/lib/arch/checkpoints", "V"), undefined);
  const work = "/mnt/efs/work/moby/k";
  assertEquals(mountsReachingRoot(spec(work), "/mnt/efs", "V", work), undefined); // ARCH's own work dir mount
  ok(mountsReachingRoot(spec("/mnt/efs/work/moby/other"), "/mnt/efs", "V", work) !== undefined);
});
