/**
 * A restore hands runc and CRIU the work directory as a mount ARCH made itself: the key's
 * work directory, opened from descriptors (no link followed, each parent root-only:
 * `util/dirfd.ts`), bind-mounted onto a root-only staging path below ARCH's state directory
 * (`<stateDir>/workdirs/<namespace>/<id>`), which the restoring config.json names as the
 * mount's source. CRIU restores the container's mounts after runc's createRuntime hook has
 * run (at CRIU's setup-namespaces notification), so the hook cannot compare what is mounted;
 * the staging mount makes the comparison unnecessary: whatever is renamed on the shared file
 * system afterwards, the source is the directory that was checked. The staging mount is
 * detached once `runc restore` returned (the container keeps its own copy).
 * Requires root (mount(2)) and `--allow-ffi`.
 */

import { beneath } from "../store/safe_dir.ts";
import { Dir } from "../util/dirfd.ts";
import { cString, lastError, libc } from "../util/libc.ts";
import { isSafeSegment } from "../util/paths.ts";
import type { SharedFsConfig } from "./workdir.ts";

const MS_BIND = 0x1000n;
const MNT_DETACH = 2;

/** Where the work directory of container `id` is staged during its restore. */
export function stagingPath(stateDir: string, namespace: string, id: string): string {
  if (!isSafeSegment(namespace) || !isSafeSegment(id)) throw new Error(`unsafe namespace or id "${namespace}/${id}"`);
  return `${stateDir}/workdirs/${namespace}/${id}`;
}

/** Bind-mounts the key's work directory (opened from descriptors) onto its staging path; returns the path. */
export function stageWorkdir(
  stateDir: string,
  namespace: string,
  id: string,
  shared: Pick<SharedFsConfig, "root">,
  scope: string,
  key: string,
): string {
  const target = stagingPath(stateDir, namespace, id);
  unstageWorkdir(target); // a leftover of a restore that was killed
  beneath(stateDir, ["workdirs", namespace, id], true);
  using root = Dir.open(shared.root, { rootOnly: true });
  using parent = root.descend(["work", scope], { rootOnly: true, sameDevice: true });
  if (parent === undefined) throw new Error(`the work directory of key "${key}" is gone`);
  using dir = parent.child(key, { sameDevice: true });
  const r = libc().mount(cString(dir.at()), cString(target), cString(""), MS_BIND, cString(""));
  if (r !== 0) throw new Error(`cannot stage the work directory of key "${key}": ${lastError()}`);
  return target;
}

/** Detaches the staging mount at `target`, if any, and removes the empty mount point (best effort). */
export function unstageWorkdir(target: string): void {
  libc().umount2(cString(target), MNT_DETACH);
  try {
    Deno.removeSync(target); // rmdir: only ever an empty directory, never what was mounted there
  } catch { /* still a mount point, or gone */ }
}
