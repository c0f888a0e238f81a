/**
 * Protection is never silent: a container that opted in (`ARCH_ENABLE=1`) and runs, but that
 * ARCH cannot checkpoint, is shown as `unprotected` with its reason by `arch ls`, fails
 * `arch doctor`, is counted in `arch_unprotected_containers`, and is named as not saved by
 * `arch finalize` (which exits 1 and never says "no running ARCH container" while one runs).
 * runc's roots are the source of truth (`registry/census.ts`), on Docker's default layout.
 */

import { deepEqual as assertEquals, ok } from "node:assert/strict";
import { archCli, archDockerRun, stackTest, uniqueName, withoutArchRuntime } from "./_env.ts";
import { fullId, waitTicks } from "./_workload.ts";

interface Row {
  readonly id: string;
  readonly state: string;
  readonly protection: string;
  readonly reason?: string;
}

stackTest("unprotected containers are shown, counted and named", async (t, stack) => {
  const name = (prefix: string) => uniqueName(prefix);
  const prot = name("prot"), viaRunc = name("viarunc"), lost = name("lost");
  const protKey = uniqueName("pk");
  await stack.docker(archDockerRun(prot, protKey));
  // Opted in, but run with Docker's default runtime (plain runc): ARCH never saw it.
  await stack.docker(withoutArchRuntime(archDockerRun(viaRunc, uniqueName("vk"))));
  await stack.docker(archDockerRun(lost, uniqueName("lk")));
  for (const n of [prot, viaRunc, lost]) await waitTicks(stack, n, 3);
  const ids = Object.fromEntries(
    await Promise.all([prot, viaRunc, lost].map(async (n) => [n, await fullId(stack, n)])),
  );
  // ARCH's record of `lost` disappears, as it did on every Docker node before the path fix.
  Deno.removeSync(`${stack.archStateDir}/registry/moby/${ids[lost]}.json`);

  await t.step("arch ls: protected, and unprotected with the reason", async () => {
    const r = await archCli(stack, ["ls", "--json"]);
    assertEquals(r.code, 0, r.stderr);
    const rows = JSON.parse(r.stdout) as Row[];
    const row = (n: string) => rows.find((x) => x.id === ids[n]);
    assertEquals(row(prot)?.protection, "protected");
    assertEquals([row(viaRunc)?.state, row(viaRunc)?.protection], ["running", "unprotected"]);
    ok(/not created through arch-runc/.test(row(viaRunc)?.reason ?? ""), row(viaRunc)?.reason ?? "");
    assertEquals(row(lost)?.protection, "unprotected");
    ok(/ARCH prepared this container but has no record of it/.test(row(lost)?.reason ?? ""), row(lost)?.reason ?? "");
    const table = await archCli(stack, ["ls"]);
    ok(table.stdout.includes(`unprotected moby/${ids[viaRunc]}: no ARCH record`), table.stdout);
  });

  await t.step("arch doctor fails and names each unprotected container", async () => {
    const r = await archCli(stack, ["doctor", "--json"]);
    assertEquals(r.code, 1, r.stdout);
    const checks = (JSON.parse(r.stdout) as { checks: { name: string; status: string; detail: string }[] }).checks
      .filter((c) => c.name === "opted-in containers");
    assertEquals(checks.map((c) => c.status), ["fail", "fail"], JSON.stringify(checks));
    for (const n of [viaRunc, lost]) ok(checks.some((c) => c.detail.startsWith(`moby/${ids[n]} is not protected: `)));
  });

  await t.step("the metrics count them", () => {
    const prom = Deno.readTextFileSync(`${stack.scratch}/arch/metrics/arch.prom`);
    ok(prom.includes("\narch_unprotected_containers 2\n"), prom);
    ok(prom.includes("\narch_protected_containers 1\n"), prom);
  });

  await t.step("arch finalize saves the protected one and names the others as not saved", async () => {
    const r = await archCli(stack, ["finalize"]);
    assertEquals(r.code, 1, r.stdout + r.stderr);
    ok(new RegExp(`^ok {4}moby/${ids[prot]} key=${protKey} `, "m").test(r.stdout), r.stdout);
    for (const n of [viaRunc, lost]) {
      ok(
        new RegExp(`^FAIL  moby/${ids[n]} key=\\S+: not saved: ARCH does not protect it: `, "m").test(r.stdout),
        r.stdout,
      );
    }
    ok(/^finalize: 1 saved, 0 failed, 0 not started, 2 unprotected \(not saved\) in /m.test(r.stdout), r.stdout);
    // Finalize stopped only what it saved.
    const running = async (n: string) => (await stack.docker(["inspect", "-f", "{{.State.Running}}", n])).stdout.trim();
    assertEquals([await running(prot), await running(viaRunc), await running(lost)], ["false", "true", "true"]);
    assertEquals((await archCli(stack, ["finalize", "--undo"])).code, 0);
  });

  await t.step("with nothing protected left, finalize still names what runs unprotected", async () => {
    const r = await archCli(stack, ["finalize"]);
    assertEquals(r.code, 1, r.stdout);
    ok(!r.stdout.includes("no running ARCH container"), r.stdout);
    ok(/^finalize: 0 saved, 0 failed, 0 not started, 2 unprotected \(not saved\)$/m.test(r.stdout), r.stdout);
    assertEquals((await archCli(stack, ["finalize", "--undo"])).code, 0);
  });
  await stack.docker(["rm", "-f", prot, viaRunc, lost]);
});
