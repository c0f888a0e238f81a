/**
 * src/log/log.ts: the Logger's minimum level, and the host config's log level, metrics and
 * gc fields that reach it (src/config/host.ts, src/config/host_schema.ts).
 */

import { deepEqual as assertEquals } from "node:assert/strict";
import { Logger } from "../../src/log/log.ts";
import { readHostBasics } from "../../src/config/host.ts";
import { HostConfigSchema } from "../../src/config/host_schema.ts";

Deno.test("Logger keeps records at or above its minimum level; host config logLevel reaches the wrapper", () => {
  const dir = Deno.makeTempDirSync({ prefix: "arch-log-" });
  try {
    const path = `${dir}/arch.log`;
    const log = new Logger(path, { component: "t" }, "warn").with({ id: "c" });
    log.debug("d");
    log.info("i");
    log.warn("w");
    log.error("e");
    const levels = Deno.readTextFileSync(path).trim().split("\n").map((l) => JSON.parse(l).level);
    assertEquals(levels, ["warn", "error"]);
    const config = `${dir}/config.json`;
    Deno.writeTextFileSync(config, JSON.stringify({ logLevel: "debug", metricsFile: "", logFile: `${dir}/x/a.log` }));
    const basics = readHostBasics(config, []);
    assertEquals([basics.logLevel, basics.metricsFile, basics.eventsFile], ["debug", "", `${dir}/x/events.jsonl`]);
    Deno.writeTextFileSync(config, JSON.stringify({ logLevel: "loud" }));
    assertEquals(readHostBasics(config, []).logLevel, "info", "the hot path falls back; the schema refuses it");
    assertEquals(HostConfigSchema.safeParse({ logLevel: "loud" }).success, false);
    const parsed = HostConfigSchema.parse({});
    assertEquals([parsed.logLevel, parsed.metricsFile, parsed.gc], ["info", "/var/lib/arch/metrics/arch.prom", {
      keepPerKey: 1,
      quarantineDays: 7,
    }]);
    assertEquals(HostConfigSchema.parse({ gc: { quarantineDays: 0.5 } }).gc.quarantineDays, 0.5);
    assertEquals(HostConfigSchema.safeParse({ gc: { quarantineDays: -1 } }).success, false);
    assertEquals(HostConfigSchema.safeParse({ gc: { keepPerKey: -1 } }).success, false);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
