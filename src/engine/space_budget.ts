/**
 * The space one checkpoint may take, enforced while it is written: at most the size limit
 * (host config `maxCheckpointBytes`), and never the checkpoint root's last `reserveBytes`
 * (host config `checkpointReserveBytes`: the space other jobs' checkpoints need). The writers
 * ask {@link SpaceBudget.exceeded} as they go (tar's stream, CRIU's images polled during the
 * dump) and stop at the first answer; the checkpoint is then removed and the container keeps
 * running.
 */

import { statvfs } from "../util/statvfs.ts";

const gib = (n: number) => `${(n / 2 ** 30).toFixed(2)} GiB`;

/** See the module doc. */
export class SpaceBudget {
  #checkedAt = -Infinity;
  #free = Infinity;

  constructor(
    readonly root: string,
    readonly maxBytes: number,
    readonly reserveBytes: number,
    /** How many bytes may be written between two looks at the free space. */
    readonly statEvery = 32 * 2 ** 20,
    readonly freeSpace: (path: string) => number = (path) => statvfs(path).availableBytes,
  ) {}

  /**
   * Why writing must stop now that `written` bytes of this checkpoint exist, or `undefined`.
   *
   * @example
   * ```ts
   * import { SpaceBudget } from "./space_budget.ts";
   * const budget = new SpaceBudget("/ckpt", 100, 10, 1, () => 50);
   * if (budget.exceeded(60) !== undefined) throw new Error("under the limit, free space above the reserve");
   * if (!budget.exceeded(101)?.includes("maxCheckpointBytes")) throw new Error();
   * ```
   */
  exceeded(written: number): string | undefined {
    if (written > this.maxBytes) {
      return `the checkpoint reached the limit of ${gib(this.maxBytes)} (host config "maxCheckpointBytes")`;
    }
    if (written - this.#checkedAt >= this.statEvery || written < this.#checkedAt) {
      this.#checkedAt = written;
      try {
        this.#free = this.freeSpace(this.root);
      } catch { /* cannot tell: the limit still holds */ }
    } else if (this.#free !== Infinity) {
      // between two looks, count what this writer added against what was free
      return this.#free - (written - this.#checkedAt) < this.reserveBytes ? this.#reserveWords() : undefined;
    }
    return this.#free < this.reserveBytes ? this.#reserveWords() : undefined;
  }

  /** Why a checkpoint expected to need `bytes` cannot start, or `undefined` (checked before the pause). */
  cannotFit(bytes: number): string | undefined {
    if (bytes > this.maxBytes) {
      return `it would need ${gib(bytes)}, more than the checkpoint limit of ${gib(this.maxBytes)} ` +
        `(host config "maxCheckpointBytes")`;
    }
    let free: number;
    try {
      free = this.freeSpace(this.root);
    } catch {
      return undefined;
    }
    if (free - bytes < this.reserveBytes) {
      return `it would need ${gib(bytes)} and "${this.root}" has ${gib(free)} free, of which the last ` +
        `${gib(this.reserveBytes)} are kept for other jobs (host config "checkpointReserveBytes")`;
    }
    return undefined;
  }

  #reserveWords(): string {
    return `the checkpoint root "${this.root}" is down to its reserve of ${gib(this.reserveBytes)} ` +
      `(host config "checkpointReserveBytes")`;
  }
}
