/**
 * The admin's default checkpoint root (host config `defaultCheckpointRoot`) is ARCH's own
 * directory: created on first use, owned by root, mode 0700, so `ARCH_ENABLE=1` alone works
 * on a new node. Roots a container names (`ARCH_CHECKPOINT_HOST_PATH`) are never created:
 * they must exist and pass the allowlist (`config/container_config.ts`).
 */

import { errorMessage } from "../util/errors.ts";

/**
 * Creates `root` (and missing parents, each 0700) unless it exists. Throws with one sentence
 * if it cannot be created or is not a directory. Requires root.
 */
export function ensureDefaultRoot(root: string): void {
  try {
    if (Deno.statSync(root).isDirectory) return;
    throw new Error(`defaultCheckpointRoot "${root}" (host config) is not a directory: fix the host configuration`);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  try {
    Deno.mkdirSync(root, { recursive: true, mode: 0o700 });
    Deno.chmodSync(root, 0o700);
  } catch (error) {
    throw new Error(
      `cannot create defaultCheckpointRoot "${root}" (host config): ${errorMessage(error)}: ` +
        `create it (root-owned, mode 0700) or fix the host configuration`,
    );
  }
}
