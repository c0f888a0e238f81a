/**
 * The restore gate: holds the tasks of a `runc restore` until ARCH has verified the
 * checkpoint's page data, which it hashes while runc and CRIU restore.
 *
 * How: before `runc restore` starts, ARCH takes an exclusive `flock` on `<work>/gate.lock`
 * (a fresh, per-restore directory) and names the directory in `ARCH_RESTORE_GATE` in runc's
 * environment, which runc passes to CRIU and CRIU to its action script. CRIU runs the
 * script's `post-restore` action after the tasks are restored and before any of them
 * resumes; a non-zero exit there makes CRIU kill the restored tree and fail the restore
 * (criu/cr-restore.c). The script (`criu/config.ts`) marks `<work>/gate.seen`, waits for the
 * lock (bounded by `ARCH_RESTORE_GATE_TIMEOUT` seconds) and lets the tasks resume only if
 * `<work>/verdict` reads `ok`. ARCH writes the verdict, then releases the lock; if ARCH
 * dies, the kernel releases the lock and the missing verdict fails the restore at once.
 *
 * Guarantees: with the gate open, no task of the restore resumes unless {@link RestoreGate.settle}
 * was called with `true`. The verdict is written atomically (rename) before the lock is released.
 */

import { CRIU_CONFIG_ANNOTATION, GATE_ENV, GATE_MARKER, GATE_TIMEOUT_ENV } from "../criu/config.ts";

export { GATE_ENV, GATE_TIMEOUT_ENV };

/** runc's environment for a restore without a gate: a stray value inherited from the engine must not name one. */
export const NO_GATE_ENV: Readonly<Record<string, string>> = { [GATE_ENV]: "" };

/** An open gate: the lock is held until {@link settle}. */
export interface RestoreGate {
  /** What runc's environment needs for the script to find the gate. */
  readonly env: Record<string, string>;
  /** Writes the verdict and releases the script. Idempotent: the first verdict counts. */
  settle(ok: boolean): void;
  /** Whether the action script reached the gate (it marks it before waiting). */
  seen(): boolean;
}

/**
 * The wait bound for `bytes` of deferred data: 600 s, or more at 8 MiB/s for very large
 * checkpoints (several restores hashing at once from a slow disk). It only bounds an ARCH that
 * is alive but stuck: a dead one releases the lock at once. A timeout keeps the checkpoint
 * (`gate.timeout`, see `restore.ts`): slow storage must not cost a good checkpoint.
 */
export const gateTimeoutSeconds = (bytes: number): number => Math.max(600, Math.ceil(bytes / (8 << 20)));

/** Whether the action script gave up waiting (it leaves `gate.timeout`). */
export function gateTimedOut(work: string): boolean {
  try {
    Deno.statSync(`${work}/gate.timeout`);
    return true;
  } catch {
    return false;
  }
}

/**
 * Whether the bundle's container will run an action script that honours the gate: its
 * `org.criu.config` names a configuration whose `action-script` carries {@link GATE_MARKER}.
 * Anything unreadable answers false (then ARCH verifies everything before `runc restore`).
 */
export function bundleHonoursGate(bundle: string): boolean {
  try {
    const spec = JSON.parse(Deno.readTextFileSync(`${bundle}/config.json`)) as {
      annotations?: Record<string, unknown>;
    };
    const config = spec.annotations?.[CRIU_CONFIG_ANNOTATION];
    if (typeof config !== "string" || !config.startsWith("/")) return false;
    const scripts = Deno.readTextFileSync(config).split("\n")
      .map((l) => /^action-script\s+(\/\S+)\s*$/.exec(l)?.[1])
      .filter((p): p is string => p !== undefined);
    return scripts.some((p) => Deno.readTextFileSync(p).includes(GATE_MARKER));
  } catch {
    return false;
  }
}

/** Opens the gate in `work` (a fresh directory of this restore) with the script's bound `timeoutSeconds`. */
export function openGate(work: string, timeoutSeconds: number): RestoreGate {
  const lock = Deno.openSync(`${work}/gate.lock`, { read: true, write: true, createNew: true, mode: 0o600 });
  let open = true;
  try {
    lock.lockSync(true);
  } catch (error) {
    lock.close();
    throw error;
  }
  return {
    env: { [GATE_ENV]: work, [GATE_TIMEOUT_ENV]: String(Math.ceil(timeoutSeconds)) },
    settle(ok: boolean) {
      if (!open) return;
      open = false;
      try {
        const tmp = `${work}/verdict.tmp`;
        Deno.writeTextFileSync(tmp, ok ? "ok\n" : "fail\n", { mode: 0o600 });
        Deno.renameSync(tmp, `${work}/verdict`);
      } finally {
        lock.close(); // releases the flock: the script reads the verdict (or finds none: fail)
      }
    },
    seen() {
      try {
        Deno.statSync(`${work}/gate.seen`);
        return true;
      } catch {
        return false;
      }
    },
  };
}
