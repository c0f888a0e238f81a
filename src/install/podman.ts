/**
 * `arch install podman`: ARCH's two OCI hooks.d files (`arch-createRuntime.json`,
 * `arch-poststop.json`, text from `hooksDFile`) and a containers.conf drop-in that declares
 * the runtime `arch-runc` and adds it to `runtime_supports_json` (without it Podman passes
 * no `--log`, and ARCH's refusals never reach `podman run`'s output); `--default` makes it
 * Podman's runtime. The array in the drop-in uses `{append=true}` (containers.conf(5),
 * "Appending to string arrays"; tested with Podman 5.4), so the runtimes the node already
 * lists stay. Pure planning.
 */

import { HOOK_STAGES, hooksDFile } from "../sharedfs/config_json.ts";
import { UsageError } from "../util/errors.ts";
import { type FileChange, readText } from "./changes.ts";

/** Default paths of the podman target. */
export const PODMAN_DEFAULTS = {
  hooksDir: "/etc/containers/oci/hooks.d",
  config: "/etc/containers/containers.conf.d/arch.conf",
} as const;

/**
 * The containers.conf drop-in declaring the runtime `arch-runc` at `archRunc`. Pure.
 *
 * @example
 * ```ts
 * import { podmanConf } from "./podman.ts";
 * const text = podmanConf("/usr/local/bin/arch-runc", true);
 * if (!text.includes('runtime = "arch-runc"\n') || !text.includes('arch-runc = ["/usr/local/bin/arch-runc"]')) throw new Error();
 * ```
 */
export function podmanConf(archRunc: string, makeDefault: boolean): string {
  return [
    "# Written by `arch install podman` (ARCH); removed by `arch uninstall podman`.",
    "[engine]",
    ...(makeDefault ? ['runtime = "arch-runc"'] : []),
    "# Podman passes --log/--log-format=json only to runtimes listed here: ARCH's errors reach `podman run`.",
    'runtime_supports_json = ["arch-runc", {append=true}]',
    "",
    "[engine.runtimes]",
    `arch-runc = [${JSON.stringify(archRunc)}]`,
    "",
  ].join("\n");
}

/** What {@link planPodman} needs. */
export interface PodmanOptions {
  readonly hooksDir: string;
  readonly config: string;
  readonly arch: string;
  readonly archRunc: string;
  readonly makeDefault: boolean;
}

/** Plans `arch install podman`: two hooks.d files and the containers.conf drop-in. */
export function planPodman(opts: PodmanOptions): FileChange[] {
  for (const [what, p] of [["arch", opts.arch], ["arch-runc", opts.archRunc]] as const) {
    if (!p.startsWith("/")) throw new UsageError(`${what} path "${p}" is not absolute: pass an absolute --${what}`);
  }
  const changes: FileChange[] = HOOK_STAGES.map((stage) => {
    const path = `${opts.hooksDir}/arch-${stage}.json`;
    return { target: "podman", path, before: readText(path), after: hooksDFile(opts.arch, stage), mode: 0o644 };
  });
  changes.push({
    target: "podman",
    path: opts.config,
    before: readText(opts.config),
    after: podmanConf(opts.archRunc, opts.makeDefault),
    mode: 0o644,
  });
  return changes;
}
