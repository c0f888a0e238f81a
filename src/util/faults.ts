/**
 * Fault injection for the tests that kill ARCH at each phase of a checkpoint or restore
 * (the product's central promise: nothing lost, nothing left frozen, whatever dies when).
 *
 * A test writes a phase name into `<stateDir>/fault-injection` (the state directory is
 * root-only); the first ARCH process that reaches that phase removes the file and kills
 * itself with SIGKILL, exactly as `kill -9` would; `throw:<phase>` makes it throw an Error
 * there instead (an unexpected failure, such as a full disk). Without the file a fault point costs one
 * failed `open`. Phases are listed in {@link FAULT_POINTS} so a test cannot name one that
 * does not exist.
 */

/** Every phase at which a test can inject a fault, in the order a checkpoint, then a restore, reaches them. */
export const FAULT_POINTS = [
  "checkpoint-after-pause",
  "checkpoint-during-capture",
  "checkpoint-during-dump",
  "checkpoint-during-fsync",
  "checkpoint-before-commit",
  "checkpoint-after-commit",
  "checkpoint-before-kill",
  "restore-during-verify",
  "restore-during-apply",
  "restore-during-runc-restore",
  "restore-after-restored",
] as const;

/** One of {@link FAULT_POINTS}. */
export type FaultPoint = typeof FAULT_POINTS[number];

/** The file a test writes; exported for the tests. */
export const faultFile = (stateDir: string) => `${stateDir}/fault-injection`;

/** Dies by SIGKILL (or throws) if a test asked for a fault at `point`. */
export function faultPoint(stateDir: string, point: FaultPoint): void {
  let wanted: string;
  try {
    wanted = Deno.readTextFileSync(faultFile(stateDir)).trim();
  } catch {
    return;
  }
  if (wanted !== point && wanted !== `throw:${point}`) return;
  // Claim the fault by renaming the file away: of two processes at the same point, one dies.
  const taken = `${faultFile(stateDir)}.${Deno.pid}`;
  try {
    Deno.renameSync(faultFile(stateDir), taken);
    Deno.removeSync(taken);
  } catch {
    return;
  }
  if (wanted.startsWith("throw:")) throw new Error(`injected failure at ${point}`);
  Deno.kill(Deno.pid, "SIGKILL");
}
