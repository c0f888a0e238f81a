/**
 * Finds a container's writable layer: the overlay mounted at its rootfs path, read from
 * /proc/self/mountinfo (Docker: upperdir /var/lib/docker/overlay2/<id>/diff; containerd:
 * .../snapshots/<n>/fs), with its layer paths made absolute.
 *
 * The kernel shows overlay's layer options as they were given. Engines give relative ones
 * when the absolute option string would not fit in a page (mount(2)'s limit) and mount from
 * a chosen working directory: Docker's overlay2 names every layer relative to its home
 * (`lowerdir=l/ABC:l/DEF,upperdir=<id>/diff,workdir=<id>/work`, mount point
 * `<home>/<id>/merged`); containerd names the lower layers relative to its snapshots
 * directory (`lowerdir=12/fs:11/fs`, absolute `upperdir=<snapshots>/13/fs`). Those two
 * layouts are recognised; other relative paths are reported as unresolvable. Pure parsing
 * plus one file read.
 */

/** Decodes the octal escapes mountinfo uses for spaces, tabs, newlines and backslashes. */
function unescape(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** One overlay mount as mountinfo shows it. */
export interface OverlayMount {
  readonly mountPoint: string;
  /** The superblock's device number (`0:52`): the same in every mount of this overlay. */
  readonly dev: string;
  /** The path inside the file system that is mounted (`/` unless a bind mount of a subtree). */
  readonly root: string;
  /** The mount source (`overlay` for Docker and containerd). */
  readonly source: string;
  /** Per-mount options (`rw,nosuid,relatime`). */
  readonly mountOptions: readonly string[];
  /** Superblock options as shown, still escaped (`rw,lowerdir=...,upperdir=...,workdir=...`). */
  readonly superOptions: readonly string[];
  /** The layer options, unescaped, as given at mount time (maybe relative). */
  readonly lowerdirs: readonly string[];
  readonly upperdir: string | undefined;
  readonly workdir: string | undefined;
}

const LOWER_KEYS = ["lowerdir=", "lowerdir+=", "datadir+="];

function option(options: readonly string[], key: string): string | undefined {
  const found = options.findLast((o) => o.startsWith(key));
  return found === undefined ? undefined : unescape(found.slice(key.length));
}

/**
 * The overlay mounted at `mountPoint` in `mountinfo` text, `undefined` if the last mount at
 * that point is not an overlay (or there is none).
 *
 * @example
 * ```ts
 * import { overlayFromMountinfo } from "./upperdir.ts";
 * const line = "99 1 0:50 / /m rw,relatime - overlay overlay rw,lowerdir=/a:/b,upperdir=/u,workdir=/w";
 * const overlay = overlayFromMountinfo(line, "/m");
 * if (overlay?.lowerdirs.join(" ") !== "/a /b" || overlay.upperdir !== "/u") throw new Error();
 * ```
 */
export function overlayFromMountinfo(mountinfo: string, mountPoint: string): OverlayMount | undefined {
  let found: OverlayMount | undefined;
  for (const line of mountinfo.split("\n")) {
    const [left, right] = line.split(" - ");
    if (left === undefined || right === undefined) continue;
    const fields = left.split(" ");
    if (unescape(fields[4] ?? "") !== mountPoint) continue;
    const [fstype, source, superOptions] = right.split(" ");
    if (fstype !== "overlay") {
      found = undefined;
      continue;
    }
    const options = (superOptions ?? "").split(",");
    const lowerdirs = options.filter((o) => LOWER_KEYS.some((k) => o.startsWith(k)))
      .flatMap((o) => unescape(o.slice(o.indexOf("=") + 1)).split(":"))
      .filter((p) => p !== "");
    found = {
      mountPoint,
      dev: fields[2] ?? "",
      root: unescape(fields[3] ?? ""),
      source: unescape(source ?? ""),
      mountOptions: (fields[5] ?? "").split(","),
      superOptions: options,
      lowerdirs,
      upperdir: option(options, "upperdir="),
      workdir: option(options, "workdir="),
    };
  }
  return found;
}

const dirname = (path: string) => path.replace(/\/+[^/]*\/*$/, "") || "/";
const basename = (path: string) => path.replace(/\/+$/, "").replace(/^.*\//, "");

/** An overlay's layer paths, absolute, and the directory the engine mounted it from. */
export interface OverlayPaths {
  /** Working directory relative layer paths were given against; `undefined` if all are absolute. */
  readonly base: string | undefined;
  readonly lowerdirs: readonly string[];
  readonly upperdir: string | undefined;
  readonly workdir: string | undefined;
}

/**
 * Resolves the layer paths of `overlay` (see the module comment for the layouts recognised).
 * Throws an Error with one sentence if a relative path's base cannot be known.
 *
 * @example
 * ```ts
 * import { overlayFromMountinfo, resolveOverlayPaths } from "./upperdir.ts";
 * const line = "99 1 0:50 / /d/abc/merged rw - overlay overlay rw,lowerdir=l/X:l/Y,upperdir=abc/diff,workdir=abc/work";
 * const paths = resolveOverlayPaths(overlayFromMountinfo(line, "/d/abc/merged")!);
 * if (paths.base !== "/d" || paths.upperdir !== "/d/abc/diff" || paths.lowerdirs[1] !== "/d/l/Y") throw new Error();
 * ```
 */
export function resolveOverlayPaths(overlay: OverlayMount): OverlayPaths {
  const layers = [...overlay.lowerdirs, overlay.upperdir, overlay.workdir].filter((p) => p !== undefined);
  if (layers.every((p) => p.startsWith("/"))) {
    return { base: undefined, lowerdirs: overlay.lowerdirs, upperdir: overlay.upperdir, workdir: overlay.workdir };
  }
  let base: string | undefined;
  const upper = overlay.upperdir;
  if (upper !== undefined && !upper.startsWith("/")) {
    // Docker's overlay2: <home>/<id>/merged mounted from <home> with upperdir=<id>/diff.
    const id = basename(dirname(overlay.mountPoint));
    if (upper === `${id}/diff` && overlay.workdir === `${id}/work` && basename(overlay.mountPoint) === "merged") {
      base = dirname(dirname(overlay.mountPoint));
    }
  } else if (upper !== undefined && overlay.workdir?.startsWith("/") && /\/[0-9]+\/fs$/.test(upper)) {
    // containerd's overlayfs snapshotter: lower layers relative to <snapshots>, upper <snapshots>/<n>/fs.
    base = dirname(dirname(upper));
  }
  if (base === undefined) {
    throw new Error(
      `the overlay at "${overlay.mountPoint}" names relative layer paths of an unknown layout ` +
        `("${layers.find((p) => !p.startsWith("/"))}")`,
    );
  }
  const abs = (p: string) => p.startsWith("/") ? p : `${base === "/" ? "" : base}/${p}`;
  return {
    base,
    lowerdirs: overlay.lowerdirs.map(abs),
    upperdir: upper === undefined ? undefined : abs(upper),
    workdir: overlay.workdir === undefined ? undefined : abs(overlay.workdir),
  };
}

/**
 * The upperdir of the overlay mounted at `mountPoint` in `mountinfo` text, absolute;
 * `undefined` if that mount is not an overlay (or absent) or has no upperdir. The last mount
 * at that point wins.
 *
 * @example
 * ```ts
 * import { upperdirFromMountinfo } from "./upperdir.ts";
 * const line = "99 1 0:50 / /m rw - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w";
 * if (upperdirFromMountinfo(line, "/m") !== "/u") throw new Error();
 * ```
 */
export function upperdirFromMountinfo(mountinfo: string, mountPoint: string): string | undefined {
  const overlay = overlayFromMountinfo(mountinfo, mountPoint);
  return overlay === undefined ? undefined : resolveOverlayPaths(overlay).upperdir;
}

/** The upperdir of the overlay at `rootfs` on this host (absolute). */
export function findUpperdir(rootfs: string): string | undefined {
  return upperdirFromMountinfo(Deno.readTextFileSync("/proc/self/mountinfo"), Deno.realPathSync(rootfs));
}
