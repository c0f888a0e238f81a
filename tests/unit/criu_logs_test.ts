import { deepEqual as assertEquals, ok } from "node:assert/strict";
import { criuLogDir, keepCriuLog, MAX_FAILED_PER_KEY, MAX_KEYS, MAX_LOG_BYTES } from "../../src/criu/logs.ts";

Deno.test("CRIU logs kept with ARCH's logs, bounded", async (t) => {
  const dir = Deno.makeTempDirSync();
  const root = `${dir}/criu`;
  const source = `${dir}/dump.log`;

  await t.step("next to ARCH's log file", () => {
    assertEquals(criuLogDir("/var/log/arch/arch.log"), "/var/log/arch/criu");
  });

  await t.step("a big log keeps its last MiB (where the error is), 0600 in 0700 directories", () => {
    const big = "x".repeat(MAX_LOG_BYTES) + "Error (criu/cr-dump.c:1): the reason\n";
    Deno.writeTextFileSync(source, big);
    const kept = keepCriuLog(root, "moby", "job", "dump", false, source)!;
    ok(kept.startsWith(`${root}/moby/job/`) && kept.endsWith("-dump-failed.log"), kept);
    const text = Deno.readTextFileSync(kept);
    assertEquals(text.length, MAX_LOG_BYTES);
    ok(text.endsWith("the reason\n"));
    assertEquals([Deno.statSync(kept).mode! & 0o777, Deno.statSync(`${root}/moby/job`).mode! & 0o777], [0o600, 0o700]);
  });

  await t.step("the last success replaces the previous one; failures keep the newest few", async () => {
    Deno.writeTextFileSync(source, "ok\n");
    assertEquals(keepCriuLog(root, "moby", "job", "restore", true, source), `${root}/moby/job/last-restore.log`);
    for (let i = 0; i < MAX_FAILED_PER_KEY + 3; i++) {
      keepCriuLog(root, "moby", "job", "restore", false, source);
      await new Promise((r) => setTimeout(r, 2)); // distinct stamps
    }
    const names = [...Deno.readDirSync(`${root}/moby/job`)].map((e) => e.name);
    assertEquals(names.filter((n) => n.endsWith("-failed.log")).length, MAX_FAILED_PER_KEY);
    ok(names.includes("last-restore.log"));
  });

  await t.step("at most MAX_KEYS keys: the least recently written go", () => {
    for (let i = 0; i < MAX_KEYS + 2; i++) keepCriuLog(root, "default", `k${i}`, "dump", true, source);
    const keys = ["moby", "default"].flatMap((ns) =>
      [...Deno.readDirSync(`${root}/${ns}`)].map((e) => `${ns}/${e.name}`)
    );
    assertEquals(keys.length, MAX_KEYS);
    ok(keys.includes(`default/k${MAX_KEYS + 1}`), "the newest key is kept");
  });

  await t.step("never throws: a missing source or an unsafe key keeps nothing", () => {
    assertEquals(keepCriuLog(root, "moby", "job", "dump", false, `${dir}/absent.log`), undefined);
    assertEquals(keepCriuLog(root, "moby", "../etc", "dump", false, source), undefined);
  });
  Deno.removeSync(dir, { recursive: true });
});
