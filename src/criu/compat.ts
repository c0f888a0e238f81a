/**
 * Which CRIU works on which kernel (pure). Facts, each verified on these machines:
 * - CRIU < 4.0 fails `criu check` on recent kernels ("vdso: Unexpected rt vDSO area bounds").
 * - Linux 6.16 restricted SO_PASSCRED/SO_PASSSEC to unix and netlink sockets; CRIU < 4.2
 *   then fails to dump ANY TCP or UDP socket ("Can't get 1:16 opt", CRIU issues #2705/#2718).
 */

/** A `[major, minor]` version. */
export type Version = readonly [number, number];

/** Parses the `major.minor` of a version string ("6.18.44-fc", "Version: 4.2.1"). */
export function parseMajorMinor(text: string): Version | undefined {
  const m = /(\d+)\.(\d+)/.exec(text);
  return m === null ? undefined : [Number(m[1]), Number(m[2])];
}

const atLeast = (v: Version, min: Version) => v[0] > min[0] || (v[0] === min[0] && v[1] >= min[1]);

/**
 * The oldest CRIU that checkpoints containers with network sockets on `kernel` (a kernel
 * release such as `6.18.44`).
 *
 * @example
 * ```ts
 * import { minimumCriu } from "./compat.ts";
 * if (minimumCriu("6.18.4").join(".") !== "4.2" || minimumCriu("6.1.0").join(".") !== "4.0") throw new Error();
 * ```
 */
export function minimumCriu(kernel: string): Version {
  const k = parseMajorMinor(kernel);
  return k !== undefined && atLeast(k, [6, 16]) ? [4, 2] : [4, 0];
}

/**
 * One sentence saying why `criu` (its version text) does not fit `kernel`, or `undefined`.
 *
 * @example
 * ```ts
 * import { criuProblem } from "./compat.ts";
 * if (criuProblem("4.2.1", "6.18.0") !== undefined) throw new Error();
 * if (criuProblem("4.1.1", "6.18.0") === undefined) throw new Error();
 * ```
 */
export function criuProblem(criu: string, kernel: string): string | undefined {
  const have = parseMajorMinor(criu);
  const need = minimumCriu(kernel);
  if (have !== undefined && atLeast(have, need)) return undefined;
  const why = need[1] === 2
    ? `Linux ${kernel} needs CRIU 4.2 or later to checkpoint any container with a TCP or UDP socket`
    : `Linux ${kernel} needs CRIU 4.0 or later`;
  return `${why}, found CRIU ${have === undefined ? `"${criu}"` : have.join(".")}: run install.ts (it installs ` +
    `CRIU from Debian ${need[1] === 2 ? "sid" : "trixie"}, pinned)`;
}
