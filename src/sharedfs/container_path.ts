/**
 * Rules for `ARCH_WORKDIR_CONTAINER_PATH`, the container path where the job's work
 * directory is mounted (pure). The value comes from the tenant: it may only name an ordinary
 * directory of the container's own tree, never a kernel file system runc sets up itself.
 */

/** Container paths a work directory may not cover, nor lie beneath. */
const RESERVED = ["/proc", "/sys", "/dev"];

/**
 * Why `path` cannot be the work directory's container path (the rest of a sentence that
 * starts with the variable and its value), or `undefined`.
 *
 * @example
 * ```ts
 * import { containerPathProblem } from "./container_path.ts";
 * if (containerPathProblem("/work") !== undefined) throw new Error();
 * for (const bad of ["work", "/", "/proc/1", "/dev", "/a/../b", "/a//b", "/a/"]) {
 *   if (containerPathProblem(bad) === undefined) throw new Error(bad);
 * }
 * ```
 */
export function containerPathProblem(path: string): string | undefined {
  const fix = "use an absolute directory path of the container such as /work";
  if (!path.startsWith("/")) return `is not an absolute path: ${fix}`;
  if (path === "/") return `would hide the container's whole file system: ${fix}`;
  // deno-lint-ignore no-control-regex -- control characters are exactly what is refused
  if (path.length > 1024 || /[\x00-\x1f\x7f,]/.test(path)) {
    return `has control characters, commas or is too long: ${fix}`;
  }
  const parts = path.slice(1).split("/");
  if (parts.some((p) => p === "" || p === "." || p === "..")) {
    return `is not a normalized path (empty, "." or ".." elements, or a trailing "/"): ${fix}`;
  }
  const reserved = RESERVED.find((r) => path === r || path.startsWith(`${r}/`));
  if (reserved !== undefined) return `is under ${reserved}, which the runtime sets up itself: ${fix}`;
  return undefined;
}
