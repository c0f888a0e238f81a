/**
 * Checkpoints one running ARCH container without ever losing it:
 *
 *     runc pause → capture the writable layer → runc checkpoint --leave-running (into a
 *     temporary directory beside the final one) → hashes + manifest → fsync → atomic
 *     commit → runc kill → runc resume (so the kill is delivered)
 *
 * Any failure before the commit resumes the container, removes the temporary directory,
 * and throws a {@link CheckpointError} naming the step and, for a failed dump, CRIU's log
 * (kept with ARCH's logs, see `log/criu_logs.ts`: the bundle goes with the container). A checkpoint of a key replaces the
 * previous one only once committed. Requires root, runc and CRIU.
 */

import { ArchError } from "../util/errors.ts";
import type { ContainerRecord, Registry } from "../registry/registry.ts";
import { flushWhile, KeyStore, makeDurable } from "../store/store.ts";
import { hashFiles, listFiles, type Manifest, MANIFEST_VERSION } from "../store/manifest.ts";
import { findUpperdir } from "../rootfs/upperdir.ts";
import { captureUpperdir } from "../rootfs/diff.ts";
import { runc, runcArgs, type RuncTarget } from "./runc.ts";
import { toolVersions } from "./versions.ts";
import { readBundleSpec } from "../config/container.ts";
import { fsyncPath } from "../util/fsync.ts";
import { keepCriuLog } from "../log/criu_logs.ts";

export class CheckpointError extends ArchError {
  constructor(message: string, readonly step: string, readonly criuLog?: string) {
    super(message, `checkpoint-${step}`, 1);
  }
}

export interface CheckpointResult {
  readonly id: string;
  readonly key: string;
  readonly dir: string;
  readonly bytes: number;
  readonly timings: Record<string, number>;
}

/** The rootfs path of a bundle (config.json `root.path`, relative to the bundle). */
export function bundleRootfs(bundle: string): string {
  const path = readBundleSpec(bundle).root?.path ?? "rootfs";
  return path.startsWith("/") ? path : `${bundle}/${path}`;
}

export async function checkpointContainer(
  record: ContainerRecord,
  runcPath: string,
  registry: Registry,
  options: { leaveRunning?: boolean; criuLogs?: string } = {},
): Promise<CheckpointResult> {
  const root = record.checkpointRoot;
  if (typeof root !== "string") throw new CheckpointError(`container "${record.id}" has no checkpoint root`, "config");
  const target: RuncTarget = { runc: runcPath, root: record.root, id: record.id };
  const store = new KeyStore(root, record.namespace, record.key);
  const timings: Record<string, number> = {};
  const t0 = performance.now();
  const lap = (name: string, since: number) => (timings[name] = Math.round(performance.now() - since));

  using _lock = await store.lock();
  const versionsP = toolVersions(runcPath);
  const pause = await runc(target, runcArgs.pause(target));
  if (pause.code !== 0) throw new CheckpointError(`cannot pause "${record.id}": ${pause.stderr.trim()}`, "pause");
  lap("pause", t0);
  const tmp = store.beginCheckpoint();
  let committed: string;
  try {
    let t = performance.now();
    const upperdir = findUpperdir(bundleRootfs(record.bundle)) ?? null;
    if (upperdir !== null) await captureUpperdir(upperdir, `${tmp}/rootfs.tar`);
    lap("rootfs", t);

    t = performance.now();
    const dumping = runc(target, runcArgs.checkpoint(target, `${tmp}/criu`, `${tmp}/work`));
    const flushing = flushWhile(tmp, dumping);
    const dump = await dumping;
    await flushing;
    lap("dump", t);
    const criuLog = options.criuLogs === undefined
      ? undefined
      : keepCriuLog(options.criuLogs, record.namespace, record.key, "dump", dump.code === 0, `${tmp}/work/dump.log`);
    if (dump.code !== 0) {
      throw new CheckpointError(
        `runc checkpoint of "${record.id}" failed: ${lastLine(dump.stderr)}` +
          (criuLog !== undefined ? ` (CRIU log: ${criuLog})` : ""),
        "dump",
        criuLog,
      );
    }

    t = performance.now();
    const [files] = await Promise.all([hashFiles(tmp, listFiles(tmp, new Set(["work"]))), makeDurable(tmp)]);
    lap("hash+fsync", t);
    const versions = await versionsP;
    const manifest: Manifest = {
      version: MANIFEST_VERSION,
      containerId: record.id,
      namespace: record.namespace,
      key: record.key,
      createdAt: new Date().toISOString(),
      ...versions,
      rootfs: { archive: upperdir === null ? null : "rootfs.tar", upperdir },
      timings,
      files,
    };
    Deno.writeTextFileSync(`${tmp}/manifest.json`, JSON.stringify(manifest, null, 2) + "\n", { mode: 0o600 });
    fsyncPath(`${tmp}/manifest.json`);
    t = performance.now();
    committed = store.commit(tmp);
    lap("commit", t);
  } catch (error) {
    try {
      store.abort(tmp);
    } catch { /* best effort */ }
    await runc(target, runcArgs.resume(target));
    if (error instanceof CheckpointError) throw error;
    throw new CheckpointError(`checkpoint of "${record.id}" failed: ${(error as Error).message}`, "capture");
  }
  registry.put({ ...record, checkpointedAt: new Date().toISOString(), checkpointDir: committed });
  if (options.leaveRunning) {
    await runc(target, runcArgs.resume(target));
  } else {
    // Committed: stop it. A frozen task only dies once thawed, so kill first, then resume,
    // and the workload makes no progress past its checkpoint.
    await runc(target, runcArgs.kill(target, "KILL"));
    await runc(target, runcArgs.resume(target));
  }
  lap("total", t0);
  const bytes = listFiles(committed, new Set()).reduce((n, f) => n + Deno.statSync(`${committed}/${f}`).size, 0);
  return { id: record.id, key: record.key, dir: committed, bytes, timings };
}

function lastLine(text: string): string {
  return text.trim().split("\n").pop() ?? "";
}
