/**
 * src/cli/output.ts: durations and units, and text made safe for a terminal; with the
 * bounded helpers the listing commands use (mapBounded from src/cli/ls.ts, readBounded from
 * src/cli/inspect.ts).
 */

import { deepEqual as assertEquals } from "node:assert/strict";
import { humanAge, humanBytes, parseDuration, terminalSafe } from "../../src/cli/output.ts";
import { readBounded } from "../../src/cli/inspect.ts";
import { mapBounded } from "../../src/cli/ls.ts";

Deno.test("durations and units", async (t) => {
  await t.step("parseDuration", () => {
    const cases: [string, number | undefined][] = [
      ["30s", 30_000],
      ["15m", 900_000],
      ["12h", 43_200_000],
      ["7d", 604_800_000],
      ["2w", 1_209_600_000],
      ["3", 259_200_000],
      ["1.5h", 5_400_000],
      ["", undefined],
      ["-1d", undefined],
      ["7 days", undefined],
      ["d", undefined],
    ];
    for (const [text, ms] of cases) assertEquals(parseDuration(text), ms, text);
  });
  await t.step("terminalSafe strips C0, DEL and C1, keeps the rest", () => {
    assertEquals(terminalSafe("a\tb\nc\x1b[31md\x7fe\u0085f\u009fg é ✓"), "abc[31mdefg é ✓");
  });
  await t.step("mapBounded: in order, never more than the limit at once", async () => {
    let running = 0, peak = 0;
    const out = await mapBounded([...Array(30).keys()], 8, async (n) => {
      peak = Math.max(peak, ++running);
      await new Promise((r) => setTimeout(r, 2));
      running--;
      return n * 2;
    });
    assertEquals(out, [...Array(30).keys()].map((n) => n * 2));
    assertEquals(peak, 8);
    assertEquals(await mapBounded([], 8, () => Promise.resolve(1)), []);
  });
  await t.step("finding 10: readBounded reads a regular file up to a bound, never a symlink", () => {
    const dir = Deno.makeTempDirSync();
    try {
      Deno.writeTextFileSync(`${dir}/f`, "abc");
      Deno.writeTextFileSync(`${dir}/secret`, "s");
      Deno.symlinkSync(`${dir}/secret`, `${dir}/link`);
      assertEquals(new TextDecoder().decode(readBounded(`${dir}/f`, 3)), "abc");
      assertEquals(readBounded(`${dir}/f`, 2), undefined);
      assertEquals(readBounded(`${dir}/link`, 100), undefined);
      assertEquals(readBounded(`${dir}`, 100), undefined);
      assertEquals(readBounded(`${dir}/none`, 100), undefined);
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  });
  await t.step("humanBytes and humanAge", () => {
    assertEquals([humanBytes(0), humanBytes(1023), humanBytes(1024), humanBytes(3 * 2 ** 30)], [
      "0 B",
      "1023 B",
      "1.0 KiB",
      "3.0 GiB",
    ]);
    assertEquals([humanAge(-5), humanAge(59_000), humanAge(3_600_000), humanAge(2 * 86_400_000)], [
      "0s",
      "59s",
      "1h",
      "2d",
    ]);
  });
});
