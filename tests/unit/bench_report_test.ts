import { deepEqual as assertEquals, ok } from "node:assert/strict";
import { type BenchRecord, chartPoints, CHARTS, lineChart, renderReport } from "../bench/report.ts";
import { DOWNTIME_INTERVAL_MS, median, timedTicks } from "../bench/ticks.ts";

const rec = (over: Partial<BenchRecord> & { name: string }): BenchRecord => ({
  value: 2,
  unit: "s",
  baseline: 1,
  ratio: 2,
  ...over,
});

Deno.test("bench report: a chart's points are its records' (value, floor) by x, the last one winning", () => {
  const records = [
    rec({ name: "a", chart: "checkpoint", x: 512, value: 1.1, baseline: 0.6 }),
    rec({ name: "b", chart: "checkpoint", x: 64, value: 0.35, baseline: 0.16 }),
    rec({ name: "c", chart: "checkpoint", x: 512, value: 1.0, baseline: 0.58 }),
    rec({ name: "d", chart: "restore", x: 64 }),
    rec({ name: "e" }),
  ];
  assertEquals(chartPoints(records, "checkpoint"), [{ x: 512, arch: 1.0, floor: 0.58 }, {
    x: 64,
    arch: 0.35,
    floor: 0.16,
  }]);
});

Deno.test("bench report: a line chart draws both series with one marker per point, and nothing without points", () => {
  const spec = CHARTS.find((c) => c.id === "finalize")!;
  const svg = lineChart(spec, [{ x: 50, arch: 8, floor: 5 }, { x: 200, arch: 29, floor: 20 }, {
    x: 100,
    arch: 15,
    floor: 10,
  }]);
  ok(svg.startsWith("<svg") && svg.endsWith("</svg>"));
  assertEquals(svg.match(/<polyline/g)?.length, 2);
  assertEquals(svg.match(/<circle/g)?.length, 6);
  ok(svg.includes(spec.series[0]) && svg.includes("containers"));
  assertEquals(lineChart(spec, []), "");
});

Deno.test("bench report: the page is self-contained, escapes names and marks targets met or missed", () => {
  const html = renderReport(
    [
      rec({ name: "checkpoint 512 MiB <x>", ratio: 1.1, target: 1.2, chart: "checkpoint", x: 512 }),
      rec({ name: "restore 512 MiB", ratio: 2.6, target: 1.3 }),
      rec({ name: "no target" }),
    ],
    { machine: "2 cores & 24 GiB" },
  );
  ok(html.includes("checkpoint 512 MiB &lt;x&gt;") && !html.includes("<x>"));
  ok(html.includes("2 cores &amp; 24 GiB"));
  assertEquals(html.match(/class="met"/g)?.length, 1);
  assertEquals(html.match(/class="missed"/g)?.length, 1);
  ok(html.includes("<svg"), "the checkpoint chart is drawn");
  ok(!/<script|<link|src="http|href="http/i.test(html), "no script and no external resource");
});

Deno.test("bench report: the downtime chart draws ARCH beside raw runc restore and says its bound", () => {
  const spec = CHARTS.find((c) => c.id === "downtime")!;
  ok(spec.title.includes("Downtime") && spec.series[1].includes("runc restore"));
  const html = renderReport(
    [
      rec({ name: "downtime 64 MiB", chart: "downtime", x: 64, value: 0.9, baseline: 0.3 }),
      rec({ name: "downtime 512 MiB", chart: "downtime", x: 512, value: 1.4, baseline: 0.6 }),
      rec({ name: "loss per migration 512 MiB", x: 512, value: 2.5, baseline: 1.2 }),
    ],
    {},
  );
  ok(html.includes('aria-label="Downtime against memory size, ARCH beside raw runc restore"'));
  ok(html.includes(`at most ${DOWNTIME_INTERVAL_MS} ms above`), "the note states the tick bound");
  assertEquals(html.match(/<svg/g)?.length, 1, "only the charts with points are drawn, notes only with them");
  assertEquals(html.match(/class="note"/g)?.length, 1);
});

Deno.test("bench downtime: timestamped ticks are read from any workload output, other lines skipped", () => {
  const logs = [
    "start mem 64",
    "verify ok 123",
    "tick 7 sum 99 mem 64 at 1795996135.148366383",
    "tick 8 sum 98 mem 64", // without --timestamps
    "tick 9 sum 97 mem 64 net 3 3 at 1795996135.158000000",
    "verify ok 97",
    "",
  ].join("\n");
  const ticks = timedTicks(logs);
  assertEquals(ticks.map((t) => t.tick), [7, 9]);
  ok(Math.abs(ticks[0]!.atMs - 1795996135148.366383) < 0.001, String(ticks[0]!.atMs));
  ok(Math.abs(ticks[1]!.atMs - ticks[0]!.atMs - 9.633617) < 0.001);
  assertEquals(timedTicks("tick 1 sum 2 mem 3\n"), []);
  assertEquals([median([3, 1, 2]), median([4, 1, 3, 2])], [2, 2.5]);
});
