/** Output helpers of the CLI: plain aligned tables on stdout, nothing else. */

/** Prints `rows` under `header` on stdout, each column padded to its widest cell, two spaces apart. */
export function printTable(header: readonly string[], rows: readonly (readonly string[])[]): void {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: readonly string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join("  ").trimEnd();
  console.log([header, ...rows].map(line).join("\n"));
}
