/**
 * How `arch finalize` spends a short notice: which containers go first, which are not worth
 * starting, and how many checkpoints run at once. Pure logic, fed with measurements.
 *
 * Ordering policy: a container that is not saved loses the work it did since its last
 * checkpoint (or since it started), its *time at risk*. A checkpoint costs wall time that
 * grows with the memory CRIU has to write. Within a deadline, the most running time is saved
 * by taking containers by time at risk per estimated second of checkpoint, highest first
 * (the greedy rule for this knapsack); ties go to the cheaper container. A container whose
 * estimate does not fit in the time left is not started (a dump cut by the deadline saves
 * nothing and takes the machine from the others); smaller ones after it still are.
 *
 * Estimate: `fixed + bytes / rate`, where `fixed` (pause, process starts, CRIU's own work,
 * commit, stop) and `rate` (bytes written per second of dump) start from priors measured on
 * a 2-core node and are replaced by the medians of what this run measures once 3 checkpoints
 * tell them, within bounds around the priors: one odd container (a huge writable layer, a
 * stalled disk) cannot make every other container look too long to start.
 *
 * Concurrency ("auto"): CRIU is partly CPU-bound (parsing, process starts) and partly
 * I/O-bound (writing pages), so the best number at once depends on the node and the mix. The
 * controller starts at the number of CPUs and climbs: after each window of completions it
 * compares the rate of completed estimated work with the previous window's, keeps going in
 * the direction that improved it by more than 5 %, turns back when it fell by more than 5 %,
 * and stays between 1 and 4 × CPUs (at most 16).
 */

/** One container finalize may checkpoint. */
export interface FinalizeItem<T> {
  readonly item: T;
  /** Bytes CRIU will write (resident anonymous + shared memory), if known. */
  readonly memoryBytes: number | undefined;
  /** Seconds of work lost if it is not saved. */
  readonly atRiskSeconds: number;
}

/** Priors: measured on the 2-core reference node (8 MiB container: 0.7 s alone; CRIU ≈ 230 MB/s). */
export const PRIOR_FIXED_MS = 700;
export const PRIOR_RATE_BYTES_PER_MS = 200_000;
/** Memory assumed when a container's cannot be read. */
export const UNKNOWN_MEMORY_BYTES = 64 * 2 ** 20;

/** Learns a checkpoint's wall time from the ones that completed (see the module doc). */
export class CheckpointEstimator {
  #fixed: number[] = [];
  #rates: number[] = [];

  /** Estimated wall time (ms) of a checkpoint writing `bytes`. */
  estimateMs(bytes: number | undefined): number {
    return this.fixedMs() + (bytes ?? UNKNOWN_MEMORY_BYTES) / this.rate();
  }

  /**
   * Records a completed checkpoint of a container with `memoryBytes` of memory: `totalMs` wall,
   * of which `dumpMs` in CRIU and `layerMs` capturing its writable layer (its own cost, not
   * charged to the others' estimates).
   */
  observe(memoryBytes: number | undefined, totalMs: number, dumpMs: number | undefined, layerMs = 0): void {
    const bytes = memoryBytes ?? UNKNOWN_MEMORY_BYTES;
    // Large dumps tell the rate; every checkpoint tells the fixed part once the rate is known.
    if (bytes >= 32 * 2 ** 20 && dumpMs !== undefined && dumpMs > 0) this.#rates.push(bytes / dumpMs);
    this.#fixed.push(Math.max(0, totalMs - layerMs - bytes / this.rate()));
  }

  /** The learned fixed part once 3 checkpoints tell it, within [prior / 4, prior × 8]; the prior before. */
  fixedMs(): number {
    if (this.#fixed.length < 3) return PRIOR_FIXED_MS;
    return Math.min(PRIOR_FIXED_MS * 8, Math.max(PRIOR_FIXED_MS / 4, median(this.#fixed)));
  }

  /** The learned rate once 3 large dumps tell it, within [prior / 8, prior × 8]; the prior before. */
  rate(): number {
    if (this.#rates.length < 3) return PRIOR_RATE_BYTES_PER_MS;
    return Math.min(PRIOR_RATE_BYTES_PER_MS * 8, Math.max(PRIOR_RATE_BYTES_PER_MS / 8, median(this.#rates)));
  }
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** Orders `items` by time at risk per estimated checkpoint second, highest first (ties: cheaper first). */
export function orderForDeadline<T>(
  items: readonly FinalizeItem<T>[],
  estimator: CheckpointEstimator,
): FinalizeItem<T>[] {
  const scored = items.map((it) => ({ it, cost: estimator.estimateMs(it.memoryBytes) }));
  scored.sort((a, b) => b.it.atRiskSeconds / b.cost - a.it.atRiskSeconds / a.cost || a.cost - b.cost);
  return scored.map((s) => s.it);
}

/** Adjusts how many checkpoints run at once from the measured rate of completed work (see the module doc). */
export class ConcurrencyController {
  readonly min = 1;
  readonly max: number;
  #current: number;
  #lastStep = 0;
  #started: number;
  #windowStart: number;
  #windowWork = 0;
  #windowCount = 0;
  #previousRate: number | undefined;
  /** Every value taken, with when (ms since start), for the report. */
  readonly history: { atMs: number; concurrency: number; rate?: number }[] = [];

  constructor(readonly cpus: number, readonly fixed?: number, readonly now: () => number = () => performance.now()) {
    this.max = fixed ?? Math.min(16, Math.max(2, 4 * cpus));
    this.#current = fixed ?? Math.max(1, Math.min(this.max, cpus));
    this.#started = this.#windowStart = now();
    this.history.push({ atMs: 0, concurrency: this.#current });
  }

  get current(): number {
    return this.#current;
  }

  /** Records one completed checkpoint worth `work` estimated ms; may change {@link current}. */
  completed(work: number): void {
    if (this.fixed !== undefined) return;
    this.#windowWork += work;
    this.#windowCount++;
    if (this.#windowCount < Math.max(4, 2 * this.#current)) return;
    const now = this.now();
    const rate = this.#windowWork / Math.max(1, now - this.#windowStart);
    const previous = this.#previousRate;
    let step: number;
    if (previous === undefined) step = 1; // first window: try one more
    else if (rate > previous * 1.05) step = this.#lastStep === 0 ? 1 : this.#lastStep; // it helped: go on
    else if (rate < previous * 0.95) step = this.#lastStep === 0 ? -1 : -this.#lastStep; // it hurt: turn back
    else step = 0; // no clear difference: stay
    this.#lastStep = step;
    this.#current = Math.min(this.max, Math.max(this.min, this.#current + step));
    this.#previousRate = rate;
    this.#windowStart = now;
    this.#windowWork = 0;
    this.#windowCount = 0;
    this.history.push({ atMs: Math.round(now - this.#started), concurrency: this.#current, rate });
  }
}
