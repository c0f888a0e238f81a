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
  const newer = newerCheckpoint(store, record);
  return newer === undefined ? undefined : `a newer checkpoint of container "${newer}" is current`;
}

/** The key's current checkpoint as its manifest names its maker: directory, container, time, kind. */
export interface CurrentMaker {
  readonly path: string;
  readonly containerId: string | undefined;
  readonly createdAt: string | undefined;
  readonly kind: string | undefined;
}

/** Who made the key's current checkpoint, when, and of which kind; `undefined` if none or unreadable. */
export function currentMaker(store: KeyStore): CurrentMaker | undefined {
  const current = store.currentPath();
  if (current === undefined) return undefined;
  try {
    const made = JSON.parse(new TextDecoder().decode(readRegularFile(`${current}/${MANIFEST_FILE}`, 64 * 2 ** 20))) as {
      containerId?: unknown;
      createdAt?: unknown;
      kind?: unknown;
    };
    const str = (v: unknown) => (typeof v === "string" ? v : undefined);
    return { path: current, containerId: str(made.containerId), createdAt: str(made.createdAt), kind: str(made.kind) };
  } catch {
    return undefined; // unreadable: it is not a checkpoint anyone can restore
  }
}

/** The container that made the key's current checkpoint, if it is another than `record`'s, after that one started. */
export function newerCheckpoint(store: KeyStore, record: ContainerRecord): string | undefined {
  const made = currentMaker(store);
  if (made === undefined || made.containerId === record.id) return undefined;
  return (made.createdAt ?? "") > record.createdAt ? made.containerId ?? "?" : undefined;
}
