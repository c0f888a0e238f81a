/**
 * `arch gc`: removes checkpoint directories that are no longer needed (retention rules in
 * `store/gc.ts`): temporary ones left by dead writers, quarantined ones after host config
 * `gc.quarantineDays` (or all with `--quarantined`), consumed ones, and committed ones past the
 * age or count limits (`--older-than`, `--keep`, host config `gc`).
 * The key's current checkpoint stays unless `--include-current`. `--dry-run` lists what would
 * go and changes nothing. Bad options are refused with one sentence before anything is read.
 */

import { loadHostConfig } from "../config/host_schema.ts";
import { checkpointRootsOf, scanCheckpoints } from "../store/listing.ts";
import { collectGarbage, type GcDecision, type GcPolicy, selectGarbage } from "../store/gc.ts";
import { UsageError } from "../util/errors.ts";
import { humanBytes, parseDuration, printJson, printTable, terminalLine } from "./output.ts";

/** `arch gc`'s options as commander gives them. */
export interface GcOptions {
  readonly olderThan?: string;
  readonly keep?: string;
  readonly includeCurrent?: boolean;
  readonly quarantined?: boolean;
  readonly dryRun?: boolean;
  readonly json?: boolean;
}

/** The retention policy from the options and the host configuration; {@link UsageError} on a bad value. */
export function gcPolicy(
  opts: GcOptions,
  host: {
    gc: { maxAgeDays?: number | undefined; keepPerKey: number; quarantineDays: number };
    restoreConsumed: string;
  },
  now: number,
): GcPolicy {
  let maxAgeMs = host.gc.maxAgeDays !== undefined ? host.gc.maxAgeDays * 86_400_000 : undefined;
  if (opts.olderThan !== undefined) {
    maxAgeMs = parseDuration(opts.olderThan);
    if (maxAgeMs === undefined) {
      throw new UsageError(`--older-than "${opts.olderThan}" is not a duration: use e.g. 12h, 7d or 2w`);
    }
  }
  let keepPerKey = host.gc.keepPerKey;
  if (opts.keep !== undefined) {
    keepPerKey = Number(opts.keep);
    if (!/^\d+$/.test(opts.keep)) throw new UsageError(`--keep "${opts.keep}" is not a whole number of checkpoints`);
  }
  return {
    now,
    ...(maxAgeMs !== undefined ? { maxAgeMs } : {}),
    keepPerKey,
    includeCurrent: opts.includeCurrent === true,
    consumedIsGarbage: host.restoreConsumed === "never",
    quarantineMinAgeMs: opts.quarantined === true ? 0 : host.gc.quarantineDays * 86_400_000,
  };
}

const row = (
  d: GcDecision,
) => [d.entry.scope, d.entry.key, d.entry.name, d.entry.status, humanBytes(d.entry.bytes), d.reason];

/** `arch gc`: see the module doc. Returns 0, or 1 if something could not be removed. Requires root. */
export async function gc(opts: GcOptions): Promise<number> {
  const host = loadHostConfig();
  const now = Date.now();
  const policy = gcPolicy(opts, host, now);
  const catalog = scanCheckpoints(checkpointRootsOf(host), now);
  for (const s of catalog.skipped) console.error(terminalLine(`arch: ${s}`));
  const decisions = selectGarbage(catalog.keys, policy);
  const doomed = decisions.filter((d) => d.remove);
  const bytes = doomed.reduce((n, d) => n + d.entry.bytes, 0);
  if (opts.dryRun) {
    if (opts.json) {
      printJson({
        dryRun: true,
        remove: doomed.map(jsonOf),
        bytes,
        keep: decisions.filter((d) => !d.remove).map(jsonOf),
      });
      return 0;
    }
    if (doomed.length === 0) console.log("nothing to remove");
    else {
      printTable(["SCOPE", "KEY", "NAME", "STATUS", "SIZE", "WHY"], doomed.map(row));
      console.log(
        `would remove ${doomed.length} checkpoint director${doomed.length === 1 ? "y" : "ies"}, ${humanBytes(bytes)}`,
      );
    }
    return 0;
  }
  const report = await collectGarbage(catalog.keys, policy);
  if (opts.json) {
    printJson({ dryRun: false, removed: report.removed.map(jsonOf), bytes: report.bytes, skipped: report.skipped });
  } else {
    if (report.removed.length > 0) {
      printTable(["SCOPE", "KEY", "NAME", "STATUS", "SIZE", "WHY"], report.removed.map(row));
    }
    console.log(
      `removed ${report.removed.length} checkpoint director${report.removed.length === 1 ? "y" : "ies"}, ` +
        humanBytes(report.bytes),
    );
    for (const s of report.skipped) console.log(terminalLine(`skipped ${s}`));
  }
  return report.skipped.some((s) => !s.includes("busy")) ? 1 : 0;
}

function jsonOf(d: GcDecision) {
  return {
    scope: d.entry.scope,
    key: d.entry.key,
    name: d.entry.name,
    path: d.entry.path,
    status: d.entry.status,
    bytes: d.entry.bytes,
    createdAt: d.entry.createdAt,
    reason: d.reason,
  };
}
