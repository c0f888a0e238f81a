/**
 * `arch install watch`: the spot-notice watcher's systemd unit (text from
 * `spot/unit.ts`), and whether systemd can be asked to load and start it: only when systemd
 * runs this machine (`/run/systemd/system` exists, as `sd_booted(3)` checks) and the unit
 * is written where systemd reads units; otherwise the commands to run are printed. Pure
 * planning, plus {@link systemdRuns}, which reads one path.
 */

import { WATCH_UNIT_NAME, watchUnitText } from "../spot/unit.ts";
import { errorMessage, UsageError } from "../util/errors.ts";
import { type FileChange, readText } from "./changes.ts";

/** Default path of the watcher's unit. */
export const WATCH_UNIT_DEFAULT = `/etc/systemd/system/${WATCH_UNIT_NAME}`;

/** Directories systemd loads system units from (where `systemctl enable` can find the unit). */
const UNIT_DIRS = ["/etc/systemd/system", "/run/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system"];

/** Whether systemd is this machine's init (`/run/systemd/system` exists). */
export function systemdRuns(): boolean {
  try {
    return Deno.statSync("/run/systemd/system").isDirectory;
  } catch {
    return false;
  }
}

/** Whether `unitPath` is in a directory systemd reads units from. */
export function inUnitDir(unitPath: string): boolean {
  return UNIT_DIRS.includes(unitPath.slice(0, unitPath.lastIndexOf("/")));
}

/** Plans `arch install watch`: the unit file. */
export function planWatch(opts: { unit: string; arch: string; provider: string }): FileChange[] {
  let text: string;
  try {
    text = watchUnitText(opts.arch, opts.provider);
  } catch (error) {
    throw new UsageError(errorMessage(error).replace(/^Cannot/, "cannot"));
  }
  return [{ target: "watch", path: opts.unit, before: readText(opts.unit), after: text, mode: 0o644 }];
}

/** The unit's name as systemctl takes it (the file name). */
export function unitName(unitPath: string): string {
  return unitPath.slice(unitPath.lastIndexOf("/") + 1);
}
