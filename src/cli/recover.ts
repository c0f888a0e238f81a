/**
 * What every `arch` command does first: release the containers an ARCH process that died
 * (killed, crashed) left paused (`checkpoint/pause_guard.ts`). Never fails the command: with an
 * unreadable host configuration there is nothing it can safely do, and `arch doctor` says why.
 */

import { loadHostConfig } from "../config/host_schema.ts";
import { recoverPaused } from "../checkpoint/pause_guard.ts";

/** One line per container released (or that could not be). */
export async function recoverNode(): Promise<string[]> {
  let host;
  try {
    host = loadHostConfig();
  } catch {
    return [];
  }
  return await recoverPaused(host.stateDir, host.runcPath);
}
