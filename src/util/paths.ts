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
