/**
 * Where this process reports its checkpoint/restore events and metrics: the wrapper sets it
 * from the host basics it already read (no second read of the configuration, no zod), the
 * CLI passes its validated configuration explicitly. Holds plain strings only.
 */

/** Where events and metrics go; an empty `metricsFile`/`eventsFile` turns that output off. */
export interface ObserveTargets {
  /** Holds `metrics.json` (the counters) and its lock. */
  readonly stateDir: string;
  readonly metricsFile: string;
  readonly eventsFile: string;
}

let current: ObserveTargets | undefined;

/** Records the targets of this process (the runc wrapper calls it once with its host basics). */
export function setObserveTargets(targets: ObserveTargets): void {
  current = { stateDir: targets.stateDir, metricsFile: targets.metricsFile, eventsFile: targets.eventsFile };
}

/** The targets set by {@link setObserveTargets}, if any. */
export function observeTargets(): ObserveTargets | undefined {
  return current;
}
