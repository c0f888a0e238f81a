/**
 * When a key's data (checkpoints, shared-FS work directory) may go: only after a container
 * of the key ended by itself with exit code 0 (its job is done). Kept when an ARCH
 * checkpoint stopped it, after a failure, when the exit status is unknown, or when another
 * container of the key made a newer checkpoint since this one started.
 */

import { MANIFEST_FILE } from "./layout.ts";
import { readRegularFile } from "../util/dirfd.ts";
import type { ContainerRecord, Registry } from "../registry/registry.ts";
import type { KeyStore } from "./store.ts";

/**
 * The container's record once the exit watcher wrote its verdict (it does so right after
 * the process is reaped), waiting at most `timeoutMs`; the record as it is after that.
 */
export async function awaitExit(
  registry: Registry,
  namespace: string,
  id: string,
  timeoutMs = 2_000,
): Promise<ContainerRecord | undefined> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const record = registry.get(namespace, id);
    if (record === undefined || record.exit !== undefined || Date.now() >= deadline) return record;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * Why the key's data must stay after `record`'s container ended, or `undefined` when its
 * job is done and the data can go.
 */
export function keepReason(record: ContainerRecord, store: KeyStore): string | undefined {
  const exit = record.exit as { code?: number } | undefined;
  if (record.stoppedByCheckpoint === true) return "stopped by an ARCH checkpoint";
  if (exit?.code === undefined) return "exit status unknown";
  if (exit.code !== 0) return `exit code ${exit.code}`;
  // Another container of the key may have been checkpointed since this one started.
  const current = store.currentPath();
  if (current === undefined) return undefined;
  try {
    const made = JSON.parse(new TextDecoder().decode(readRegularFile(`${current}/${MANIFEST_FILE}`, 64 * 2 ** 20))) as {
      containerId?: string;
      createdAt?: string;
    };
    if (made.containerId !== record.id && (made.createdAt ?? "") > record.createdAt) {
      return `a newer checkpoint of container "${made.containerId}" is current`;
    }
  } catch { /* unreadable: it is not a checkpoint anyone can restore */ }
  return undefined;
}
