/**
 * `arch checkpoint <container>...` and `arch finalize`: checkpoint ARCH containers and stop
 * them. One summary line per container; exit status 1 if any failed. A failed checkpoint
 * leaves its container running.
 *
 * `finalize` takes every running ARCH container on the node, in parallel (bounded by
 * `--concurrency`), within `--deadline` seconds: no checkpoint starts after the deadline,
 * and a dump still running then is abandoned (its container resumed: a paused container is
 * never abandoned). It first marks the node draining, so restart policies do not restore
 * checkpoints here. SIGTERM/SIGINT release the containers this process paused.
 */

import { loadHostConfig } from "../config/host_schema.ts";
import { type ContainerRecord, Registry } from "../registry/registry.ts";
import { checkpointContainer, type CheckpointResult } from "../engine/checkpoint.ts";
import { runcState } from "../engine/runc.ts";
import { targetOf } from "../runc/command.ts";
import { clearDraining, setDraining } from "../engine/drain.ts";
import { UsageError } from "../util/errors.ts";
import { criuLogDir } from "../log/criu_logs.ts";
import { releaseOnSignals } from "../engine/pause_guard.ts";
import { loadSecret } from "../store/secret.ts";
import type { HostConfig } from "../config/host_schema.ts";
import { recordEvent } from "../observe/events.ts";
import { observeTargets, setObserveTargets } from "../observe/targets.ts";
import { Progress } from "./output.ts";

const mib = (n: number) => `${(n / 1048576).toFixed(1)} MiB`;

function summary(record: ContainerRecord, outcome: CheckpointResult | Error): string {
  const name = `${record.namespace}/${record.id}`;
  if (outcome instanceof Error) return `FAIL  ${name} key=${record.key}: ${outcome.message}`;
  return `ok    ${name} key=${record.key} ${mib(outcome.bytes)} in ${
    (outcome.timings.total! / 1000).toFixed(2)
  } s -> ${outcome.dir}`;
}

/** Finds records by full id, unique id prefix, or `namespace/id`. */
function select(registry: Registry, wanted: readonly string[]): ContainerRecord[] {
  const all = registry.list();
  return wanted.map((w) => {
    const exact = all.filter((r) => r.id === w || `${r.namespace}/${r.id}` === w);
    const matches = exact.length > 0 ? exact : all.filter((r) => r.id.startsWith(w));
    if (matches.length !== 1) {
      throw new UsageError(
        matches.length === 0
          ? `no ARCH container "${w}" on this node: see "arch ls"`
          : `"${w}" matches ${matches.length} containers: give more of the id`,
      );
    }
    return matches[0]!;
  });
}

function report(record: ContainerRecord, outcome: CheckpointResult | Error, ms: number): void {
  recordEvent(observeTargets(), {
    kind: "checkpoint",
    result: outcome instanceof Error ? "failed" : "ok",
    namespace: record.namespace,
    id: record.id,
    key: record.key,
    ...(typeof record.scope === "string" ? { scope: record.scope } : {}),
    durationMs: Math.round(ms),
    ...(outcome instanceof Error
      ? { error: outcome.message }
      : { bytes: outcome.bytes, timings: outcome.timings, checkpoint: outcome.dir }),
  });
}

async function runAll(
  records: ContainerRecord[],
  host: HostConfig,
  registry: Registry,
  concurrency: number,
  deadline: number | undefined,
  leaveRunning: boolean,
  progress?: Progress,
): Promise<{ ok: number; failed: number }> {
  releaseOnSignals();
  setObserveTargets(host); // where report() sends events and metrics, as the runc wrapper does
  const secret = loadSecret(host.secretFile, true);
  const options = {
    stateDir: host.stateDir,
    secret,
    leaveRunning,
    criuLogs: criuLogDir(host.logFile),
    lockWaitMs: host.lockWaitSeconds * 1000,
    ...(deadline !== undefined ? { deadline } : {}),
    ...(host.maxCheckpointBytes !== undefined ? { maxBytes: host.maxCheckpointBytes } : {}),
    maxPauseMs: host.maxPauseSeconds * 1000,
  };
  let failed = 0;
  let next = 0;
  const worker = async () => {
    while (next < records.length) {
      const record = records[next++]!;
      let outcome: CheckpointResult | Error;
      const started = performance.now();
      if (deadline !== undefined && Date.now() > deadline) outcome = new Error("not started: finalize deadline passed");
      else {
        try {
          outcome = await checkpointContainer(record, host.runcPath, registry, options);
        } catch (error) {
          outcome = error as Error;
        }
      }
      if (outcome instanceof Error) failed++;
      report(record, outcome, performance.now() - started);
      if (progress !== undefined) progress.line(summary(record, outcome), outcome instanceof Error);
      else console.log(summary(record, outcome));
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, records.length) }, worker));
  return { ok: records.length - failed, failed };
}

/**
 * `arch checkpoint`: checkpoints the named containers and stops them (unless `leaveRunning`), one line each;
 * returns 1 if any failed. Throws {@link UsageError} for a name that matches no or several containers.
 * Requires root, runc and CRIU.
 */
export async function checkpoint(ids: string[], opts: { leaveRunning?: boolean }): Promise<number> {
  const host = loadHostConfig();
  const registry = new Registry(host.stateDir);
  const records = select(registry, ids);
  const leave = opts.leaveRunning ?? false;
  const { failed } = await runAll(records, host, registry, host.finalizeConcurrency, undefined, leave);
  return failed === 0 ? 0 : 1;
}

/**
 * `arch finalize`: drains the node, then checkpoints and stops every running ARCH container within the deadline;
 * returns 1 if any failed. With `undo`, only lifts the drain. Requires root, runc and CRIU.
 */
export async function finalize(opts: { concurrency?: string; deadline?: string; undo?: boolean }): Promise<number> {
  const host = loadHostConfig();
  if (opts.undo) {
    clearDraining(host.stateDir);
    console.log("drain lifted: ARCH containers may start and restore on this node again");
    return 0;
  }
  const concurrency = opts.concurrency !== undefined ? Number(opts.concurrency) : host.finalizeConcurrency;
  const deadlineS = opts.deadline !== undefined ? Number(opts.deadline) : host.finalizeDeadlineSeconds;
  if (!Number.isInteger(concurrency) || concurrency < 1) {
    throw new UsageError(`--concurrency "${opts.concurrency}" is not a positive integer`);
  }
  if (!(deadlineS > 0)) throw new UsageError(`--deadline "${opts.deadline}" is not a positive number of seconds`);
  const started = Date.now();
  setObserveTargets(host);
  setDraining(host.stateDir);
  const registry = new Registry(host.stateDir);
  const running: ContainerRecord[] = [];
  const deadline = Date.now() + deadlineS * 1000;
  for (const record of registry.list()) {
    // A fixed bound: a deadline already short must not make running containers look absent.
    const status = await runcState(targetOf(host.runcPath, record), 5_000);
    if (status === "running") running.push(record);
  }
  const done = (containers: Record<string, number>) =>
    recordEvent(observeTargets(), {
      kind: "finalize",
      result: (containers.failed ?? 0) === 0 ? "ok" : "failed",
      durationMs: Date.now() - started,
      containers,
      at: Date.now(),
    });
  if (running.length === 0) {
    done({ ok: 0, failed: 0 });
    console.log("no running ARCH container on this node");
    return 0;
  }
  // On a terminal, one live line (done/total, failed, elapsed, time left); elsewhere one line per container.
  const progress = Deno.stdout.isTerminal() ? new Progress(running.length, started, deadline) : undefined;
  try {
    const { ok, failed } = await runAll(running, host, registry, concurrency, deadline, false, progress);
    done({ ok, failed });
    return failed === 0 ? 0 : 1;
  } finally {
    progress?.stop();
  }
}
