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
