/**
 * What the runc wrapper does for ARCH-enabled containers (loaded lazily: plain containers
 * never load this module; `start` and `delete` load no npm module either, `create` loads
 * `create.ts`).
 *
 * - `create`: see `create.ts` (validate, record, restore instead of creating).
 * - `start`: a no-op for a restored container (it is already running; the launcher answers
 *   it without starting Deno when it can, `wrapper/fast_path.ts`), else runc's own; either way
 *   the node's exit watcher learns how the container ends.
 * - `delete`: runc's own `delete`; then the registry record goes, and the key's checkpoint
 *   data too if the container ended by itself with exit code 0 (its job is done) and no
 *   newer checkpoint of another container of the key is current. Data is kept when an
 *   ARCH checkpoint stopped the container, after a failure, or if the status is unknown.
 *   The decision and the removal run under the key's claim.
 *
 * Returns an exit status when it handled the call, `undefined` to let the wrapper hand the
 * call to runc unchanged.
 */

import type { WrapperContext } from "./context.ts";
import { runCommand } from "../process/exec.ts";
import { KeyStore } from "../store/store.ts";
import { KeyGone } from "../store/claim.ts";
import { watchExit } from "./watch_exit.ts";
import { awaitExit, keepReason } from "../store/retention.ts";
import { recordedTask } from "../task/options.ts";
import type { ContainerRecord } from "../registry/registry.ts";
import { errorMessage } from "../util/errors.ts";

/**
 * Handles runc `create`, `start` and `delete` of an ARCH container (see the module doc): an exit status, or
 * `undefined` to let the wrapper hand the call to runc unchanged.
 */
export async function handle(ctx: WrapperContext): Promise<number | undefined> {
  switch (ctx.call.command) {
    case "create": {
      const { onCreate } = await import("./create.ts");
      return await onCreate(ctx);
    }
    case "start":
      return await onStart(ctx);
    case "delete":
      return await onDelete(ctx);
    default:
      return undefined;
  }
}

async function onStart(ctx: WrapperContext): Promise<number | undefined> {
  const record = ctx.registry.get(ctx.namespace, ctx.id);
  if (record === undefined) return undefined;
  if (record.restored === true) return 0;
  await watchExit(ctx, record);
  return undefined;
}

async function onDelete(ctx: WrapperContext): Promise<number> {
  // The exit-code protocol: the files are saved before runc's delete, while the rootfs is mounted.
  const before = ctx.registry.get(ctx.namespace, ctx.id);
  const exitCode = before !== undefined ? recordedTask(before)?.exitCode : undefined;
  if (exitCode !== undefined) {
    const exited = await awaitExit(ctx.registry, ctx.namespace, ctx.id, 5_000);
    const exit = exited?.exit as { code?: number; signal?: number; unknown?: boolean } | undefined;
    // Exited by itself with its code: a death by a signal is never a saved state.
    if (exited !== undefined && exit?.code === exitCode && exit.signal === undefined) {
      await saveTaskCheckpoint(ctx, exited);
    } else if (exited !== undefined && (exit === undefined || exit.unknown === true)) {
      ctx.log.warn("the job's exit status is unknown: its files are not saved as a task checkpoint", {
        key: exited.key,
      });
    }
  }
  const result = await runCommand({ cmd: ctx.runc, args: ctx.argv, stdio: "inherit" });
  if (result.code !== 0) return result.code;
  const record = await awaitExit(ctx.registry, ctx.namespace, ctx.id);
  ctx.registry.remove(ctx.namespace, ctx.id);
  if (record === undefined) return 0;
  const { checkpointRoot, scope } = record;
  if (typeof checkpointRoot !== "string" || typeof scope !== "string") return 0;
  const store = new KeyStore(checkpointRoot, scope, record.key);
  try {
    if (!store.exists()) return 0;
    const wait = ctx.host.raw.lockWaitSeconds;
    using _claim = await store.claim("delete", { waitMs: (typeof wait === "number" && wait > 0 ? wait : 30) * 1000 });
    const keep = keepReason(record, store);
    if (keep !== undefined) {
      ctx.log.info("container deleted, checkpoint data kept", { reason: keep, key: record.key });
      return 0;
    }
    store.removeAll();
    ctx.log.info("container completed with exit code 0, checkpoint data removed", { key: record.key });
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound) && !(error instanceof KeyGone)) {
      ctx.log.error("cannot remove checkpoint data", { key: record.key, error: String(error) });
    }
  }
  return 0;
}

/**
 * Commits the exited container's files as its key's task checkpoint (`task/task_checkpoint.ts`,
 * loaded only here), and reports it as an event; a failure is logged and reported, never
 * fails the engine's delete.
 */
async function saveTaskCheckpoint(ctx: WrapperContext, record: ContainerRecord): Promise<void> {
  const started = performance.now();
  const event = {
    kind: "checkpoint" as const,
    task: true,
    namespace: record.namespace,
    id: record.id,
    key: record.key,
  };
  const report = async (fields: Record<string, unknown>) => {
    try {
      const { recordEvent } = await import("../observe/events.ts");
      const { observeTargets } = await import("../observe/targets.ts");
      recordEvent(observeTargets(), { ...event, ...fields } as Parameters<typeof recordEvent>[1]);
    } catch { /* the log has it */ }
  };
  try {
    const { hostConfigFrom } = await import("../config/host_schema.ts");
    const { loadSecret } = await import("../store/secret.ts");
    const { readBundleSpec, rootfsPath } = await import("../config/container.ts");
    const { commitTaskCheckpoint } = await import("../task/task_checkpoint.ts");
    const host = hostConfigFrom(ctx.host);
    const saved = await commitTaskCheckpoint(record, {
      stateDir: host.stateDir,
      secret: loadSecret(host.secretFile, true),
      runcPath: ctx.runc,
      rootfs: rootfsPath(readBundleSpec(record.bundle), record.bundle),
      lockWaitMs: host.lockWaitSeconds * 1000,
      maxBytes: host.maxCheckpointBytes,
      reserveBytes: host.checkpointReserveBytes,
    });
    ctx.log.info("job exited with its ARCH_CHECKPOINT_EXIT_CODE: files saved as a task checkpoint", {
      key: record.key,
      checkpoint: saved.dir,
      bytes: saved.bytes,
      ms: saved.ms,
    });
    await report({ result: "ok", checkpoint: saved.dir, bytes: saved.bytes, durationMs: saved.ms });
  } catch (error) {
    ctx.log.error("job exited with its ARCH_CHECKPOINT_EXIT_CODE, but its files were not saved", {
      key: record.key,
      error: errorMessage(error),
    });
    await report({
      result: "failed",
      error: errorMessage(error),
      code: (error as { code?: string }).code ?? "task-checkpoint-error",
      durationMs: Math.round(performance.now() - started),
    });
  }
}
