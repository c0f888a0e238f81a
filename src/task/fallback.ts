/**
 * Finalize's answer for a container CRIU could not dump: when the job opted in to both a
 * notify signal and an exit code (`ARCH_NOTIFY_SIGNAL` + `ARCH_CHECKPOINT_EXIT_CODE`), ARCH
 * posts the notice `exit`, signals it, and waits (until the deadline, or the job's notify
 * timeout without one) for the job to exit with its code and the engine's `runc delete` to
 * commit its files as a task checkpoint (`wrapper/lifecycle.ts`, `task_checkpoint.ts`).
 *
 * Guarantees: never throws; the job is only asked, never killed; success means a task
 * checkpoint of this very container, committed after the request, is the key's current one.
 */

import type { ContainerRecord } from "../registry/registry.ts";
import { initPid, type Registry } from "../registry/registry.ts";
import { KeyStore } from "../store/store.ts";
import { currentMaker } from "../store/retention.ts";
import type { RuncTarget } from "../runc/client.ts";
import { recordedTask } from "./options.ts";
import { tellJob } from "./notify.ts";

/** A task checkpoint the fallback saw committed: its directory, and the wait from the signal, ms. */
export interface FallbackResult {
  readonly dir: string;
  readonly waitedMs: number;
}

const POLL_MS = 100;

/** Whether `record`'s container can take the task path (a notify signal and an exit code). */
export function canFallBack(record: ContainerRecord): boolean {
  const task = recordedTask(record);
  return task?.notify !== undefined && task.exitCode !== undefined;
}

/** The current checkpoint of the key if it is a task checkpoint of `id` made after `since` (ISO time). */
function committedTask(store: KeyStore, id: string, since: string): string | undefined {
  const made = currentMaker(store);
  return made?.kind === "task" && made.containerId === id && (made.createdAt ?? "") >= since ? made.path : undefined;
}

/**
 * Asks the job of `record` to save itself and exit (see the module doc); the committed task
 * checkpoint, or the sentence saying why there is none.
 */
export async function askToSaveAndExit(
  record: ContainerRecord,
  registry: Registry,
  target: RuncTarget,
  deadline: number | undefined,
): Promise<FallbackResult | string> {
  const task = recordedTask(record);
  const pid = initPid(record);
  if (task?.notify === undefined || task.exitCode === undefined || pid === undefined) {
    return "the job has no notify signal and exit code to save itself with";
  }
  const { checkpointRoot, scope } = record;
  if (typeof checkpointRoot !== "string" || typeof scope !== "string") return "no checkpoint root";
  const store = new KeyStore(checkpointRoot, scope, record.key);
  const since = new Date().toISOString();
  const started = performance.now();
  // The job's own timeout bounds the wait, and the deadline too: one job cannot hold finalize's slot longer.
  const limit = Math.min(deadline ?? Infinity, Date.now() + task.notify.timeoutMs);
  const failed = await tellJob(target, pid, task.notify.signal, "exit");
  if (failed !== undefined) return failed;
  let gone = 0; // polls since the container's record went (its delete ran): the commit, if any, is done
  while (Date.now() < limit && gone < 3) {
    const dir = committedTask(store, record.id, since);
    if (dir !== undefined) return { dir, waitedMs: Math.round(performance.now() - started) };
    const now = registry.get(record.namespace, record.id);
    const code = (now?.exit as { code?: number } | undefined)?.code;
    if (code !== undefined && code !== task.exitCode) return `the job exited with ${code}, not ${task.exitCode}`;
    if (now === undefined || now.createdAt !== record.createdAt) gone++;
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
  if (gone >= 3) return "the container ended without its files being saved (see arch log)";
  return `the job did not exit with ${task.exitCode} and have its files saved before the ${
    deadline !== undefined ? "deadline" : "notify timeout"
  }`;
}
