import { deepStrictEqual as assertEquals } from "node:assert/strict";
import { ARCH_VERSION } from "../../src/version.ts";

Deno.test("deno.json's version is ARCH_VERSION (src/version.ts is the one place it is written)", () => {
  const config = JSON.parse(Deno.readTextFileSync(new URL("../../deno.json", import.meta.url))) as { version: string };
  assertEquals(config.version, ARCH_VERSION);
});
