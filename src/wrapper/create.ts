/**
 * `runc create` of an ARCH-enabled container: validate its `ARCH_*` configuration (refused
 * with one sentence on error), refuse while the node drains after `arch finalize`, record
 * the container, and if its key has a committed checkpoint it may restore, restore it
 * instead of creating (`runc restore --detach`) under the key's claim. A checkpoint of
 * another scope or image is refused; a failed restore quarantines the checkpoint and the
 * container starts fresh from the image's files (rootfs reset if the saved layer was
 * applied), or is refused, per host configuration. After a successful `runc restore`
 * nothing may turn the call into a `runc create`.
 */

import { errorMessage } from "../util/errors.ts";
import type { WrapperContext } from "./context.ts";
import { envOf, rootfsPath, withEnv } from "../config/container.ts";
import { containerConfig } from "../config/container_config.ts";
import { hostConfigFrom } from "../config/host_schema.ts";
import { stringOption } from "../runc/argv.ts";
import { carriedGlobal, Runc, targetOf } from "../runc/client.ts";
import { type ContainerRecord, initPid } from "../registry/registry.ts";
import { KeyStore } from "../store/store.ts";
import { templateStore } from "../store/templates.ts";
import { ensureDefaultRoot } from "../store/default_root.ts";
import { criuLogDir } from "../criu/logs.ts";
import {
  ensureCriuConfig,
  linkTarget,
  rewriteBundle,
  withCriuConfig,
  withResolvedBindSources,
} from "../criu/config.ts";
import { hostOwner, withArchHooks, withWorkdir, withWorkdirSource } from "../sharedfs/config_json.ts";
import { ensureWorkdir, workdirPath } from "../sharedfs/workdir.ts";
import { isDraining } from "../checkpoint/drain.ts";
import { findUpperdir } from "../rootfs/upperdir.ts";
import { ClaimTimeout, KeyGone } from "../store/claim.ts";
import { faultPoint } from "../util/faults.ts";
import { watchExit } from "./watch_exit.ts";
import { ensureSystemPath, SEARCH_PATH } from "../process/programs.ts";
import { selfArch } from "../config/host.ts";
import { needsControlDir, taskOptions } from "../task/options.ts";
import { clearControlDir, postResult, withControlDir } from "../task/control_dir.ts";

/**
 * The `arch` hook command the wrapper puts into an ARCH shared-FS container's config.json:
 * the `arch` program next to this wrapper (the launcher names it), with this node's host
 * configuration (runc runs hooks with the hook's environment only).
 */
function archHook(configPath: string): { path: string; env: string[] } {
  const path = selfArch();
  return { path, env: [`ARCH_CONFIG=${configPath}`, `PATH=${SEARCH_PATH}`] };
}

/**
 * The wrapper's `runc create` of an ARCH container (see the module doc): an exit status if it refused (1) or
 * restored (0) the container, `undefined` to let runc create it. Requires root; a restore also runc and CRIU.
 */
export async function onCreate(ctx: WrapperContext): Promise<number | undefined> {
  let host;
  try {
    host = hostConfigFrom(ctx.host);
  } catch (error) {
    ctx.fail(`host configuration: ${errorMessage(error)}`);
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
  const spec = ctx.spec!; // read once by the wrapper for create
  const env = envOf(spec);
  if (!env.has("ARCH_CHECKPOINT_HOST_PATH") && !env.has("ARCH_SHAREDFS_HOST_PATH")) {
    try {
      ensureDefaultRoot(host.defaultCheckpointRoot);
    } catch (error) {
      ctx.fail(errorMessage(error));
      return 1;
    }
  }
  const resolved = containerConfig(spec, ctx.id, ctx.namespace, host);
  if (!resolved.ok) {
    ctx.fail(resolved.error);
    return 1;
  }
  const task = taskOptions(env, host);
  if (typeof task === "string") {
    ctx.fail(task);
    return 1;
  }
  const control = needsControlDir(task) ? withControlDir(spec) : undefined;
  if (typeof control === "string") {
    ctx.fail(control);
    return 1;
  }
  const rootfs = rootfsPath(spec, bundle);
  let upperdir: string | undefined;
  try {
    upperdir = findUpperdir(rootfs);
  } catch (error) {
    ctx.fail(`cannot find the writable layer of this container: ${errorMessage(error)}`);
    return 1;
  }
  if (upperdir === undefined) {
    ctx.fail(
      `the rootfs of this container ("${rootfs}") is not an overlay mount, so ARCH could not save its files: ` +
        `run it with an overlay snapshotter/storage driver, or without ARCH_ENABLE=1`,
    );
    return 1;
  }
  const { checkpointRoot, scope, key, keySource, sharedFs } = resolved.config;
  let workdir: string | undefined;
  if (sharedFs !== undefined) {
    // Every refusal before the first write: a clashing mount, a user without a host identity.
    const path = workdirPath(sharedFs.root, scope, key);
    const owner = hostOwner(spec);
    const clash = withWorkdir(spec, path, sharedFs.containerPath);
    if (typeof owner === "string" || typeof clash === "string") {
      ctx.fail(typeof owner === "string" ? owner : clash as string);
      return 1;
    }
    try {
      const { imageIdentity } = await import("../rootfs/image_identity.ts");
      const image = await imageIdentity(rootfs, host.stateDir);
      if (image === undefined) throw new Error("cannot identify the image of the container");
      workdir = ensureWorkdir(sharedFs, scope, key, owner, image);
    } catch (error) {
      ctx.fail(`cannot prepare the work directory of checkpoint key "${key}": ${errorMessage(error)}`);
      return 1;
    }
  }
  try {
    const criuConfig = ensureCriuConfig(host.criuConfigDir, {
      ghostLimitBytes: Math.min(host.ghostFileLimitBytes, host.maxCheckpointBytes),
    });
    rewriteBundle(bundle, (original) => {
      let next = withCriuConfig(original, criuConfig) ?? original;
      // The engine's bind sources only: the work directory below is ARCH's own, checked as it is.
      next = withResolvedBindSources(next, linkTarget) ?? next;
      if (needsControlDir(task)) {
        const withDir = withControlDir(next);
        if (typeof withDir === "string") throw new Error(withDir); // checked above on the same file
        next = withDir ?? next;
      }
      if (sharedFs !== undefined && workdir !== undefined) {
        const mounted = withWorkdir(next, workdir, sharedFs.containerPath);
        if (typeof mounted === "string") throw new Error(mounted); // checked above on the same file
        next = mounted ?? next;
        next = withArchHooks(next, archHook(ctx.host.configPath), ctx.namespace) ?? next;
      }
      return next === original ? undefined : next;
    });
  } catch (error) {
    // Fail closed: left as it is, the annotation could name a CRIU configuration the
    // container's owner chose, which CRIU would run as root at the next checkpoint.
    ctx.fail(`cannot prepare the container's config.json for ARCH: ${errorMessage(error)}`);
    return 1;
  }
  const record = {
    namespace: ctx.namespace,
    id: ctx.id,
    root: ctx.root,
    runcGlobal: carriedGlobal(ctx.call.global),
    bundle,
    scope,
    key,
    keySource,
    checkpointRoot,
    upperdir,
    ...(Object.keys(task).length > 0 ? { task } : {}),
    ...(sharedFs !== undefined ? { sharedFs: { ...sharedFs, workdir } } : {}),
    pidFile: stringOption(ctx.call.options, "pid-file"),
    createdAt: new Date().toISOString(),
  };
  ctx.registry.put(record);
  ctx.log.info("registered ARCH container", { scope, key, keySource, bundle });

  const own = new KeyStore(checkpointRoot, scope, key);
  // A key without a checkpoint starts from the admin's template when it names one (`store/templates.ts`);
  // the key's own checkpoint always comes first (the job's own progress before a warm start).
  const ownCheckpoint = own.exists() && own.currentPath() !== undefined;
  const template = !ownCheckpoint && task.restoreFrom !== undefined
    ? templateStore(checkpointRoot, scope, task.restoreFrom)
    : undefined;
  if (template !== undefined && template.currentPath() === undefined) {
    ctx.fail(
      `ARCH_RESTORE_FROM=${JSON.stringify(task.restoreFrom)}: there is no such template for this container's ` +
        `scope "${scope}" on its checkpoint root: ask the admin to publish it (arch publish <key> <name>), or remove ` +
        `the variable`,
    );
    return 1;
  }
  if (!ownCheckpoint && template === undefined) return undefined;
  const store = ownCheckpoint ? own : template!;
  const templateName = ownCheckpoint ? undefined : task.restoreFrom;
  ensureSystemPath(); // runc restore runs criu from PATH; an engine started by hand may lack /usr/sbin
  let claim;
  try {
    claim = await store.claim("restore", { waitMs: host.lockWaitSeconds * 1000 });
  } catch (error) {
    const gone = error instanceof Deno.errors.NotFound || error instanceof KeyGone;
    if (gone && templateName === undefined) return undefined;
    const why = gone
      ? "it was unpublished meanwhile"
      : error instanceof ClaimTimeout
      ? error.message
      : `cannot claim it: ${errorMessage(error)}`;
    const what = templateName === undefined ? `checkpoint key "${key}"` : `template "${templateName}"`;
    ctx.fail(`cannot restore ${what}: ${why}; start the container again later`);
    return 1;
  }
  using _claim = claim;
  // Under the claim: what was seen before may have changed (a commit, a delete, a restore).
  const current = store.currentPath();
  if (current === undefined && templateName !== undefined) {
    ctx.fail(`cannot restore template "${templateName}": it was unpublished meanwhile; start the container again`);
    return 1;
  }
  if (current === undefined) return undefined;
  if (templateName === undefined && store.isConsumed() && !resolved.config.restoreConsumed) {
    const by = store.consumedBy();
    if (host.onConsumedCheckpoint === "refuse") {
      ctx.fail(
        `the checkpoint of key "${key}" was already restored${by !== undefined ? ` ${by}` : ""}, and this node ` +
          `refuses a second container of the key (host config "onConsumedCheckpoint"): stop the other one, or ` +
          `start this one with another ARCH_CHECKPOINT_ID`,
      );
      return 1;
    }
    ctx.log.info("checkpoint already restored once, starting fresh", { checkpoint: current, by });
    return undefined;
  }
  let secret, image;
  try {
    const { loadSecret } = await import("../store/secret.ts");
    const { imageIdentity } = await import("../rootfs/image_identity.ts");
    secret = loadSecret(host.secretFile, false); // never made here: a new secret would authenticate nothing
    image = await imageIdentity(rootfs, host.stateDir);
    if (image === undefined) throw new Error(`cannot identify the image of the container`);
  } catch (error) {
    ctx.fail(`cannot verify checkpoint ${current}: ${errorMessage(error)}`);
    return 1;
  }
  const { restoreContainer } = await import("../restore/restore.ts");
  // Shared-FS mode: runc and CRIU get the work directory as ARCH's own mount of the checked
  // directory (`sharedfs/staging.ts`), never the path on the shared file system.
  const staging = sharedFs !== undefined && workdir !== undefined
    ? (await import("../sharedfs/staging.ts")).stagingPath(host.stateDir, ctx.namespace, ctx.id)
    : undefined;
  const unstage = async () => {
    if (staging === undefined || sharedFs === undefined || workdir === undefined) return;
    const { unstageWorkdir } = await import("../sharedfs/staging.ts");
    unstageWorkdir(staging); // the container has its own copy of the mount
    rewriteBundle(bundle, (spec) => withWorkdirSource(spec, sharedFs.containerPath, workdir));
    ctx.registry.put(record);
  };
  let outcome;
  try {
    if (staging !== undefined && sharedFs !== undefined) {
      try {
        const { stageWorkdir } = await import("../sharedfs/staging.ts");
        stageWorkdir(host.stateDir, ctx.namespace, ctx.id, sharedFs, scope, key);
        rewriteBundle(bundle, (spec) => withWorkdirSource(spec, sharedFs.containerPath, staging));
        ctx.registry.put({ ...record, sharedFs: { ...record.sharedFs!, staged: staging } });
      } catch (error) {
        ctx.fail(`cannot hand over the work directory of checkpoint key "${key}": ${errorMessage(error)}`);
        return 1;
      }
    }
    outcome = await restoreContainer(ctx.call, store, ctx.runc, {
      stateDir: host.stateDir,
      secret,
      expected: { scope, key, image, ...(templateName !== undefined ? { template: templateName } : {}) },
      rootfs,
      criuLogs: criuLogDir(ctx.host.logFile),
      cpuFeatureCheck: host.cpuFeatureCheck === "require",
      keepOnFailure: templateName !== undefined,
    });
  } catch (error) {
    // Never back to the wrapper (its fail-open would create the container on a rootfs the
    // restore may have changed): refuse; the checkpoint stays, the engine may retry.
    ctx.fail(`restore of checkpoint ${current} failed unexpectedly: ${errorMessage(error)}`);
    return 1;
  } finally {
    try {
      await unstage();
    } catch (error) {
      // config.json or the record still name the staging path: a create of this bundle would
      // get nothing mounted there, never the shared path unchecked (the hook compares them)
      ctx.log.error("cannot put back the work directory's source after the restore", { error: String(error) });
    }
  }
  if (outcome.kind === "restored") {
    // The container runs now: whatever fails below must not turn this call into a create.
    const restored = {
      ...record,
      restored: true,
      restoredFrom: outcome.from,
      ...(templateName !== undefined ? { template: templateName } : {}),
    };
    try {
      faultPoint(host.stateDir, "restore-after-restored");
      if (templateName === undefined) store.markConsumed({ container: ctx.id, node: Deno.hostname() });
    } catch (error) {
      // Not marked: unpublish it instead (a rename needs no space), or it could run twice.
      ctx.log.error("restored, but cannot mark the checkpoint consumed", { error: String(error) });
      try {
        if (!resolved.config.restoreConsumed && templateName === undefined) store.quarantine();
      } catch { /* logged above */ }
    }
    try {
      ctx.registry.put(restored);
      ctx.log.info("restored from checkpoint", { checkpoint: outcome.from, timings: outcome.timings });
    } catch (error) {
      ctx.log.error("restored, but cannot record it", { checkpoint: outcome.from, error: String(error) });
    }
    await watchExit(ctx, restored);
    if (task.restoredSignal !== undefined || task.requests === true) {
      await tellRestored(ctx, restored, task.restoredSignal, task.requests === true ? outcome.from : undefined);
    }
    return 0;
  }
  if (outcome.kind === "task") {
    // The job saved itself: its files are in place, its process starts fresh and is told so.
    try {
      rewriteBundle(bundle, (spec) => withEnv(spec, "ARCH_RESTORED", "task"));
      ctx.registry.put({ ...record, restoredTask: outcome.from });
      // Last: a failure above leaves the checkpoint as it was for the next try.
      if (templateName === undefined) store.markConsumed({ container: ctx.id, node: Deno.hostname() });
    } catch (error) {
      try {
        const { resetRootfs } = await import("../rootfs/reset.ts");
        await resetRootfs(rootfs); // the saved files must not stay in a rootfs a later create would start on
      } catch (reset) {
        ctx.log.error("cannot reset the rootfs after a failed task restore", { error: errorMessage(reset) });
      }
      ctx.fail(`cannot start from task checkpoint ${outcome.from}: ${errorMessage(error)}; start the container again`);
      return 1;
    }
    ctx.log.info("starting from a task checkpoint: its files, a fresh process", {
      checkpoint: outcome.from,
      timings: outcome.timings,
    });
    return undefined;
  }
  if (outcome.kind === "refused") {
    if (outcome.applied) {
      // The saved files went into this rootfs: a later create of this container must not find them.
      try {
        const { resetRootfs } = await import("../rootfs/reset.ts");
        await resetRootfs(rootfs);
      } catch (error) {
        ctx.log.error("cannot reset the rootfs after a refused restore", { error: String(error) });
      }
    }
    ctx.fail(`${outcome.reason}; the checkpoint is kept for a node that can restore it`);
    return 1;
  }
  if (outcome.kind === "foreign") {
    ctx.fail(`${outcome.reason}: remove ${store.dir} to start this container fresh, or start it with its own image`);
    return 1;
  }
  const kept = outcome.quarantined ?? `${store.dir}, a template, unchanged`;
  ctx.log.error("restore failed, checkpoint kept aside", { reason: outcome.reason, kept });
  if (host.onRestoreFailure === "fail") {
    ctx.fail(`restore failed (checkpoint kept in ${kept}): ${outcome.reason}`);
    return 1;
  }
  if (outcome.applied) {
    try {
      const { resetRootfs } = await import("../rootfs/reset.ts");
      await resetRootfs(rootfs);
    } catch (error) {
      ctx.fail(
        `restore failed (checkpoint kept in ${kept}) after the saved files were applied, and the ` +
          `rootfs cannot be reset (${errorMessage(error)}): start the container again to start it fresh`,
      );
      return 1;
    }
  }
  return undefined;
}

/**
 * Tells a restored job it was restored, after clearing its control directory's stale notice
 * and answer: `result` says `restored <checkpoint>` to a job that may ask for checkpoints (it
 * may be waiting for the answer to the request this checkpoint was), and `signal`
 * (`ARCH_RESTORED_SIGNAL`) is sent. A failure is logged: the container runs either way.
 */
async function tellRestored(
  ctx: WrapperContext,
  record: ContainerRecord,
  signal: string | undefined,
  from: string | undefined,
): Promise<void> {
  const pid = initPid(record);
  if (pid !== undefined) clearControlDir(pid);
  if (pid !== undefined && from !== undefined) {
    try {
      postResult(pid, `restored ${from.slice(from.lastIndexOf("/") + 1)}`);
    } catch (error) {
      ctx.log.warn("restored, but cannot tell the job in /run/arch/result", { error: errorMessage(error) });
    }
  }
  if (signal === undefined) return;
  try {
    await new Runc(targetOf(ctx.runc, record)).kill(signal, { timeoutMs: 10_000 });
  } catch (error) {
    ctx.log.warn("restored, but cannot send ARCH_RESTORED_SIGNAL", { signal, error: errorMessage(error) });
  }
}
