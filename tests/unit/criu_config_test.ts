/** src/criu/config.ts: rewriting a bundle's config.json to name ARCH's CRIU configuration. */

import { deepEqual as assertEquals } from "node:assert/strict";

Deno.test("config.json rewrite keeps 64-bit integers and every other value", async () => {
  const { annotateBundle } = await import("../../src/criu/config.ts");
  const dir = Deno.makeTempDirSync();
  const text =
    '{"process":{"rlimits":[{"type":"RLIMIT_MEMLOCK","hard":18446744073709551615,"soft":18446744073709551615}]},' +
    '"linux":{"resources":{"memory":{"limit":9007199254740993,"swappiness":0.5}}},"annotations":{"org.criu.config":"/x"}}';
  Deno.writeTextFileSync(`${dir}/config.json`, text, { mode: 0o640 });
  annotateBundle(dir, "/var/lib/arch/criu/criu.conf");
  const out = Deno.readTextFileSync(`${dir}/config.json`);
  assertEquals(out, text.replace('"/x"', '"/var/lib/arch/criu/criu.conf"'));
  assertEquals(Deno.statSync(`${dir}/config.json`).mode! & 0o777, 0o640);
  Deno.removeSync(dir, { recursive: true });
});
