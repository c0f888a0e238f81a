/**
 * What the runc wrapper does for ARCH-enabled containers (loaded lazily: plain containers
 * never load this module).
 *
 * - `create`: validate the container's `ARCH_*` configuration (refused with one sentence
 *   on error), refuse while the node drains after `arch finalize`, record the container,
 *   and if its key has a committed, unconsumed checkpoint, restore it instead of creating
 *   (`runc restore --detach`); on a failed restore the checkpoint is quarantined and the
 *   container starts fresh (or is refused, per host configuration).
 * - `start`: a no-op for a restored container (it is already running), else runc's own.
 * - `delete`: runc's own `delete`; once runc succeeded, the registry record goes.
 *
 * Returns an exit status when it handled the call, `undefined` to let the wrapper hand the
 * call to runc unchanged.
 */

import type { WrapperContext } from "./wrapper.ts";
import { readBundleSpec } from "../config/container.ts";
import { containerConfig } from "../config/container_config.ts";
import { loadHostConfig } from "../config/host_schema.ts";
import { stringOption } from "./argv.ts";
import { runCommand } from "../process/exec.ts";
import { KeyStore } from "../store/store.ts";
import { isDraining } from "../engine/drain.ts";

export async function handle(ctx: WrapperContext): Promise<number | undefined> {
  switch (ctx.call.command) {
    case "create":
      return await onCreate(ctx);
    case "start":
      return ctx.registry.get(ctx.namespace, ctx.id)?.restored === true ? 0 : undefined;
    case "delete":
      return await onDelete(ctx);
    default:
      return undefined;
  }
}

async function onCreate(ctx: WrapperContext): Promise<number | undefined> {
  let host;
  try {
    host = loadHostConfig(ctx.host.configPath, []);
  } catch (error) {
    ctx.fail(`host configuration: ${(error as Error).message}`);
    return 1;
  }
  if (isDraining(host.stateDir)) {
    ctx.fail(
      `node is draining after "arch finalize": ARCH containers are not started here; ` +
        `run "arch finalize --undo" to lift the drain`,
    );
    return 1;
  }
  const bundle = stringOption(ctx.call.options, "bundle") ?? Deno.cwd();
  const resolved = containerConfig(readBundleSpec(bundle), ctx.id, host);
  if (!resolved.ok) {
    ctx.fail(resolved.error);
    return 1;
  }
  const { checkpointRoot, key, keySource } = resolved.config;
  const record = {
    namespace: ctx.namespace,
    id: ctx.id,
    root: stringOption(ctx.call.global, "root") ?? "/run/runc",
    bundle,
    key,
    keySource,
    checkpointRoot,
    createdAt: new Date().toISOString(),
  };
  ctx.registry.put(record);
  ctx.log.info("registered ARCH container", { key, keySource, bundle });

  const store = new KeyStore(checkpointRoot, ctx.namespace, key);
  if (store.currentPath() === undefined) return undefined;
  if (store.isConsumed() && !host.restoreConsumed && !resolved.config.restoreConsumed) {
    ctx.log.info("checkpoint already restored once, starting fresh", { checkpoint: store.currentPath() });
    return undefined;
  }
  const { restoreContainer } = await import("../engine/restore.ts");
  const outcome = await restoreContainer(ctx.call, store, ctx.runc);
  if (outcome.kind === "restored") {
    store.markConsumed();
    ctx.registry.put({ ...record, restored: true, restoredFrom: outcome.from });
    ctx.log.info("restored from checkpoint", { checkpoint: outcome.from });
    return 0;
  }
  ctx.log.error("restore failed, checkpoint quarantined", { reason: outcome.reason, quarantined: outcome.quarantined });
  if (host.onRestoreFailure === "fail") {
    ctx.fail(`restore failed (checkpoint kept in ${outcome.quarantined}): ${outcome.reason}`);
    return 1;
  }
  return undefined;
}

async function onDelete(ctx: WrapperContext): Promise<number> {
  const result = await runCommand({ cmd: ctx.runc, args: ctx.argv, stdio: "inherit" });
  if (result.code === 0) {
    ctx.registry.remove(ctx.namespace, ctx.id);
    ctx.log.info("container deleted, record removed");
  }
  return result.code;
}
