/** src/cli/log.ts: `arch log` filtering and formatting, and the log file's ownership check. */

import { deepEqual as assertEquals, ok, throws } from "node:assert/strict";
import { safeJson } from "../../src/cli/output.ts";
import { formatRecord, logFileProblem, logFilter, matches, parseLogLine } from "../../src/cli/log.ts";
import { UsageError } from "../../src/util/errors.ts";

Deno.test("arch log: filter and format", async (t) => {
  const now = Date.parse("2026-11-29T12:00:00Z");
  const rec = (level: string, extra: Record<string, unknown> = {}) => ({
    time: "2026-11-29T11:30:00.000Z",
    level,
    component: "runc-wrapper",
    msg: "m",
    ...extra,
  });
  await t.step("minimum level", () => {
    const f = logFilter({ level: "warn" }, now);
    assertEquals(["debug", "info", "warn", "error"].map((l) => matches(rec(l), f)), [false, false, true, true]);
    assertEquals(matches(rec("error"), logFilter({}, now)), true, "default shows everything");
  });
  await t.step("container prefix, key, since", () => {
    assertEquals(matches(rec("info", { id: "abcdef" }), logFilter({ container: "abc" }, now)), true);
    assertEquals(matches(rec("info", { id: "xbcdef" }), logFilter({ container: "abc" }, now)), false);
    assertEquals(matches(rec("info"), logFilter({ container: "abc" }, now)), false, "no id: not that container's");
    assertEquals(matches(rec("info", { key: "k1" }), logFilter({ key: "k1" }, now)), true);
    assertEquals(matches(rec("info", { key: "k2" }), logFilter({ key: "k1" }, now)), false);
    assertEquals(matches(rec("info"), logFilter({ since: "1h" }, now)), true);
    assertEquals(matches(rec("info"), logFilter({ since: "10m" }, now)), false);
    assertEquals(matches(rec("info"), logFilter({ since: "2026-11-29T11:00:00Z" }, now)), true);
  });
  await t.step("bad options: one sentence, as a usage error", () => {
    for (const level of ["loud", "toString"]) {
      throws(
        () => logFilter({ level }, now),
        (e: Error) => e instanceof UsageError && e.message.includes(`--level "${level}"`),
      );
    }
    throws(
      () => logFilter({ since: "yesterday" }, now),
      (e: Error) => e instanceof UsageError && /--since/.test(e.message),
    );
  });
  await t.step("lines that are not JSON objects are skipped; records format on one line", () => {
    assertEquals([parseLogLine("garbage"), parseLogLine("[1]"), parseLogLine('{"a":')], [
      undefined,
      undefined,
      undefined,
    ]);
    const line = formatRecord(rec("error", { id: "c1", error: "it broke: badly" }));
    assertEquals(line, '2026-11-29T11:30:00.000Z error runc-wrapper m id=c1 error="it broke: badly"');
  });
  await t.step("finding 10: a message or field a container set cannot drive the terminal", () => {
    const evil = "job\x1b]0;owned\x07\r\n2026 fake line\u009b2J\x7f";
    const line = formatRecord({ ...rec("error", { key: evil, [`k${evil}`]: 1 }), msg: evil });
    const controls = (text: string) => [...text].filter((c) => c.charCodeAt(0) < 0x20 || (c >= "\x7f" && c <= "\x9f"));
    assertEquals(controls(line), [], JSON.stringify(line));
    ok(line.includes(" job]0;owned2026 fake line2J "), line);
    // --json: the same record, C1 and DEL escaped too (JSON leaves them raw)
    const json = safeJson({ msg: evil });
    assertEquals(controls(json), [], json);
    assertEquals(JSON.parse(json), { msg: evil });
  });
  await t.step("log file must be root-owned 0600", () => {
    assertEquals(logFileProblem("/l", { isFile: true, uid: 0, mode: 0o100600 }), undefined);
    ok(/mode 644, not 0600.*chmod 600/.test(logFileProblem("/l", { isFile: true, uid: 0, mode: 0o100644 })!));
    ok(/uid 1000/.test(logFileProblem("/l", { isFile: true, uid: 1000, mode: 0o100600 })!));
  });
});
