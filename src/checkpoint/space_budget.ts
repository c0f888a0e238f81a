/**
 * The space one checkpoint may take: at most the size limit (host config
 * `maxCheckpointBytes`), and never the checkpoint root's last `reserveBytes` (host config
 * `checkpointReserveBytes`: the space other jobs' checkpoints need).
 *
 * Enforced where it can be: before the pause, the memory CRIU will write is checked against
 * both (CRIU cannot be stopped safely once it dumps: its parasite code runs inside the
 * container's processes); the writable layer's archive is then capped while tar writes it at
 * what is left ({@link SpaceBudget.layerCap}, `rootfs/layer_archive.ts`); the whole checkpoint
 * is measured again before it is committed.
 */

import { statvfs } from "../util/statvfs.ts";

const gib = (n: number) => `${(n / 2 ** 30).toFixed(2)} GiB`;

/** See the module doc. */
export class SpaceBudget {
  #free: number | undefined;

  constructor(
    readonly root: string,
    readonly maxBytes: number,
    readonly reserveBytes: number,
    readonly freeSpace: (path: string) => number = (path) => statvfs(path).availableBytes,
  ) {}

  /**
   * Why a checkpoint expected to need `bytes` (the memory CRIU will write) cannot start, or
   * `undefined`. Reads the root's free space once (before the pause).
   *
   * @example
   * ```ts
   * import { SpaceBudget } from "./space_budget.ts";
   * const budget = new SpaceBudget("/ckpt", 100, 10, () => 50);
   * if (budget.cannotFit(30) !== undefined) throw new Error("fits: 50 free - 30 >= 10 kept");
   * if (budget.layerCap(30) !== 10) throw new Error("the layer gets what is left: 50 - 10 kept - 30");
   * if (!budget.cannotFit(45)?.includes("checkpointReserveBytes")) throw new Error();
   * if (!budget.cannotFit(101)?.includes("maxCheckpointBytes")) throw new Error();
   * ```
   */
  cannotFit(bytes: number): string | undefined {
    if (bytes > this.maxBytes) {
      return `it would need ${gib(bytes)}, more than the checkpoint limit of ${gib(this.maxBytes)} ` +
        `(host config "maxCheckpointBytes")`;
    }
    try {
      this.#free = this.freeSpace(this.root);
    } catch {
      return undefined; // cannot tell: the limit still holds
    }
    if (this.#free - bytes < this.reserveBytes) {
      return `it would need ${gib(bytes)} and "${this.root}" has ${gib(this.#free)} free, of which the last ` +
        `${gib(this.reserveBytes)} are kept for other jobs (host config "checkpointReserveBytes")`;
    }
    return undefined;
  }

  /** The bytes the writable layer's archive may take once `memory` is counted (after {@link cannotFit}). */
  layerCap(memory: number): number {
    const byLimit = this.maxBytes - memory;
    const bySpace = this.#free === undefined ? Infinity : this.#free - this.reserveBytes - memory;
    return Math.max(0, Math.min(byLimit, bySpace));
  }
}
