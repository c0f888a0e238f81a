/**
 * What the runc wrapper does for ARCH-enabled containers (loaded lazily: plain containers
 * never load this module).
 *
 * - `create`: validate the container's `ARCH_*` configuration (refused with one sentence
 *   on error), refuse while the node drains after `arch finalize`, record the container,
 *   and if its key has a committed, unconsumed checkpoint, restore it instead of creating
 *   (`runc restore --detach`); on a failed restore the checkpoint is quarantined and the
 *   container starts fresh (or is refused, per host configuration).
 * - `start`: a no-op for a restored container (it is already running), else runc's own;
 *   either way an exit watcher is started to learn how the container ends.
 * - `delete`: runc's own `delete`; then the registry record goes, and the key's checkpoint
 *   data too if the container ended by itself with exit code 0 (its job is done). Data is
 *   kept when ARCH checkpointed the container, after a failure, or if the status is unknown.
 *
 * Returns an exit status when it handled the call, `undefined` to let the wrapper hand the
 * call to runc unchanged.
 */

import type { WrapperContext } from "./wrapper.ts";
import { envOf, readBundleSpec } from "../config/container.ts";
import { containerConfig } from "../config/container_config.ts";
import { loadHostConfig } from "../config/host_schema.ts";
import { stringOption } from "./argv.ts";
import { runCommand } from "../process/exec.ts";
import { KeyStore } from "../store/store.ts";
import { ensureDefaultRoot } from "../store/default_root.ts";
import { criuLogDir } from "../log/criu_logs.ts";
import { annotateBundle, ensureCriuConfig } from "../engine/criu_config.ts";
import { isDraining } from "../engine/drain.ts";
import type { ContainerRecord } from "../registry/registry.ts";
import { findUpperdir } from "../rootfs/upperdir.ts";
import { bundleRootfs } from "../engine/checkpoint.ts";
import { ClaimTimeout, KeyGone } from "../store/claim.ts";
import { faultPoint } from "../util/faults.ts";

export async function handle(ctx: WrapperContext): Promise<number | undefined> {
  switch (ctx.call.command) {
    case "create":
      return await onCreate(ctx);
    case "start":
      return await onStart(ctx);
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
  const spec = ctx.spec ?? readBundleSpec(bundle);
  if (!envOf(spec).has("ARCH_CHECKPOINT_HOST_PATH")) {
    try {
      ensureDefaultRoot(host.defaultCheckpointRoot);
    } catch (error) {
      ctx.fail((error as Error).message);
      return 1;
    }
  }
  const resolved = containerConfig(spec, ctx.id, ctx.namespace, host);
  if (!resolved.ok) {
    ctx.fail(resolved.error);
    return 1;
  }
  const rootfs = bundleRootfs(bundle);
  if (findUpperdir(rootfs) === undefined) {
    ctx.fail(
      `the rootfs of this container ("${rootfs}") is not an overlay mount, so ARCH could not save its files: ` +
        `run it with an overlay snapshotter/storage driver, or without ARCH_ENABLE=1`,
    );
    return 1;
  }
  try {
    annotateBundle(bundle, ensureCriuConfig(host.criuConfigDir));
  } catch (error) {
    // Fail closed: left as it is, the annotation could name a CRIU configuration the
    // container's owner chose, which CRIU would run as root at the next checkpoint.
    ctx.fail(`cannot attach ARCH's CRIU configuration to the container: ${(error as Error).message}`);
    return 1;
  }
  const { checkpointRoot, scope, key, keySource } = resolved.config;
  const record = {
    namespace: ctx.namespace,
    id: ctx.id,
    root: ctx.root,
    bundle,
    scope,
    key,
    keySource,
    checkpointRoot,
    pidFile: stringOption(ctx.call.options, "pid-file"),
    createdAt: new Date().toISOString(),
  };
  ctx.registry.put(record);
  ctx.log.info("registered ARCH container", { scope, key, keySource, bundle });

  const store = new KeyStore(checkpointRoot, scope, key);
  if (!store.exists() || store.currentPath() === undefined) return undefined;
  let claim;
  try {
    claim = await store.claim("restore", { waitMs: host.lockWaitSeconds * 1000 });
  } catch (error) {
    if (error instanceof Deno.errors.NotFound || error instanceof KeyGone) return undefined;
    const why = error instanceof ClaimTimeout ? error.message : `cannot claim it: ${(error as Error).message}`;
    ctx.fail(`cannot restore checkpoint key "${key}": ${why}; start the container again later`);
    return 1;
  }
  using _claim = claim;
  // Under the claim: what was seen before may have changed (a commit, a delete, a restore).
  const current = store.currentPath();
  if (current === undefined) return undefined;
  if (store.isConsumed() && !resolved.config.restoreConsumed) {
    ctx.log.info("checkpoint already restored once, starting fresh", { checkpoint: current });
    return undefined;
  }
  let secret, image;
  try {
    const { loadSecret } = await import("../store/secret.ts");
    const { imageIdentity } = await import("../engine/image_identity.ts");
    secret = loadSecret(host.secretFile, true);
    image = imageIdentity(rootfs, host.stateDir);
    if (image === undefined) throw new Error(`cannot identify the image of the container`);
  } catch (error) {
    ctx.fail(`cannot verify checkpoint ${current}: ${(error as Error).message}`);
    return 1;
  }
  const { restoreContainer } = await import("../engine/restore.ts");
  const outcome = await restoreContainer(ctx.call, store, ctx.runc, {
    stateDir: host.stateDir,
    secret,
    expected: { scope, key, image },
    criuLogs: criuLogDir(ctx.host.logFile),
  });
  if (outcome.kind === "restored") {
    // The container runs now: whatever fails below must not turn this call into a create.
    const restored = { ...record, restored: true, restoredFrom: outcome.from };
    try {
      faultPoint(host.stateDir, "restore-after-restored");
      store.markConsumed();
    } catch (error) {
      // Not marked: unpublish it instead (a rename needs no space), or it could run twice.
      ctx.log.error("restored, but cannot mark the checkpoint consumed", { error: String(error) });
      try {
        if (!resolved.config.restoreConsumed) store.quarantine();
      } catch { /* logged above */ }
    }
    try {
      ctx.registry.put(restored);
      ctx.log.info("restored from checkpoint", { checkpoint: outcome.from, timings: outcome.timings });
    } catch (error) {
      ctx.log.error("restored, but cannot record it", { checkpoint: outcome.from, error: String(error) });
    }
    await watchExit(ctx, restored);
    return 0;
  }
  if (outcome.kind === "foreign") {
    ctx.fail(`${outcome.reason}: remove ${store.dir} to start this container fresh, or start it with its own image`);
    return 1;
  }
  ctx.log.error("restore failed, checkpoint quarantined", { reason: outcome.reason, quarantined: outcome.quarantined });
  if (host.onRestoreFailure === "fail") {
    ctx.fail(`restore failed (checkpoint kept in ${outcome.quarantined}): ${outcome.reason}`);
    return 1;
  }
  if (outcome.applied) {
    try {
      const { resetRootfs } = await import("../rootfs/reset.ts");
      await resetRootfs(rootfs);
    } catch (error) {
      ctx.fail(
        `restore failed (checkpoint kept in ${outcome.quarantined}) after the saved files were applied, and the ` +
          `rootfs cannot be reset (${(error as Error).message}): start the container again to start it fresh`,
      );
      return 1;
    }
  }
  return undefined;
}

/** Starts the exit watcher for the container's init process (pid from its pid file). */
async function watchExit(ctx: WrapperContext, record: ContainerRecord): Promise<void> {
  try {
    const pidFile = typeof record.pidFile === "string" ? record.pidFile : undefined;
    const pid = pidFile !== undefined ? Number(Deno.readTextFileSync(pidFile).trim()) : NaN;
    if (!(pid > 0)) throw new Error(`no pid file for the container`);
    const { spawnExitWatcher } = await import("../engine/exit_watcher.ts");
    if (!await spawnExitWatcher(ctx.host.stateDir, ctx.namespace, ctx.id, record.createdAt, pid)) {
      throw new Error(`process ${pid} already gone`);
    }
  } catch (error) {
    ctx.log.warn("cannot watch the container's exit: its checkpoint data will be kept", { error: String(error) });
  }
}

async function onStart(ctx: WrapperContext): Promise<number | undefined> {
  const record = ctx.registry.get(ctx.namespace, ctx.id);
  if (record === undefined) return undefined;
  if (record.restored === true) return 0;
  await watchExit(ctx, record);
  return undefined;
}

/** Waits briefly for the exit watcher's verdict (it writes just after the process is reaped). */
async function exitOf(ctx: WrapperContext): Promise<ContainerRecord | undefined> {
  for (let i = 0; i < 40; i++) {
    const record = ctx.registry.get(ctx.namespace, ctx.id);
    if (record === undefined || record.exit !== undefined) return record;
    await new Promise((r) => setTimeout(r, 50));
  }
  return ctx.registry.get(ctx.namespace, ctx.id);
}

/**
 * Why the key's data must stay after `record`'s container ended, or `undefined` when its
 * job is done (it ended by itself with exit code 0) and the data can go.
 */
function keepReason(record: ContainerRecord, store: KeyStore): string | undefined {
  const exit = record.exit as { code?: number } | undefined;
  if (record.stoppedByCheckpoint === true) return "stopped by an ARCH checkpoint";
  if (exit?.code === undefined) return "exit status unknown";
  if (exit.code !== 0) return `exit code ${exit.code}`;
  // Another container of the key may have been checkpointed since this one started.
  const current = store.currentPath();
  if (current === undefined) return undefined;
  try {
    const made = JSON.parse(Deno.readTextFileSync(`${current}/manifest.json`)) as {
      containerId?: string;
      createdAt?: string;
    };
    if (made.containerId !== record.id && (made.createdAt ?? "") > record.createdAt) {
      return `a newer checkpoint of container "${made.containerId}" is current`;
    }
  } catch { /* unreadable: it is not a checkpoint anyone can restore */ }
  return undefined;
}

async function onDelete(ctx: WrapperContext): Promise<number> {
  const result = await runCommand({ cmd: ctx.runc, args: ctx.argv, stdio: "inherit" });
  if (result.code !== 0) return result.code;
  const record = await exitOf(ctx);
  ctx.registry.remove(ctx.namespace, ctx.id);
  if (record === undefined) return 0;
  const { checkpointRoot, scope } = record;
  if (typeof checkpointRoot !== "string" || typeof scope !== "string") return 0;
  const store = new KeyStore(checkpointRoot, scope, record.key);
  try {
    if (!store.exists()) return 0;
    let host;
    try {
      host = loadHostConfig(ctx.host.configPath, []);
    } catch {
      host = undefined;
    }
    using _claim = await store.claim("delete", { waitMs: (host?.lockWaitSeconds ?? 30) * 1000 });
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
