/**
 * How shared-FS mode shows in a container's OCI spec (pure): the work directory as a bind
 * mount declared in config.json, and ARCH's hooks.
 *
 * Why config.json: runc sets up config.json's mounts before it runs any hook, and it tells
 * CRIU about each bind mount of config.json (external on dump, mapped to the new source on
 * restore). A mount made by a hook would be invisible to runc, and CRIU cannot dump a FUSE
 * or NFS mount itself. So the wrapper (every engine runs `runc create` through it) declares
 * the mount; the hooks validate the work directory (createRuntime) and finish it (poststop).
 */

import type { BundleSpec } from "../config/container.ts";

/** Set by the wrapper on ARCH containers: the engine namespace of their registry record (hooks lack runc's --root). */
export const NAMESPACE_ANNOTATION = "org.arch.namespace";

/** The hook stages ARCH uses. */
export const HOOK_STAGES = ["createRuntime", "poststop"] as const;
/** One of {@link HOOK_STAGES}. */
export type HookStage = typeof HOOK_STAGES[number];

interface Mount {
  readonly destination: string;
  readonly type?: string;
  readonly source?: string;
  readonly options?: readonly string[];
}

interface Hook {
  readonly path: string;
  readonly args?: readonly string[];
  readonly env?: readonly string[];
  readonly timeout?: number;
}

/** One ID mapping of a user namespace (`linux.uidMappings`). */
interface IdMapping {
  readonly containerID: number;
  readonly hostID: number;
  readonly size: number;
}

function mapId(id: number, mappings: readonly IdMapping[] | undefined): number | undefined {
  if (mappings === undefined || mappings.length === 0) return id;
  const m = mappings.find((m) => id >= m.containerID && id < m.containerID + m.size);
  return m === undefined ? undefined : m.hostID + (id - m.containerID);
}

/**
 * The host uid and gid of the container's process (through its user namespace's mappings, if
 * any): the owner of its work directory. A sentence if the user has no host identity.
 *
 * @example
 * ```ts
 * import { hostOwner } from "./config_json.ts";
 * const spec = { process: { user: { uid: 1000, gid: 100 } }, linux: { uidMappings: [{ containerID: 0, hostID: 100000, size: 65536 }] } };
 * const owner = hostOwner(spec);
 * if (typeof owner === "string" || owner.uid !== 101000 || owner.gid !== 100) throw new Error();
 * ```
 */
export function hostOwner(spec: BundleSpec): { uid: number; gid: number } | string {
  const user = spec.process?.user;
  const linux = spec.linux as { uidMappings?: IdMapping[]; gidMappings?: IdMapping[] } | undefined;
  const uid = mapId(user?.uid ?? 0, linux?.uidMappings);
  const gid = mapId(user?.gid ?? 0, linux?.gidMappings);
  if (uid === undefined || gid === undefined) {
    return `the container's user (${user?.uid ?? 0}:${user?.gid ?? 0}) has no identity on the host ` +
      `(user namespace mappings), so ARCH cannot give it its work directory`;
  }
  return { uid, gid };
}

/** Options of the work directory's bind mount: no device files or setuid programs from a shared file system. */
export const WORKDIR_MOUNT_OPTIONS = ["rbind", "rprivate", "nosuid", "nodev"] as const;

/**
 * `spec` with the work directory `source` bind-mounted at `destination` and made the
 * process's working directory; `undefined` if it already is (idempotent). A sentence if the
 * container already mounts something else there.
 *
 * @example
 * ```ts
 * import { withWorkdir } from "./config_json.ts";
 * const spec = withWorkdir({ process: { cwd: "/" }, mounts: [] }, "/efs/work/moby/job1", "/work");
 * if (typeof spec !== "object" || spec.process?.cwd !== "/work") throw new Error();
 * if (withWorkdir(spec, "/efs/work/moby/job1", "/work") !== undefined) throw new Error();
 * ```
 */
export function withWorkdir(spec: BundleSpec, source: string, destination: string): BundleSpec | string | undefined {
  const mounts = (spec.mounts as Mount[] | undefined) ?? [];
  const clash = mounts.filter((m) => m.destination.replace(/\/+$/, "") === destination);
  const ours = clash.length === 1 && clash[0]!.source === source && clash[0]!.type === "bind";
  if (!ours && clash.length > 0) {
    return `the container already mounts "${clash[0]!.source ?? clash[0]!.type}" at ARCH_WORKDIR_CONTAINER_PATH=` +
      `"${destination}": choose another ARCH_WORKDIR_CONTAINER_PATH, or remove that mount`;
  }
  if (ours && spec.process?.cwd === destination) return undefined;
  const mount: Mount = { destination, type: "bind", source, options: [...WORKDIR_MOUNT_OPTIONS] };
  return {
    ...spec,
    mounts: ours ? mounts : [...mounts, mount],
    process: { ...spec.process, cwd: destination },
  };
}

/**
 * `spec` with the source of the bind mount at `destination` (ARCH's work directory mount) set
 * to `source`; `undefined` if there is no such mount or it already has that source.
 *
 * @example
 * ```ts
 * import { withWorkdirSource } from "./config_json.ts";
 * const spec = { mounts: [{ destination: "/work", type: "bind", source: "/efs/work/moby/k" }] };
 * const staged = withWorkdirSource(spec, "/work", "/run/arch/workdirs/moby/c1");
 * if ((staged?.mounts as { source: string }[])[0]!.source !== "/run/arch/workdirs/moby/c1") throw new Error();
 * ```
 */
export function withWorkdirSource(spec: BundleSpec, destination: string, source: string): BundleSpec | undefined {
  const mounts = (spec.mounts as Mount[] | undefined) ?? [];
  const at = mounts.findIndex((m) => m.destination.replace(/\/+$/, "") === destination && m.type === "bind");
  if (at < 0 || mounts[at]!.source === source) return undefined;
  return { ...spec, mounts: mounts.map((m, i) => (i === at ? { ...m, source } : m)) };
}

/**
 * `spec` with ARCH's hooks (`<arch> hook <stage>`) for each stage that does not have one
 * already (an OCI hooks.d file may have put them there: Podman, CRI-O), and the namespace
 * annotation; `undefined` if nothing changes.
 *
 * @example
 * ```ts
 * import { withArchHooks } from "./config_json.ts";
 * const spec = withArchHooks({}, { path: "/usr/local/bin/arch", env: ["ARCH_CONFIG=/etc/arch/config.json"] }, "moby");
 * const hooks = spec?.hooks as { poststop: { args: string[] }[] } | undefined;
 * if (hooks?.poststop[0]?.args.join(" ") !== "arch hook poststop") throw new Error();
 * if (withArchHooks(spec!, { path: "/usr/local/bin/arch", env: [] }, "moby") !== undefined) throw new Error();
 * ```
 */
export function withArchHooks(
  spec: BundleSpec,
  arch: { readonly path: string; readonly env: readonly string[] },
  namespace: string,
): BundleSpec | undefined {
  const hooks = { ...(spec.hooks as Record<string, Hook[]> | undefined) };
  let changed = spec.annotations?.[NAMESPACE_ANNOTATION] !== namespace;
  for (const stage of HOOK_STAGES) {
    const list = hooks[stage] ?? [];
    if (list.some((h) => isArchHook(h, stage))) continue;
    hooks[stage] = [...list, { path: arch.path, args: ["arch", "hook", stage], env: [...arch.env], timeout: 60 }];
    changed = true;
  }
  if (!changed) return undefined;
  return { ...spec, hooks, annotations: { ...spec.annotations, [NAMESPACE_ANNOTATION]: namespace } };
}

function isArchHook(hook: Hook, stage: HookStage): boolean {
  return hook.args?.[1] === "hook" && hook.args[2] === stage && /(^|\/)arch$/.test(hook.path);
}

/**
 * An OCI hooks.d file (schema 1.0.0) that runs `<arch> hook <stage>` for every container
 * (hooks.d cannot match environment variables: the hook itself decides, and does nothing for
 * containers without ARCH_ENABLE=1).
 */
export function hooksDFile(archPath: string, stage: HookStage, env: readonly string[] = []): string {
  return JSON.stringify(
    {
      version: "1.0.0",
      hook: { path: archPath, args: ["arch", "hook", stage], env: [...env], timeout: 60 },
      when: { always: true },
      stages: [stage],
    },
    null,
    2,
  ) + "\n";
}
