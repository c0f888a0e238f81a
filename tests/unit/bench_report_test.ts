import { deepEqual as assertEquals, ok } from "node:assert/strict";
import { type BenchRecord, chartPoints, CHARTS, lineChart, renderReport } from "../bench/report.ts";

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
