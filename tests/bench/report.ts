/**
 * The human-readable bench report: one self-contained HTML file (inline SVG plots, no script,
 * no external resource), so a person opens it in any browser without installing anything.
 * Pure: it renders the records the bench printed as JSON lines, it measures nothing.
 *
 * A record with `chart` and `x` is also a point of that chart: ARCH's value and the floor
 * (`baseline`) measured in the same run, as two lines against `x` (memory size, container
 * count). A record with `target` (a ratio) is marked met or missed in the table. A chart with
 * a `note` says under its plot what its figures mean (a bound, what is measured).
 */

import { DOWNTIME_INTERVAL_MS } from "./ticks.ts";

/** One figure as `deno task bench` prints it (a JSON line), with the optional plot fields. */
export interface BenchRecord {
  readonly name: string;
  readonly value: number;
  readonly unit: string;
  readonly baseline: number;
  readonly ratio: number;
  /** The ratio the figure must stay at or under (issue targets), if any. */
  readonly target?: number;
  /** The chart this figure is a point of, and its position on the x axis. */
  readonly chart?: string;
  readonly x?: number;
  readonly [extra: string]: unknown;
}

/** A chart of the report: its title and axes. */
export interface ChartSpec {
  readonly id: string;
  readonly title: string;
  readonly xLabel: string;
  readonly yLabel: string;
  /** Names of the two lines: ARCH's values and the floor's. */
  readonly series: readonly [string, string];
  /** What the plot's figures mean, shown under it. */
  readonly note?: string;
}

/** The charts the bench draws points for. */
export const CHARTS: readonly ChartSpec[] = [
  {
    id: "finalize",
    title: "arch finalize: time to checkpoint and stop N containers (8 MiB each)",
    xLabel: "containers",
    yLabel: "seconds",
    series: ["arch finalize", "raw runc checkpoint + sync, same parallelism"],
  },
  {
    id: "checkpoint",
    title: "Checkpoint time against memory size",
    xLabel: "MiB",
    yLabel: "seconds",
    series: ["arch checkpoint", "floor: runc checkpoint + sync"],
  },
  {
    id: "restore",
    title: "Restore time against memory size",
    xLabel: "MiB",
    yLabel: "seconds",
    series: ["restore through ARCH", "floor: runc restore"],
  },
  {
    id: "downtime",
    title: "Downtime against memory size, ARCH beside raw runc restore",
    xLabel: "MiB",
    yLabel: "seconds",
    series: ["docker run, restore through ARCH", "floor: runc restore -d"],
    note: `Downtime: from "docker run" of the new container (or "runc restore -d") to the restored job's first ` +
      `tick, stamped by the job with the host's clock. The job ticks every ${DOWNTIME_INTERVAL_MS} ms, so each ` +
      `figure is at most ${DOWNTIME_INTERVAL_MS} ms above the moment the restored process resumed. The job's whole ` +
      `loss per migration (last tick before the checkpoint to first tick after) is in the table.`,
  },
];

const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");

/** A readable number: 3 significant digits. */
function fmt(n: number): string {
  if (!Number.isFinite(n)) return String(n);
  return Math.abs(n) >= 100 ? n.toFixed(0) : Number(n.toPrecision(3)).toString();
}

/** "Nice" ticks from 0 to at least `max`. */
function ticks(max: number): number[] {
  if (!(max > 0)) return [0, 1];
  const step0 = max / 5;
  const mag = 10 ** Math.floor(Math.log10(step0));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= step0)!;
  const out: number[] = [];
  for (let v = 0; v < max + step * 0.999; v += step) out.push(Number(v.toPrecision(6)));
  return out;
}

/** An SVG line chart of two series (ARCH, floor) over the chart's points; empty string without points. */
export function lineChart(spec: ChartSpec, points: readonly { x: number; arch: number; floor: number }[]): string {
  if (points.length === 0) return "";
  const sorted = [...points].sort((a, b) => a.x - b.x);
  const W = 640, H = 320, L = 60, R = 20, T = 30, B = 50;
  const xMax = Math.max(...sorted.map((p) => p.x));
  const yTicks = ticks(Math.max(...sorted.flatMap((p) => [p.arch, p.floor])));
  const yMax = yTicks.at(-1)!;
  const xTicks = ticks(xMax);
  const xEnd = xTicks.at(-1)!;
  const px = (x: number) => L + (x / xEnd) * (W - L - R);
  const py = (y: number) => H - B - (y / yMax) * (H - T - B);
  const colours = ["#c0392b", "#2c3e50"];
  const line = (key: "arch" | "floor", colour: string, dash: string) =>
    `<polyline fill="none" stroke="${colour}" stroke-width="2" ${dash} points="${
      sorted.map((p) => `${px(p.x).toFixed(1)},${py(p[key]).toFixed(1)}`).join(" ")
    }"/>` +
    sorted.map((p) =>
      `<circle cx="${px(p.x).toFixed(1)}" cy="${py(p[key]).toFixed(1)}" r="3.5" fill="${colour}">` +
      `<title>${esc(`${p.x} ${spec.xLabel}: ${fmt(p[key])} ${spec.yLabel}`)}</title></circle>`
    ).join("");
  return `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" role="img" ` +
    `aria-label="${esc(spec.title)}" font-family="sans-serif" font-size="12">` +
    `<text x="${L}" y="18" font-weight="bold">${esc(spec.title)}</text>` +
    yTicks.map((v) =>
      `<line x1="${L}" x2="${W - R}" y1="${py(v)}" y2="${py(v)}" stroke="#ddd"/>` +
      `<text x="${L - 6}" y="${py(v) + 4}" text-anchor="end">${fmt(v)}</text>`
    ).join("") +
    xTicks.map((v) => `<text x="${px(v)}" y="${H - B + 16}" text-anchor="middle">${fmt(v)}</text>`).join("") +
    `<line x1="${L}" x2="${W - R}" y1="${H - B}" y2="${H - B}" stroke="#333"/>` +
    `<line x1="${L}" x2="${L}" y1="${T}" y2="${H - B}" stroke="#333"/>` +
    `<text x="${(L + W - R) / 2}" y="${H - 12}" text-anchor="middle">${esc(spec.xLabel)}</text>` +
    `<text x="14" y="${(T + H - B) / 2}" text-anchor="middle" transform="rotate(-90 14 ${(T + H - B) / 2})">${
      esc(spec.yLabel)
    }</text>` +
    line("arch", colours[0]!, "") + line("floor", colours[1]!, 'stroke-dasharray="6 4"') +
    spec.series.map((name, i) =>
      `<rect x="${W - R - 250}" y="${T + 4 + i * 18}" width="14" height="3" fill="${colours[i]}"/>` +
      `<text x="${W - R - 230}" y="${T + 9 + i * 18}">${esc(name)}</text>`
    ).join("") +
    `</svg>`;
}

/** The points of chart `id` among `records` (the last record wins for a repeated x). */
export function chartPoints(records: readonly BenchRecord[], id: string): { x: number; arch: number; floor: number }[] {
  const byX = new Map<number, { x: number; arch: number; floor: number }>();
  for (const r of records) {
    if (r.chart === id && typeof r.x === "number") byX.set(r.x, { x: r.x, arch: r.value, floor: r.baseline });
  }
  return [...byX.values()];
}

/** The whole report page. `about` lists facts of the run (machine, versions, date), shown on top. */
export function renderReport(records: readonly BenchRecord[], about: Readonly<Record<string, string>>): string {
  const rows = records.map((r) => {
    const verdict = r.target === undefined ? "" : r.ratio <= r.target ? "met" : "missed";
    return `<tr><td>${esc(r.name)}</td><td class="n">${fmt(r.value)} ${esc(r.unit)}</td><td class="n">${
      fmt(r.baseline)
    } ${esc(r.unit)}</td><td class="n">${fmt(r.ratio)}</td><td class="n">${
      r.target === undefined ? "" : `≤ ${fmt(r.target)}`
    }</td><td class="${verdict}">${verdict}</td></tr>`;
  }).join("\n");
  const charts = CHARTS.map((c) => {
    const svg = lineChart(c, chartPoints(records, c.id));
    return svg === "" || c.note === undefined ? svg : `${svg}\n<p class="note">${esc(c.note)}</p>`;
  }).filter((s) => s !== "").join("\n");
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ARCH bench report</title>
<style>
body{font-family:sans-serif;max-width:980px;margin:2em auto;color:#222}
table{border-collapse:collapse;width:100%;margin:1em 0}td,th{border-bottom:1px solid #ddd;padding:4px 8px;text-align:left}
td.n{text-align:right;white-space:nowrap}.met{color:#1e7e34;font-weight:bold}.missed{color:#c0392b;font-weight:bold}
svg{display:block;margin:1.5em 0 .5em;max-width:100%;height:auto}.note{color:#555;font-size:90%;max-width:640px}pre{background:#f6f6f6;padding:1em;overflow:auto}
</style></head><body>
<h1>ARCH bench report</h1>
<p>Every figure is ARCH against its floor measured in the same run, on the same machine (ratio = ARCH / floor).</p>
<ul>${Object.entries(about).map(([k, v]) => `<li><b>${esc(k)}</b>: ${esc(v)}</li>`).join("")}</ul>
<table><thead><tr><th>figure</th><th>ARCH</th><th>floor / baseline</th><th>ratio</th><th>target</th><th></th></tr></thead>
<tbody>
${rows}
</tbody></table>
${charts}
<details><summary>The JSON lines of this run</summary><pre>${
    esc(records.map((r) => JSON.stringify(r)).join("\n"))
  }</pre></details>
</body></html>
`;
}
