/**
 * The node's drain marker: set by `arch finalize`, it stops engines' restart policies from
 * restoring (and so consuming) checkpoints on a node that is going away. It lives in the
 * state directory (tmpfs), so a reboot lifts it; `arch finalize --undo` lifts it by hand.
 */

const marker = (stateDir: string) => `${stateDir}/draining`;

/** Whether the node drains (its drain marker exists). */
export function isDraining(stateDir: string): boolean {
  try {
    Deno.statSync(marker(stateDir));
    return true;
  } catch {
    return false;
  }
}

/** Sets the node's drain marker (0600; the state directory is created 0700 if missing). */
export function setDraining(stateDir: string): void {
  Deno.mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  Deno.writeTextFileSync(marker(stateDir), new Date().toISOString() + "\n", { mode: 0o600 });
}

/** Lifts the node's drain marker; absent is fine. */
export function clearDraining(stateDir: string): void {
  try {
    Deno.removeSync(marker(stateDir));
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
}
