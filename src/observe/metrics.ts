/**
 * ARCH's node metrics in the Prometheus text format, for node_exporter's textfile collector.
 *
 * Each checkpoint and restore runs in its own short-lived process, so the counters live in a
 * small root-only JSON file (`<stateDir>/metrics.json`, 0600) that every process updates under
 * an exclusive `flock` on `<stateDir>/metrics.lock`, then re-renders the `.prom` file (0644: it
 * holds counts and durations, never names or paths; not fsync'ed, it is derived and rewritten
 * at every event). Both are written by `util/atomic.ts`: a temporary file with a random name
 * created O_EXCL (a symlink planted in the textfile directory, which node_exporter's user may
 * write, is never followed), then renamed. The lock is tried without blocking for ~100 ms; an
 * update that did not get it is skipped and counted (`arch_metrics_skipped_total`). The state
 * dir is tmpfs: counters start again from zero after a reboot, which Prometheus counters allow.
 *
 * Guarantees: {@link applyEvent} and {@link renderProm} are pure; {@link recordMetrics} never
 * throws (metrics must not break a container), never waits long for the lock and loads no
 * npm module (the runc wrapper's restore path calls it).
 */

import { writeFileAtomic } from "../util/atomic.ts";

/** One observation that changes the metrics; the event file's record (`events.ts`) carries the same fields. */
export interface MetricsEvent {
  readonly kind: "checkpoint" | "restore" | "finalize" | "census";
  /** `ok`, `failed`, or for a restore also `refused`/`foreign`. */
  readonly result: string;
  /** Time the operation took. */
  readonly durationMs?: number;
  /** Size of the checkpoint (checkpoint, restore). */
  readonly bytes?: number;
  /** Finalize: containers by result; census: opted-in containers by protection. */
  readonly containers?: Readonly<Record<string, number>>;
  /** When it ended (epoch ms); finalize only. */
  readonly at?: number;
}

/** A cumulative histogram: `counts[i]` observations at or below `bounds[i]`. */
export interface Histogram {
  readonly bounds: readonly number[];
  readonly counts: readonly number[];
  readonly sum: number;
  readonly count: number;
}

/** What `metrics.json` holds. */
export interface MetricsState {
  readonly version: 1;
  readonly checkpoints: Readonly<Record<string, number>>;
  readonly restores: Readonly<Record<string, number>>;
  readonly checkpointSeconds: Histogram;
  readonly checkpointBytes: Histogram;
  readonly restoreSeconds: Histogram;
  readonly lastFinalize?: {
    readonly timestamp: number;
    readonly durationSeconds: number;
    readonly containers: Readonly<Record<string, number>>;
  };
  /** The last census of the node's opted-in containers (`registry/census.ts`). */
  readonly census?: {
    readonly timestamp: number;
    readonly protected: number;
    readonly unprotected: number;
    /** runc roots that exist but could not be listed: the counts above may miss their containers. */
    readonly unlistedRoots?: number;
  };
}

/** Bucket bounds of the duration histograms, seconds (the notice window is 30 s to 2 min). */
export const SECONDS_BOUNDS = [0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];
/** Bucket bounds of the checkpoint size histogram, bytes (16 MiB to 16 GiB). */
export const BYTES_BOUNDS = [2 ** 24, 2 ** 26, 2 ** 28, 2 ** 30, 2 ** 32, 2 ** 34];

function histogram(bounds: readonly number[]): Histogram {
  return { bounds, counts: bounds.map(() => 0), sum: 0, count: 0 };
}

/** A state with every counter at zero. */
export function emptyState(): MetricsState {
  return {
    version: 1,
    checkpoints: {},
    restores: {},
    checkpointSeconds: histogram(SECONDS_BOUNDS),
    checkpointBytes: histogram(BYTES_BOUNDS),
    restoreSeconds: histogram(SECONDS_BOUNDS),
  };
}

function observe(h: Histogram, bounds: readonly number[], value: number): Histogram {
  // Bounds changed with a new ARCH version: start that histogram again rather than mix buckets.
  const base = h.bounds.length === bounds.length && h.bounds.every((b, i) => b === bounds[i]) ? h : histogram(bounds);
  return {
    bounds,
    counts: base.counts.map((c, i) => (value <= bounds[i]! ? c + 1 : c)),
    sum: base.sum + value,
    count: base.count + 1,
  };
}

const RESULT = /^[a-z_-]{1,32}$/;
const label = (result: string) => (RESULT.test(result) ? result : "other");

/**
 * The state after `event`.
 *
 * @example
 * ```ts
 * import { applyEvent, emptyState } from "./metrics.ts";
 * const s = applyEvent(emptyState(), { kind: "checkpoint", result: "ok", durationMs: 1200, bytes: 5e7 });
 * if (s.checkpoints.ok !== 1 || s.checkpointSeconds.count !== 1) throw new Error();
 * ```
 */
export function applyEvent(state: MetricsState, event: MetricsEvent): MetricsState {
  const result = label(event.result);
  const seconds = event.durationMs !== undefined ? event.durationMs / 1000 : undefined;
  switch (event.kind) {
    case "checkpoint":
      return {
        ...state,
        checkpoints: { ...state.checkpoints, [result]: (state.checkpoints[result] ?? 0) + 1 },
        ...(result === "ok" && seconds !== undefined
          ? { checkpointSeconds: observe(state.checkpointSeconds, SECONDS_BOUNDS, seconds) }
          : {}),
        ...(result === "ok" && event.bytes !== undefined
          ? { checkpointBytes: observe(state.checkpointBytes, BYTES_BOUNDS, event.bytes) }
          : {}),
      };
    case "restore":
      return {
        ...state,
        restores: { ...state.restores, [result]: (state.restores[result] ?? 0) + 1 },
        ...(result === "ok" && seconds !== undefined
          ? { restoreSeconds: observe(state.restoreSeconds, SECONDS_BOUNDS, seconds) }
          : {}),
      };
    case "census":
      return {
        ...state,
        census: {
          timestamp: (event.at ?? Date.now()) / 1000,
          protected: event.containers?.protected ?? 0,
          unprotected: event.containers?.unprotected ?? 0,
          unlistedRoots: event.containers?.unlisted_roots ?? 0,
        },
      };
    case "finalize":
      return {
        ...state,
        lastFinalize: {
          timestamp: (event.at ?? Date.now()) / 1000,
          durationSeconds: seconds ?? 0,
          containers: Object.fromEntries(Object.entries(event.containers ?? {}).map(([k, v]) => [label(k), v])),
        },
      };
  }
}

/** A state read from disk, or a fresh one when it is missing or not what this ARCH writes. */
export function parseState(text: string | undefined): MetricsState {
  if (text === undefined) return emptyState();
  try {
    const raw = JSON.parse(text) as Partial<MetricsState>;
    const fresh = emptyState();
    const hist = (h: unknown, bounds: readonly number[]): Histogram => {
      const x = h as Partial<Histogram> | undefined;
      return x !== undefined && Array.isArray(x.bounds) && Array.isArray(x.counts) &&
          typeof x.sum === "number" && typeof x.count === "number" && x.counts.length === x.bounds.length
        ? x as Histogram
        : histogram(bounds);
    };
    const counts = (c: unknown) =>
      c !== null && typeof c === "object"
        ? Object.fromEntries(Object.entries(c).filter(([k, v]) => RESULT.test(k) && Number.isFinite(v)))
        : {};
    if (raw.version !== 1) return fresh;
    return {
      version: 1,
      checkpoints: counts(raw.checkpoints),
      restores: counts(raw.restores),
      checkpointSeconds: hist(raw.checkpointSeconds, SECONDS_BOUNDS),
      checkpointBytes: hist(raw.checkpointBytes, BYTES_BOUNDS),
      restoreSeconds: hist(raw.restoreSeconds, SECONDS_BOUNDS),
      ...(raw.census !== undefined && typeof raw.census.timestamp === "number" &&
          Number.isFinite(raw.census.protected) && Number.isFinite(raw.census.unprotected)
        ? { census: raw.census }
        : {}),
      ...(raw.lastFinalize !== undefined && typeof raw.lastFinalize.timestamp === "number"
        ? { lastFinalize: { ...raw.lastFinalize, containers: counts(raw.lastFinalize.containers) } }
        : {}),
    };
  } catch {
    return emptyState();
  }
}

const num = (n: number) => (Number.isInteger(n) ? String(n) : String(Number(n.toFixed(6))));

function renderHistogram(name: string, help: string, h: Histogram): string[] {
  return [
    `# HELP ${name} ${help}`,
    `# TYPE ${name} histogram`,
    ...h.bounds.map((b, i) => `${name}_bucket{le="${num(b)}"} ${h.counts[i]}`),
    `${name}_bucket{le="+Inf"} ${h.count}`,
    `${name}_sum ${num(h.sum)}`,
    `${name}_count ${h.count}`,
  ];
}

function renderCounter(name: string, help: string, values: Readonly<Record<string, number>>, zeros: string[]) {
  const all = { ...Object.fromEntries(zeros.map((z) => [z, 0])), ...values };
  return [
    `# HELP ${name} ${help}`,
    `# TYPE ${name} counter`,
    ...Object.keys(all).sort().map((r) => `${name}{result="${r}"} ${all[r]}`),
  ];
}

/**
 * The Prometheus text exposition of `state` (`skipped`: updates skipped for the lock).
 *
 * @example
 * ```ts
 * import { applyEvent, emptyState, renderProm } from "./metrics.ts";
 * const text = renderProm(applyEvent(emptyState(), { kind: "restore", result: "ok", durationMs: 400 }));
 * if (!text.includes('arch_restores_total{result="ok"} 1\n')) throw new Error();
 * ```
 */
export function renderProm(state: MetricsState, skipped = 0): string {
  const lines = [
    ...renderCounter("arch_checkpoints_total", "Checkpoints ARCH made on this node, by result.", state.checkpoints, [
      "ok",
      "failed",
    ]),
    ...renderCounter("arch_restores_total", "Restores ARCH attempted on this node, by result.", state.restores, [
      "ok",
      "failed",
    ]),
    ...renderHistogram(
      "arch_checkpoint_duration_seconds",
      "Duration of successful checkpoints (claim to release).",
      state.checkpointSeconds,
    ),
    ...renderHistogram("arch_checkpoint_bytes", "Size of successful checkpoints.", state.checkpointBytes),
    ...renderHistogram(
      "arch_restore_duration_seconds",
      "Duration of successful restores (verify, layer, runc restore).",
      state.restoreSeconds,
    ),
    "# HELP arch_metrics_skipped_total Metric updates skipped because another process held the metrics lock too long.",
    "# TYPE arch_metrics_skipped_total counter",
    `arch_metrics_skipped_total ${skipped}`,
  ];
  const c = state.census;
  if (c !== undefined) {
    lines.push(
      "# HELP arch_unprotected_containers Containers that opted in (ARCH_ENABLE=1) and run, but that ARCH cannot " +
        "checkpoint (see arch ls), at the last census.",
      "# TYPE arch_unprotected_containers gauge",
      `arch_unprotected_containers ${c.unprotected}`,
      "# HELP arch_protected_containers Containers ARCH would checkpoint at a notice, at the last census.",
      "# TYPE arch_protected_containers gauge",
      `arch_protected_containers ${c.protected}`,
      "# HELP arch_census_unlisted_roots runc roots ARCH could not list at the last census (their containers are not counted).",
      "# TYPE arch_census_unlisted_roots gauge",
      `arch_census_unlisted_roots ${c.unlistedRoots ?? 0}`,
      "# HELP arch_census_timestamp_seconds When ARCH last counted the node's containers (arch ls, doctor, finalize, watch).",
      "# TYPE arch_census_timestamp_seconds gauge",
      `arch_census_timestamp_seconds ${num(c.timestamp)}`,
    );
  }
  const f = state.lastFinalize;
  if (f !== undefined) {
    lines.push(
      "# HELP arch_last_finalize_timestamp_seconds When the last arch finalize ended.",
      "# TYPE arch_last_finalize_timestamp_seconds gauge",
      `arch_last_finalize_timestamp_seconds ${num(f.timestamp)}`,
      "# HELP arch_last_finalize_duration_seconds How long the last arch finalize took.",
      "# TYPE arch_last_finalize_duration_seconds gauge",
      `arch_last_finalize_duration_seconds ${num(f.durationSeconds)}`,
      "# HELP arch_last_finalize_containers Containers of the last arch finalize, by result.",
      "# TYPE arch_last_finalize_containers gauge",
      ...Object.keys({ ok: 0, failed: 0, ...f.containers }).sort().map((r) =>
        `arch_last_finalize_containers{result="${r}"} ${f.containers[r] ?? 0}`
      ),
    );
  }
  return lines.join("\n") + "\n";
}

function readText(path: string): string | undefined {
  try {
    return Deno.readTextFileSync(path);
  } catch {
    return undefined;
  }
}

/** Updates skipped because the lock stayed taken: the size of this file, one byte per skip (O_APPEND, no lock). */
const SKIPPED = "metrics.skipped";

function skippedCount(stateDir: string): number {
  try {
    return Deno.statSync(`${stateDir}/${SKIPPED}`).size;
  } catch {
    return 0;
  }
}

const sleeper = new Int32Array(new SharedArrayBuffer(4));

/** Takes the exclusive lock of `lock`, trying without blocking for up to `waitMs`; whether it got it. */
function tryLock(lock: Deno.FsFile, waitMs: number): boolean {
  const until = performance.now() + waitMs;
  for (let pause = 1;; pause = Math.min(pause * 2, 10)) {
    if (lock.tryLockSync(true)) return true;
    const left = until - performance.now();
    if (left <= 0) return false;
    Atomics.wait(sleeper, 0, 0, Math.min(pause, left)); // a plain sleep: this path is synchronous
  }
}

/**
 * Adds `event` to the node's counters in `stateDir` (under the lock) and re-renders
 * `metricsFile` (`""`: only the counters are kept). The lock is tried without blocking for
 * `waitMs` (default 100 ms: a holder stuck on a stalled disk must not hang a container's
 * creation); past that the update is skipped and counted in `arch_metrics_skipped_total`.
 * Never throws. Requires root (state dir).
 */
export function recordMetrics(stateDir: string, metricsFile: string, event: MetricsEvent, waitMs = 100): void {
  try {
    Deno.mkdirSync(stateDir, { recursive: true, mode: 0o700 });
    const lock = Deno.openSync(`${stateDir}/metrics.lock`, { read: true, write: true, create: true, mode: 0o600 });
    try {
      if (!tryLock(lock, waitMs)) {
        const skipped = Deno.openSync(`${stateDir}/${SKIPPED}`, { append: true, create: true, mode: 0o600 });
        try {
          skipped.writeSync(new Uint8Array([0x2e]));
        } finally {
          skipped.close();
        }
        return;
      }
      const state = applyEvent(parseState(readText(`${stateDir}/metrics.json`)), event);
      // The file fsync'ed, not the directory (a restore pays for every fsync; a lost rename loses one count).
      writeFileAtomic(`${stateDir}/metrics.json`, JSON.stringify(state) + "\n", { mode: 0o600, fsyncDir: false });
      if (metricsFile !== "") renderTo(metricsFile, state, skippedCount(stateDir));
    } finally {
      lock.close(); // releases the flock
    }
  } catch {
    // best effort: see the module doc
  }
}

function renderTo(metricsFile: string, state: MetricsState, skipped: number): void {
  const dir = metricsFile.slice(0, metricsFile.lastIndexOf("/")) || "/";
  Deno.mkdirSync(dir, { recursive: true, mode: 0o755 });
  // Not fsync'ed (it costs the restoring container ~10 ms on disk): the file is rendered again
  // from the counters at every event, and the rename still never shows a partial file.
  writeFileAtomic(metricsFile, renderProm(state, skipped), { mode: 0o644, fsync: false });
}
