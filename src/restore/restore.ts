/**
 * Restores a committed checkpoint into a container being created.
 *
 *     authenticate + verify the manifest, scope, key, image, tool compatibility and every file
 *     except the raw page data (`criu/pages-*.img`, whose size only is checked)
 *     → in parallel: hash the page data | apply the writable layer to the new, mounted rootfs
 *       → runc restore --detach with the create's options, stdio untouched, its tasks held at
 *       CRIU's post-restore step by the restore gate (`restore_gate.ts`) until the page data
 *       verified
 *
 * When the bundle's CRIU action script does not honour the gate (an older script), or the
 * checkpoint is on a network or FUSE file system (CRIU's restorer parses the dumped vDSO's
 * symbols out of the page data before the gate, and such a file system may be writable by
 * others than this node's root), every file is verified before anything changes.
 *
 * Guarantees: the caller holds the key's claim. Nothing is changed before every file CRIU
 * parses and the layer archive are verified, and no instruction of the restored process
 * runs unless every file, page data included, matched the authenticated manifest. A checkpoint of another scope, key or image is refused and left as it is (it is
 * not this container's). A checkpoint that fails verification or restore is moved aside
 * (quarantine) so it is never tried again, and the caller decides between a fresh start and
 * a refusal; the outcome says whether the saved layer was already applied (then a fresh
 * start needs the rootfs reset first). The restored process keeps the engine's stdio: runc
 * inherits this process's stdin/stdout/stderr. Requires root, runc and CRIU.
 */

import { CRIU_DIR, isPageData } from "../store/layout.ts";
import { errorMessage } from "../util/errors.ts";
import { type RuncCall, stringOption } from "../runc/argv.ts";
import { carriedGlobal, restoreForCreate, Runc, RuncError } from "../runc/client.ts";
import type { KeyStore } from "../store/store.ts";
import {
  CheckpointVersionError,
  type Expected,
  ForeignCheckpoint,
  type ManifestFile,
  UnauthenticatedCheckpoint,
  verifyCheckpointExcept,
  verifyFiles,
} from "../store/manifest.ts";
import {
  bundleHonoursGate,
  GATE_TIMEOUT_ENV,
  gateTimedOut,
  gateTimeoutSeconds,
  NO_GATE_ENV,
  openGate,
  type RestoreGate,
} from "./restore_gate.ts";
import { applyToRootfs, LayerRefusedError } from "../rootfs/layer_archive.ts";
import { onLocalFileSystem } from "../util/mounts.ts";
import { incompatibility, toolVersions } from "../criu/versions.ts";
import { keepCriuLog } from "../criu/logs.ts";
import { faultPoint } from "../util/faults.ts";
import { recordEvent } from "../observe/events.ts";
import { observeTargets } from "../observe/targets.ts";
import { lastElement } from "../util/paths.ts";

/**
 * How a restore ended: `restored` (the container runs), `foreign` (another scope's, key's or image's checkpoint,
 * left as it is), `refused` (this node cannot restore it) or `failed` (quarantined; `applied`: rootfs changed).
 */
export type RestoreOutcome =
  | { kind: "restored"; from: string; timings: Record<string, number> }
  /** A task checkpoint: its files are in the rootfs, the process is to be created fresh (`runc create`). */
  | { kind: "task"; from: string; timings: Record<string, number> }
  | { kind: "foreign"; reason: string }
  /** This node cannot restore it (its secret, its CRIU, its free space): left as it is for a node that can. */
  | { kind: "refused"; reason: string; applied?: boolean }
  | { kind: "failed"; reason: string; quarantined: string | undefined; applied: boolean };

/** What {@link restoreContainer} needs from the node and the new container; without `criuLogs` no log is kept. */
export interface RestoreOptions {
  readonly stateDir: string;
  readonly secret: Uint8Array;
  readonly expected: Expected;
  /** The new container's mounted rootfs. */
  readonly rootfs: string;
  readonly criuLogs?: string;
  /** Refuse a checkpoint made on a CPU with extensions this one lacks (host config `cpuFeatureCheck`, default on). */
  readonly cpuFeatureCheck?: boolean;
  /** Never quarantine (a template: one container's failed restore must not take it from the others). */
  readonly keepOnFailure?: boolean;
}

/**
 * Restores `store`'s current checkpoint for the container `create` describes, and reports
 * the outcome as an event and in the node's metrics (`observe/`; never fails the restore).
 */
export async function restoreContainer(
  create: RuncCall,
  store: KeyStore,
  runcPath: string,
  options: RestoreOptions,
): Promise<RestoreOutcome> {
  const started = performance.now();
  const dir = store.currentPath();
  const seen: Seen = {};
  let outcome: RestoreOutcome | undefined;
  try {
    return outcome = await restoreCurrent(create, store, runcPath, options, seen);
  } finally {
    reportRestore(create, options.expected, dir, seen, outcome, performance.now() - started);
  }
}

/** What the restore learnt on the way, for its report: the size of a verified checkpoint. */
interface Seen {
  bytes?: number;
}

function reportRestore(
  create: RuncCall,
  expected: Expected,
  dir: string | undefined,
  seen: Seen,
  outcome: RestoreOutcome | undefined,
  ms: number,
): void {
  const result = outcome === undefined
    ? "failed"
    : outcome.kind === "restored" || outcome.kind === "task"
    ? "ok"
    : outcome.kind;
  recordEvent(observeTargets(), {
    kind: "restore",
    result,
    namespace: lastElement(stringOption(create.global, "root") ?? "/run/runc"),
    ...(create.args[0] !== undefined ? { id: create.args[0] } : {}),
    // The container's own key and scope, also when it starts from a template (named beside them).
    key: expected.key,
    scope: expected.scope,
    ...(expected.template !== undefined ? { template: expected.template } : {}),
    ...(dir !== undefined ? { checkpoint: dir } : {}),
    ...(seen.bytes !== undefined ? { bytes: seen.bytes } : {}),
    durationMs: Math.round(ms),
    ...(outcome?.kind === "restored" || outcome?.kind === "task" ? { timings: outcome.timings } : {}),
    ...(outcome?.kind === "task" ? { task: true } : {}),
    ...(outcome !== undefined && outcome.kind !== "restored" && outcome.kind !== "task"
      ? { error: outcome.reason, code: `restore-${outcome.kind}` }
      : {}),
    ...(outcome === undefined ? { error: "unexpected error", code: "restore-error" } : {}),
  });
}

async function restoreCurrent(
  create: RuncCall,
  store: KeyStore,
  runcPath: string,
  options: RestoreOptions,
  seen: Seen,
): Promise<RestoreOutcome> {
  const dir = store.currentPath()!;
  const bundle = stringOption(create.options, "bundle") ?? Deno.cwd();
  let applied = false;
  const fail = (reason: string, changed = applied): RestoreOutcome => ({
    kind: "failed",
    reason,
    quarantined: options.keepOnFailure === true ? undefined : store.quarantine(),
    applied: changed,
  });
  const timings: Record<string, number> = {};
  const t0 = performance.now();
  let t = t0;
  const lap = (name: string) => {
    const now = performance.now();
    timings[name] = Math.round(now - t);
    t = now;
  };
  let manifest, deferred: readonly ManifestFile[];
  // With a gate, the page data is hashed while runc restores; without one, up front. Only on a
  // local file system: CRIU's restorer reads a little of the page data before the gate (the
  // dumped vDSO's symbols), and a network file system may be writable by others than this
  // node's root, so there nothing unauthenticated reaches CRIU.
  const gated = bundleHonoursGate(bundle) && onLocalFileSystem(dir);
  try {
    const here = toolVersions(runcPath);
    here.catch(() => {}); // awaited below; a verification failure first must not leave it unhandled
    const verifying = verifyCheckpointExcept(dir, options.secret, options.expected, gated ? isPageData : () => false);
    faultPoint(options.stateDir, "restore-during-verify");
    ({ manifest, deferred } = await verifying);
    lap("verify");
    seen.bytes = manifest.files.reduce((n, f) => n + f.size, 0); // verified: each file has this size
    if (manifest.kind === "task") return await applyTask(dir, manifest.rootfs.archive, options.rootfs, timings, fail);
    let versions;
    try {
      versions = await here;
    } catch (error) {
      return { kind: "refused", reason: `cannot read this node's runc/CRIU versions: ${errorMessage(error)}` };
    }
    const why = incompatibility(manifest, versions, { cpuFeatureCheck: options.cpuFeatureCheck ?? true });
    if (why !== undefined) {
      return { kind: "refused", reason: `checkpoint ${dir} cannot be restored on this node: ${why}` };
    }
  } catch (error) {
    if (error instanceof ForeignCheckpoint) {
      return {
        kind: "foreign",
        reason: `the ${
          options.expected.template !== undefined
            ? `template "${options.expected.template}"`
            : `checkpoint of key "${store.key}"`
        } is not this container's: ${error.message}`,
      };
    }
    if (error instanceof UnauthenticatedCheckpoint) {
      return { kind: "refused", reason: `checkpoint ${dir} cannot be trusted on this node: ${error.message}` };
    }
    if (error instanceof CheckpointVersionError) {
      return { kind: "refused", reason: `checkpoint ${dir} cannot be read by this ARCH: ${error.message}` };
    }
    return fail(`checkpoint ${dir} failed verification: ${errorMessage(error)}`);
  }
  // The page data, hashed from here on; its verdict opens the gate (or fails the restore).
  const pages: Promise<string | undefined> = verifyFiles(dir, deferred).then(
    () => undefined,
    (error) => errorMessage(error),
  );
  const settled = pages.then((why) => {
    timings.pagesVerified = Math.round(performance.now() - t0);
    return why;
  });
  try {
    if (manifest.rootfs.archive !== null) {
      applied = true; // from here on the rootfs may have changed (unless the layer was refused up front)
      const applying = applyToRootfs(`${dir}/${manifest.rootfs.archive}`, options.rootfs);
      faultPoint(options.stateDir, "restore-during-apply");
      await applying;
    }
  } catch (error) {
    if (error instanceof LayerRefusedError) {
      applied = false;
      if (/free (space|inodes)/.test(error.message)) {
        return { kind: "refused", reason: `cannot apply the saved writable layer here: ${error.message}` };
      }
    }
    const why = await settled; // a mismatching page file is the better reason
    if (why !== undefined) return fail(`checkpoint ${dir} failed verification: ${why}`);
    return fail(`cannot apply the saved writable layer: ${errorMessage(error)}`);
  }
  lap("rootfs");
  const work = Deno.makeTempDirSync({ dir: bundle, prefix: "arch-restore-" });
  let gate: RestoreGate | undefined;
  if (deferred.length > 0) {
    try {
      gate = openGate(work, gateTimeoutSeconds(deferred.reduce((n, f) => n + f.size, 0)));
    } catch {
      gate = undefined; // no gate: the page data is verified before runc restore starts
    }
    if (gate === undefined) {
      const why = await settled;
      if (why !== undefined) return fail(`checkpoint ${dir} failed verification: ${why}`);
    }
  }
  const restoring = restoreForCreate(runcPath, create, `${dir}/${CRIU_DIR}`, work, {
    stdio: "inherit",
    env: gate?.env ?? NO_GATE_ENV,
  }).then(() => undefined, (error: unknown) => {
    if (error instanceof RuncError) return error;
    throw error; // runc could not be started: not a verdict on the checkpoint, which stays current
  });
  const open = gate;
  if (open !== undefined) {
    settled.then((why) => open.settle(why === undefined)).catch(() => {
      // The verdict could not be written: the lock is released without one, and the script fails closed.
    });
  }
  faultPoint(options.stateDir, "restore-during-runc-restore");
  const failed = await restoring;
  const pagesWhy = await settled; // settled already, unless runc failed before the gate
  try {
    gate?.settle(false); // no-op after the verdict
  } catch { /* as above: no verdict fails the script */ }
  const kept = options.criuLogs === undefined ? undefined : keepCriuLog(
    options.criuLogs,
    options.expected.scope,
    options.expected.key,
    "restore",
    failed === undefined,
    `${work}/restore.log`,
  );
  // Defence in depth: a restore that succeeded although its page data does not match (its
  // script did not honour the gate) must not run on: it fails like one the gate stopped.
  const bypassed = failed === undefined && pagesWhy !== undefined;
  if (failed !== undefined || bypassed) {
    let log = "";
    try {
      const errors = Deno.readTextFileSync(`${work}/restore.log`).split("\n").filter((l) => l.includes("Error"));
      log = errors.at(-1)?.trim() ?? "";
    } catch { /* no log */ }
    // Whatever runc left of the half-restored container must go, or a fresh create of the
    // same id would fail.
    const target = { runc: runcPath, global: carriedGlobal(create.global), id: create.args[0]! };
    await new Runc(target).forceDelete().catch(() => {}); // nothing left to delete is fine
    if (pagesWhy !== undefined) return fail(`checkpoint ${dir} failed verification: ${pagesWhy}`);
    if (gate !== undefined && gateTimedOut(work)) {
      // The data was good, only slow to verify: the checkpoint stays current.
      return {
        kind: "refused",
        reason: `verifying checkpoint ${dir} took longer than the restore waits for it (${
          gate.env[GATE_TIMEOUT_ENV]
        } s): the storage is too slow right now`,
        applied,
      };
    }
    return fail(
      `runc restore exited with ${failed?.status}${log ? `: ${log}` : ""} (CRIU log: ${kept ?? "not kept"})`,
    );
  }
  lap("restore");
  return { kind: "restored", from: dir, timings };
}

/**
 * A task checkpoint (verified whole: it has no page data): its writable layer goes into the
 * new rootfs and the process is created fresh. A layer this node has no room for is refused
 * (the checkpoint stays); any other failure quarantines it.
 */
async function applyTask(
  dir: string,
  archive: string | null,
  rootfs: string,
  timings: Record<string, number>,
  fail: (reason: string, applied: boolean) => RestoreOutcome,
): Promise<RestoreOutcome> {
  const t = performance.now();
  try {
    if (archive !== null) await applyToRootfs(`${dir}/${archive}`, rootfs);
  } catch (error) {
    if (error instanceof LayerRefusedError && /free (space|inodes)/.test(error.message)) {
      return { kind: "refused", reason: `cannot apply the saved writable layer here: ${error.message}` };
    }
    return fail(`cannot apply the saved writable layer: ${errorMessage(error)}`, !(error instanceof LayerRefusedError));
  }
  timings.rootfs = Math.round(performance.now() - t);
  return { kind: "task", from: dir, timings };
}
