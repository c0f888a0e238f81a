/** `arch ls`: the ARCH-enabled containers recorded on this node. */

import { loadHostConfig } from "../config/host_schema.ts";
import { Registry } from "../registry/registry.ts";
import { printTable } from "./output.ts";

/** `arch ls`: prints the node's container records as a table, or as JSON with `json`; returns 0. Requires root. */
export function ls(opts: { json?: boolean }): number {
  const config = loadHostConfig();
  const records = new Registry(config.stateDir).list();
  if (opts.json) {
    console.log(JSON.stringify(records, null, 2));
    return 0;
  }
  printTable(
    ["NAMESPACE", "ID", "KEY", "CREATED"],
    records.map((r) => [r.namespace, r.id, r.key, r.createdAt]),
  );
  return 0;
}
