/**
 * `arch checkpoint <container>...` and `arch finalize`: checkpoint ARCH containers and stop
 * them. One summary line per container; exit status 1 if any failed. A failed checkpoint
 * leaves its container running.
 *
 * `finalize` takes every running ARCH container on the node, in parallel (`--concurrency`,
 * measured during the run by default), within `--deadline` seconds, in the order that saves
 * the most running time (`checkpoint/finalize_plan.ts`): no checkpoint starts after the
 * deadline or when its estimate does not fit in the time left, and a dump still running at
 * the deadline is abandoned (its container resumed: a paused container is never abandoned).
 * It ends with one summary line: saved, failed, not started, unprotected (when any: containers
 * that opted in and run but that ARCH cannot checkpoint, from runc's census of the node,
 * `registry/census.ts`; each named on a FAIL line), and the concurrency it ran at. It first marks the node draining, so restart policies do not restore
 * checkpoints here. SIGTERM/SIGINT release the containers this process paused.
 * Every line printed passes through `output.ts` (`terminalLine`): keys, paths and error
 * messages a tenant could shape never reach the terminal with a control character.
 */

import { loadHostConfig } from "../config/host_schema.ts";
import { type ContainerRecord, initPid, Registry } from "../registry/registry.ts";
import { memoryToDump } from "../checkpoint/memory.ts";
import { checkpointContainer, CheckpointError, type CheckpointResult } from "../checkpoint/checkpoint.ts";
import type { NotifyResult } from "../task/notify.ts";
import { askToSaveAndExit, canFallBack } from "../task/fallback.ts";
import { runcStatuses, targetOf } from "../runc/client.ts";
import { clearDraining, setDraining } from "../checkpoint/drain.ts";
import { ArchError, errorMessage, UsageError } from "../util/errors.ts";
import { criuLogDir } from "../criu/logs.ts";
import { releaseOnSignals } from "../checkpoint/pause_guard.ts";
import { loadSecret } from "../store/secret.ts";
import { preferNodeCrypto } from "../util/digest.ts";
import type { HostConfig } from "../config/host_schema.ts";
import { recordEvent } from "../observe/events.ts";
import { observeTargets, setObserveTargets } from "../observe/targets.ts";
import { Progress, terminalLine, terminalSafe } from "./output.ts";
import { type Census, nodeCensus, recordCensus, runcLister } from "../registry/census.ts";
import {
  CheckpointEstimator,
  ConcurrencyController,
  type FinalizeItem,
  orderForDeadline,
} from "../checkpoint/finalize_plan.ts";

const mib = (n: number) => `${(n / 1048576).toFixed(1)} MiB`;

/**
 * A container's result line, through {@link terminalLine} (its key, checkpoint path and
 * error message may carry a tenant's text).
 *
 * @example
 * ```ts
 * import { summary } from "./checkpoint.ts";
 * const record = { namespace: "moby", id: "c1", root: "/r", key: "k", bundle: "/b", createdAt: "" };
 * const line = summary(record, new Error('cannot read "/x\x1b]0;pwned\x07"\r\n'));
 * if (line !== 'FAIL  moby/c1 key=k: cannot read "/x]0;pwned" ') throw new Error(line);
 * ```
 */
export function summary(record: ContainerRecord, outcome: CheckpointResult | Error): string {
  const name = `${record.namespace}/${record.id}`;
  if (outcome instanceof Error) return terminalLine(`FAIL  ${name} key=${record.key}: ${outcome.message}`);
  const s = (ms: number | undefined) => `${((ms ?? 0) / 1000).toFixed(2)} s`;
  if (outcome.dryRun) {
    return terminalLine(
      `ok    ${name} key=${record.key} can be checkpointed: ${mib(outcome.bytes)}, dump ${s(outcome.timings.dump)}, ` +
        `paused ${s(outcome.timings.paused)}; dry run: nothing kept, the job runs on`,
    );
  }
  if (outcome.task !== undefined) {
    return terminalLine(
      `ok    ${name} key=${record.key} ${mib(outcome.bytes)} task checkpoint (the job saved itself and exited in ${
        s(outcome.timings.notify)
      }) -> ${outcome.dir}; the dump had failed: ${outcome.task.after}`,
    );
  }
  const told = outcome.notify === undefined
    ? ""
    : outcome.notify.answer === "ready"
    ? ` (job ready after ${s(outcome.notify.waitedMs)})`
    : outcome.notify.answer === "timeout"
    ? ` (no answer from the job in ${s(outcome.notify.waitedMs)})`
    : ` (job not notified: ${outcome.notify.problem ?? "unknown"})`;
  return terminalLine(
    `ok    ${name} key=${record.key} ${mib(outcome.bytes)} in ${
      (outcome.timings.total! / 1000).toFixed(2)
    } s -> ${outcome.dir}${told}`,
  );
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

function report(record: ContainerRecord, outcome: CheckpointResult | Error, ms: number, requested = false): void {
  const notified = notifyOf(outcome);
  recordEvent(observeTargets(), {
    kind: "checkpoint",
    result: outcome instanceof Error ? "failed" : "ok",
    namespace: record.namespace,
    id: record.id,
    key: record.key,
    ...(typeof record.scope === "string" ? { scope: record.scope } : {}),
    durationMs: Math.round(ms),
    ...(outcome instanceof Error
      ? { error: outcome.message, ...(outcome instanceof ArchError ? { code: outcome.code } : {}) }
      : {
        bytes: outcome.bytes,
        timings: outcome.timings,
        checkpoint: outcome.dir,
        ...(outcome.task !== undefined ? { task: true } : {}),
      }),
    ...(notified !== undefined ? { notify: notified } : {}),
    ...(requested ? { requested: true } : {}),
  });
}

/** How the job's notice went (`task/notify.ts`), for the event. */
function notifyOf(outcome: CheckpointResult | Error): NotifyResult | undefined {
  return outcome instanceof CheckpointError || !(outcome instanceof Error) ? outcome.notify : undefined;
}

/** The failed steps after which a job that can save itself is asked to: CRIU refused it, or it is too big. */
const FALLBACK_STEPS = new Set(["dump", "size"]);

/** The task path after a failed dump: the committed task checkpoint, or the dump's error with why it failed too. */
async function saveItself(
  record: ContainerRecord,
  registry: Registry,
  failed: CheckpointError,
  host: HostConfig,
  deadline: number | undefined,
): Promise<CheckpointResult | Error> {
  const started = performance.now();
  const saved = await askToSaveAndExit(record, registry, targetOf(host.runcPath, record), deadline);
  if (typeof saved === "string") {
    return Object.assign(new CheckpointError(`${failed.message}; the task path failed too: ${saved}`, failed.step), {
      notify: failed.notify,
    });
  }
  let bytes = 0;
  try {
    for (const entry of Deno.readDirSync(saved.dir)) bytes += Deno.statSync(`${saved.dir}/${entry.name}`).size;
  } catch { /* committed; its size is only for the line */ }
  return {
    id: record.id,
    key: record.key,
    dir: saved.dir,
    bytes,
    timings: { total: Math.round(performance.now() - started), notify: saved.waitedMs },
    task: { after: failed.message },
  };
}

/** One container's plan entry: its record, and what the ordering needs (see `checkpoint/finalize_plan.ts`). */
function planItem(record: ContainerRecord, now: number): FinalizeItem<ContainerRecord> {
  const pid = initPid(record);
  const since = [record.createdAt, record.checkpointedAt]
    .map((t) => (typeof t === "string" ? Date.parse(t) : NaN))
    .filter((t) => Number.isFinite(t));
  return {
    item: record,
    memoryBytes: pid !== undefined ? memoryToDump(pid) : undefined,
    atRiskSeconds: since.length === 0 ? 0 : Math.max(0, (now - Math.max(...since)) / 1000),
  };
}

/** What a run did: how many were saved or failed, and the concurrency it ran at over time. */
interface RunSummary {
  readonly ok: number;
  readonly failed: number;
  readonly notStarted: number;
  readonly concurrency: ConcurrencyController["history"];
}

async function runAll(
  records: ContainerRecord[],
  host: HostConfig,
  registry: Registry,
  concurrency: number | "auto",
  deadline: number | undefined,
  leaveRunning: boolean,
  progress?: Progress,
  dryRun = false,
  requested = false,
): Promise<RunSummary> {
  releaseOnSignals();
  await preferNodeCrypto(); // the CLI loads the Node layer anyway (`util/digest.ts`)
  setObserveTargets(host); // where report() sends events and metrics, as the runc wrapper does
  const secret = loadSecret(host.secretFile, true);
  const options = {
    stateDir: host.stateDir,
    secret,
    leaveRunning,
    criuLogs: criuLogDir(host.logFile),
    lockWaitMs: host.lockWaitSeconds * 1000,
    ...(deadline !== undefined ? { deadline } : {}),
    maxBytes: host.maxCheckpointBytes,
    reserveBytes: host.checkpointReserveBytes,
    maxPauseMs: host.maxPauseSeconds * 1000,
    ghostLimitBytes: Math.min(host.ghostFileLimitBytes, host.maxCheckpointBytes),
    dryRun,
    skipNotice: requested, // the job asked at its safe point
  };
  const estimator = new CheckpointEstimator();
  const controller = new ConcurrencyController(
    navigator.hardwareConcurrency || 1,
    concurrency === "auto" ? undefined : concurrency,
  );
  const now = Date.now();
  const items = records.map((r) => planItem(r, now));
  // Under a deadline the order saves the most running time; otherwise the order asked for.
  const queue = deadline === undefined ? items : orderForDeadline(items, estimator);
  let failed = 0, notStarted = 0;
  const finish = (record: ContainerRecord, outcome: CheckpointResult | Error, ms: number) => {
    if (outcome instanceof Error) failed++;
    if (!dryRun) report(record, outcome, ms, requested); // a dry run is no checkpoint: no event, no metrics
    if (progress !== undefined) progress.line(summary(record, outcome), outcome instanceof Error);
    else console.log(summary(record, outcome));
  };
  const one = async ({ item: record, memoryBytes }: FinalizeItem<ContainerRecord>, estimateMs: number) => {
    const started = performance.now();
    let outcome: CheckpointResult | Error;
    try {
      outcome = await checkpointContainer(record, host.runcPath, registry, options);
      const t = outcome.timings;
      // The job's notice is its own time, not what a checkpoint costs the node.
      estimator.observe(memoryBytes, performance.now() - started - (t.notify ?? 0), t.dump, t.rootfs);
      controller.completed(estimateMs);
    } catch (error) {
      outcome = error as Error;
      // CRIU could not save it: a job that can save itself is asked to (`task/fallback.ts`).
      if (!leaveRunning && !dryRun && error instanceof CheckpointError && FALLBACK_STEPS.has(error.step)) {
        if (canFallBack(record)) outcome = await saveItself(record, registry, error, host, deadline);
      }
    }
    try {
      finish(record, outcome, performance.now() - started);
    } catch { /* stdout gone (a closed pipe): the checkpoints go on, the events file has them */ }
  };
  const running = new Set<Promise<void>>();
  let next = 0;
  while (next < queue.length || running.size > 0) {
    while (next < queue.length && running.size < controller.current) {
      const it = queue[next++]!;
      const estimateMs = estimator.estimateMs(it.memoryBytes);
      if (deadline !== undefined) {
        const left = deadline - Date.now();
        const why = left <= 0
          ? "not started: finalize deadline passed"
          : estimateMs > left
          ? `not started: its checkpoint would take about ${(estimateMs / 1000).toFixed(1)} s (${
            it.memoryBytes === undefined ? "memory unknown, 64 MiB assumed" : `${mib(it.memoryBytes)} of memory`
          }) and only ${(left / 1000).toFixed(1)} s were left before the finalize deadline`
          : undefined;
        if (why !== undefined) {
          notStarted++;
          finish(it.item, new Error(why), 0);
          continue;
        }
      }
      const task = one(it, estimateMs);
      running.add(task);
      task.finally(() => running.delete(task)).catch(() => {}); // `one` handles its own failures
    }
    if (running.size > 0) await Promise.race(running);
  }
  return { ok: records.length - failed, failed, notStarted, concurrency: controller.history };
}

/**
 * `arch checkpoint`: checkpoints the named containers and stops them (unless `leaveRunning`), one line each;
 * returns 1 if any failed. Throws {@link UsageError} for a name that matches no or several containers.
 * Requires root, runc and CRIU.
 */
export async function checkpoint(
  ids: string[],
  opts: { leaveRunning?: boolean; dryRun?: boolean; requested?: boolean },
): Promise<number> {
  const host = loadHostConfig();
  const registry = new Registry(host.stateDir);
  const records = select(registry, ids);
  const leave = opts.leaveRunning ?? false;
  const dryRun = opts.dryRun ?? false;
  const { failed } = await runAll(
    records,
    host,
    registry,
    host.finalizeConcurrency,
    undefined,
    leave,
    undefined,
    dryRun,
    opts.requested ?? false,
  );
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
  const concurrency = opts.concurrency === undefined
    ? host.finalizeConcurrency
    : opts.concurrency === "auto"
    ? "auto"
    : Number(opts.concurrency);
  const deadlineS = opts.deadline !== undefined ? Number(opts.deadline) : host.finalizeDeadlineSeconds;
  if (concurrency !== "auto" && (!Number.isInteger(concurrency) || concurrency < 1)) {
    throw new UsageError(`--concurrency "${opts.concurrency}" is neither "auto" nor a positive integer`);
  }
  if (!(deadlineS > 0)) throw new UsageError(`--deadline "${opts.deadline}" is not a positive number of seconds`);
  const started = Date.now();
  setObserveTargets(host);
  setDraining(host.stateDir);
  const registry = new Registry(host.stateDir);
  const deadline = Date.now() + deadlineS * 1000;
  const records = registry.list();
  // One `runc list` per runc root. A fixed bound: a deadline already short must not make
  // running containers look absent.
  // runc, not the registry, says what runs: an opted-in container ARCH cannot protect is named.
  // The census runs beside the state query and never stops the finalize.
  const [states, census] = await Promise.all([
    runcStatuses(records.map((r) => targetOf(host.runcPath, r)), 5_000),
    nodeCensus(host, runcLister(host.runcPath, 5_000)).catch((error): Census => ({
      containers: [],
      problems: [`cannot count the node's containers: ${errorMessage(error)}`],
    })),
  ]);
  const running = records.filter((_, i) => states[i] === "running");
  recordCensus(host, census);
  const unprotected = census.containers.filter((c) =>
    c.protection === "unprotected" && (c.status === "running" || c.status === "paused")
  );
  for (const p of census.problems) console.error(`arch: ${terminalLine(p)}`);
  const done = (containers: Record<string, number>, concurrency?: RunSummary["concurrency"]) =>
    recordEvent(observeTargets(), {
      kind: "finalize",
      result: (containers.failed ?? 0) + (containers.not_started ?? 0) + (containers.unprotected ?? 0) === 0
        ? "ok"
        : "failed",
      durationMs: Date.now() - started,
      containers,
      ...(concurrency !== undefined ? { concurrency } : {}),
      at: Date.now(),
    });
  const unprotectedLines = unprotected.map((c) =>
    `FAIL  ${c.namespace}/${c.id} key=${terminalSafe(c.requestedKey ?? "-")}: not saved: ARCH does not protect it: ` +
    terminalSafe(c.reason ?? "unknown reason")
  );
  if (running.length === 0) {
    done({ ok: 0, failed: 0, ...(unprotected.length > 0 ? { unprotected: unprotected.length } : {}) });
    if (unprotected.length === 0) {
      console.log("no running ARCH container on this node");
      return 0;
    }
    for (const line of unprotectedLines) console.log(line);
    console.log(`finalize: 0 saved, 0 failed, 0 not started, ${unprotected.length} unprotected (not saved)`);
    return 1;
  }
  // On a terminal, one live line (done/total, failed, elapsed, time left); elsewhere one line per container.
  const progress = Deno.stdout.isTerminal() ? new Progress(running.length, started, deadline) : undefined;
  let run: RunSummary;
  try {
    run = await runAll(running, host, registry, concurrency, deadline, false, progress);
  } finally {
    progress?.stop();
  }
  for (const line of unprotectedLines) console.log(line);
  done({
    ok: run.ok,
    failed: run.failed - run.notStarted,
    not_started: run.notStarted,
    ...(unprotected.length > 0 ? { unprotected: unprotected.length } : {}),
  }, run.concurrency);
  const notSaved = unprotected.length > 0 ? `, ${unprotected.length} unprotected (not saved)` : "";
  console.log(
    `finalize: ${run.ok} saved, ${run.failed - run.notStarted} failed, ${run.notStarted} not started${notSaved} in ` +
      `${((Date.now() - started) / 1000).toFixed(1)} s; concurrency ${
        run.concurrency.map((c) => c.concurrency).join("→")
      }${concurrency === "auto" ? " (auto)" : ""}`,
  );
  return run.failed === 0 && unprotected.length === 0 ? 0 : 1;
}
