/**
 * Path-segment rules shared by every module that builds a host path from a name that came
 * from outside (container id, namespace, checkpoint key).
 *
 * Guarantees: a string accepted by {@link isSafeSegment} is one non-empty path element that
 * can neither climb (`.`/`..`) nor nest (`/`), has no NUL, and is at most 255 bytes.
 */

/** Container ids as runc accepts them: `^[\w+-\.]+$`. */
const SEGMENT = /^[A-Za-z0-9_+\-.]+$/;

/**
 * Whether `s` is safe as a single path element.
 *
 * @example
 * ```ts
 * import { isSafeSegment } from "./paths.ts";
 * if (!isSafeSegment("moby") || isSafeSegment("..") || isSafeSegment("a/b")) throw new Error();
 * ```
 */
export function isSafeSegment(s: string): boolean {
  return s.length > 0 && s.length <= 255 && s !== "." && s !== ".." && SEGMENT.test(s);
}

/** The last element of a path (`/run/containerd/runc/default` → `default`), ignoring trailing slashes. */
export function lastElement(path: string): string {
  const trimmed = path.replace(/\/+$/, "");
  return trimmed.slice(trimmed.lastIndexOf("/") + 1);
}

/**
 * The path the kernel would name `path` by: every symbolic link resolved, `.`/`..`, repeated and
 * trailing slashes gone. Where the path does not exist (yet, or any more), its longest existing
 * parent is resolved and the rest kept as given. Compare this, never the string an engine
 * passed: Docker's default exec root `/var/run/docker` is `/run/docker` once `/var/run` → `/run`
 * is followed, and runc records the resolved form.
 */
export function resolvedPath(path: string): string {
  const rest: string[] = [];
  let head = path.replace(/\/+$/, "") || "/";
  for (;;) {
    try {
      const real = Deno.realPathSync(head);
      return rest.length === 0 ? real : `${real === "/" ? "" : real}/${rest.join("/")}`;
    } catch {
      const cut = head.lastIndexOf("/");
      if (cut < 0 || head === "/") return path;
      const name = head.slice(cut + 1);
      if (name !== "" && name !== ".") rest.unshift(name);
      if (name === "..") return path; // the parent of a path that does not exist: nothing to resolve safely
      head = head.slice(0, cut) || "/";
    }
  }
}

/**
 * Whether `a` and `b` name the same file or directory: the same device and inode when both
 * exist, else the same resolved path ({@link resolvedPath}). Never a string comparison of what
 * was given: two spellings of one directory (a link on the way, `//`, a trailing `/`) are one
 * path, and two paths that merely look alike are not.
 *
 * @example
 * ```ts
 * import { samePath } from "./paths.ts";
 * const dir = Deno.makeTempDirSync();
 * Deno.symlinkSync(dir, `${dir}.link`);
 * if (!samePath(`${dir}.link/`, dir) || samePath(dir, `${dir}/x`)) throw new Error();
 * Deno.removeSync(`${dir}.link`);
 * Deno.removeSync(dir);
 * ```
 */
export function samePath(a: string, b: string): boolean {
  const ia = statOrUndefined(a);
  const ib = statOrUndefined(b);
  if (ia !== undefined && ib !== undefined) return ia.dev === ib.dev && ia.ino === ib.ino;
  if ((ia === undefined) !== (ib === undefined)) return false;
  return resolvedPath(a) === resolvedPath(b);
}

/**
 * Whether `path` is `dir` or lies below it, both taken as resolved paths ({@link resolvedPath}):
 * `/var/run/docker/x` is below `/run/docker`.
 */
export function isWithin(path: string, dir: string): boolean {
  const p = resolvedPath(path);
  const d = resolvedPath(dir);
  return p === d || p.startsWith(d === "/" ? "/" : `${d}/`);
}

function statOrUndefined(path: string): Deno.FileInfo | undefined {
  try {
    return Deno.statSync(path);
  } catch {
    return undefined;
  }
}

/** `lstat(2)` of `path` (a link itself, not its target), or `undefined` if nothing is there; other errors are thrown. */
export function lstatIfExists(path: string): Deno.FileInfo | undefined {
  try {
    return Deno.lstatSync(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw error;
  }
}
