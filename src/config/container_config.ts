/**
 * Validates what an ARCH-enabled container asks for (its `ARCH_*` variables) against the
 * host configuration, and derives what it cannot choose: the key scope. Every refusal is one
 * sentence naming the variable, its value and the fix; it reaches `docker run`/`ctr run`
 * output through runc's log file.
 *
 * Key scope: the part of a checkpoint's identity the container's owner cannot forge. It is
 * the engine namespace (from runc's `--root`, chosen by the engine: `moby`, `default`,
 * `k8s.io`), under Kubernetes (engine namespace `k8s.io`) also the pod's namespace (set by
 * the CRI plugin, which overrides any annotation of the pod), and the admin's `scope` from
 * the host configuration. Checkpoints live under `<root>/<scope>/<key>`, and a manifest
 * names its scope: a container can reach only the keys of its own scope, whatever
 * `ARCH_CHECKPOINT_ID` it sets.
 *
 * Checkpoint root: one of the admin's roots exactly, compared by path first (so an answer
 * never tells whether an arbitrary host path exists), never a directory below one (ARCH's
 * keys, claims and tenants' work directories lie there); resolved once to its real path; a
 * real directory owned by root and not writable by group or others (`store/safe_dir.ts`);
 * not nested with another root or ARCH directory of the node; and not reachable through the
 * container's own bind mounts. Nothing is created or changed here.
 */

import { quoteValue } from "../log/log.ts";
import { type BundleSpec, envOf, resolveKey } from "./container.ts";
import type { HostConfig } from "./host_schema.ts";
import { isSafeSegment } from "../util/paths.ts";
import { rootProblem } from "../store/safe_dir.ts";
import { containerPathProblem } from "../sharedfs/container_path.ts";
import { notMounted, type SharedFsConfig, workdirPath } from "../sharedfs/workdir.ts";

/** A validated ARCH container's checkpoint root, key scope and key, and its shared-FS mode if it asked for one. */
export interface ContainerConfig {
  readonly checkpointRoot: string;
  readonly scope: string;
  readonly key: string;
  readonly keySource: string;
  /** Whether a checkpoint already restored once may be restored again for this container. */
  readonly restoreConsumed: boolean;
  /** Shared-FS mode: the job's work directory (`sharedfs/`). */
  readonly sharedFs?: SharedFsConfig;
}

/** The result of {@link containerConfig}: the configuration, or the one sentence that refuses the container. */
export type ContainerConfigResult = { ok: true; config: ContainerConfig } | { ok: false; error: string };

const within = (path: string, root: string) => path === root || path.startsWith(root.endsWith("/") ? root : `${root}/`);

const POD_NAMESPACE = "io.kubernetes.cri.sandbox-namespace";
/** containerd's namespace for Kubernetes (CRI): only there are the CRI annotations the engine's own. */
const CRI_NAMESPACE = "k8s.io";
/** A Kubernetes namespace name (DNS label). */
const POD_NS = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

/**
 * The key scope of a container (see the module doc); an error sentence if a part of it is
 * not a safe name.
 *
 * @example
 * ```ts
 * import { keyScope } from "./container_config.ts";
 * const scope = keyScope("k8s.io", { "io.kubernetes.cri.sandbox-namespace": "team-a" }, "pool1");
 * if (scope !== "pool1+k8s.io+team-a") throw new Error(scope);
 * if (keyScope("moby", { "io.kubernetes.cri.sandbox-namespace": "team-a" }, undefined) !== "moby") throw new Error();
 * ```
 */
export function keyScope(
  engineNamespace: string,
  annotations: { readonly [k: string]: string },
  adminScope: string | undefined,
): string {
  const parts = adminScope !== undefined ? [adminScope, engineNamespace] : [engineNamespace];
  const pod = annotations[POD_NAMESPACE];
  if (engineNamespace === CRI_NAMESPACE && pod !== undefined && POD_NS.test(pod)) {
    parts.push(pod);
  }
  return parts.join("+");
}

/** Why `root` cannot hold checkpoints, or `undefined`. `variable` names where it came from. */
export function checkRoot(root: string, variable: string, allowed: readonly string[]): string | undefined {
  const r = resolveRoot(root, variable, allowed);
  return typeof r === "string" ? r : undefined;
}

/** `path` without repeated or trailing slashes (`//a/b/` → `/a/b`), as given otherwise. */
export function tidyPath(path: string): string {
  return path.replace(/\/+/g, "/").replace(/(.)\/$/, "$1");
}

function realOrUndefined(path: string): string | undefined {
  try {
    return Deno.realPathSync(path);
  } catch {
    return undefined;
  }
}

/**
 * The real path of a root a container names, resolved once (what was checked is what is
 * used), or the sentence saying why it cannot be one. A root is one the admin configured,
 * exactly (`allowed`), never a directory below one: below a root lie ARCH's own trees (keys,
 * claims, work directories a container can write), so a root named below another would put
 * one container's checkpoints inside another's reach. It must also not nest with any of
 * `apart` (the node's other roots and ARCH's own directories): the admin's roots must not
 * hold one another.
 */
export function resolveRoot(
  root: string,
  variable: string,
  allowed: readonly string[],
  field = "checkpointRoots",
  apart: readonly string[] = [],
): string | { real: string } {
  const listed = allowed.length > 0 ? allowed.map((r) => `"${r}"`).join(", ") : "none";
  const fix = `use one of the roots the admin allows (host config "${field}": ${listed}), exactly`;
  const refuse = (why: string) => `${variable}=${quoteValue(root)} ${why}: ${fix}`;
  if (!root.startsWith("/")) return refuse("is not an absolute path");
  if (root.split("/").includes("..")) return refuse(`contains ".."`);
  // By path first: nothing but the admin's roots is ever looked at.
  const given = tidyPath(root);
  const configured = allowed.find((r) => tidyPath(r) === given);
  if (configured === undefined) return refuse("is not one of the roots the admin allows");
  const real = realOrUndefined(root);
  if (real === undefined) return refuse("does not exist");
  const unsafe = rootProblem(real);
  if (unsafe !== undefined) {
    return refuse(`cannot be used: ${unsafe} (it must be a directory only root can change)`);
  }
  for (const other of apart) {
    const otherReal = realOrUndefined(other) ?? tidyPath(other);
    if (otherReal === real) continue;
    if (within(real, otherReal) || within(otherReal, real)) {
      const how = within(real, otherReal) ? "lies inside" : "holds";
      return `${variable}=${
        quoteValue(root)
      } ${how} "${other}", another root or directory of ARCH on this node, so one ` +
        `container's checkpoints could reach another's: the admin must configure roots that do not nest ` +
        `(host config "${field}")`;
    }
  }
  return { real };
}

/**
 * The node's directories a container's root must not nest with: every configured root and
 * ARCH's own state, CRIU, log and secret directories.
 */
export function archDirectories(host: HostConfig): string[] {
  const parent = (p: string) => p.slice(0, p.lastIndexOf("/")) || "/";
  return [
    ...host.checkpointRoots,
    host.defaultCheckpointRoot,
    ...host.sharedFsRoots,
    host.stateDir,
    host.criuConfigDir,
    parent(host.logFile),
    parent(host.secretFile),
  ];
}

/**
 * Why the container's own mounts reach `root` (a bind mount of it, of a directory inside it,
 * or of a directory that holds it), or `undefined`. A container that can see its checkpoint
 * root could read another job's images or change what ARCH later reads.
 */
export function mountsReachingRoot(
  spec: BundleSpec,
  root: string,
  variable: string,
  workdir?: string,
): string | undefined {
  const mounts = (spec.mounts ?? []) as { source?: string; type?: string; options?: string[] }[];
  for (const m of mounts) {
    if (workdir !== undefined && m.source === workdir) continue; // ARCH's own (sharedfs/config_json.ts withWorkdir)
    const bind = m.type === "bind" || (m.options ?? []).some((o) => o === "bind" || o === "rbind");
    if (!bind || m.source === undefined || !m.source.startsWith("/")) continue;
    const source = realOrUndefined(m.source) ?? tidyPath(m.source);
    if (within(source, root) || within(root, source)) {
      return `the container mounts "${m.source}", which ${within(source, root) ? "lies inside" : "holds"} its ` +
        `checkpoint root ${variable}=${
          quoteValue(root)
        }: a container must never see a checkpoint root; remove that mount ` +
        `or use another root`;
    }
  }
  return undefined;
}

/** Resolves and validates an enabled container's configuration. */
export function containerConfig(
  spec: BundleSpec,
  containerId: string,
  engineNamespace: string,
  host: HostConfig,
): ContainerConfigResult {
  const env = envOf(spec);
  const key = resolveKey(env, spec.annotations ?? {}, containerId, spec.process?.args ?? []);
  if (!key.ok) return { ok: false, error: key.error };
  const shared = sharedFsConfig(env, host);
  if (typeof shared === "string") return { ok: false, error: shared };
  const apart = archDirectories(host);
  let checkpointRoot: string;
  if (shared !== undefined) {
    checkpointRoot = `${shared.root}/checkpoint`;
  } else {
    const given = env.get("ARCH_CHECKPOINT_HOST_PATH");
    const variable = given !== undefined ? "ARCH_CHECKPOINT_HOST_PATH" : "defaultCheckpointRoot (host config)";
    const root = given ?? host.defaultCheckpointRoot;
    const allowed = given !== undefined ? [...host.checkpointRoots, host.defaultCheckpointRoot] : [root];
    const checked = resolveRoot(root, variable, allowed, "checkpointRoots", apart);
    if (typeof checked === "string") return { ok: false, error: checked };
    checkpointRoot = checked.real;
  }

  const requested = env.get("ARCH_RESTORE_CONSUMED") === "1";
  if (requested && host.restoreConsumed === "never") {
    return {
      ok: false,
      error: `ARCH_RESTORE_CONSUMED=1 is not allowed on this node (host config "restoreConsumed" is "never"): ` +
        `remove it, or ask the admin for "on-request"`,
    };
  }
  const pod = spec.annotations?.[POD_NAMESPACE];
  if (engineNamespace === CRI_NAMESPACE && (pod === undefined || !POD_NS.test(pod))) {
    return {
      ok: false,
      error: `this container of containerd's Kubernetes namespace has no valid "${POD_NAMESPACE}" annotation, ` +
        `so ARCH cannot scope its checkpoints to its pod's namespace: use containerd's CRI plugin (1.5 or later)`,
    };
  }
  const scope = keyScope(engineNamespace, spec.annotations ?? {}, host.scope);
  if (!isSafeSegment(scope)) return { ok: false, error: `the key scope "${scope}" is not a valid path element` };
  const reaching = mountsReachingRoot(
    spec,
    shared?.root ?? checkpointRoot,
    shared !== undefined ? "ARCH_SHAREDFS_HOST_PATH" : "ARCH_CHECKPOINT_HOST_PATH",
    shared !== undefined ? workdirPath(shared.root, scope, key.key) : undefined,
  );
  if (reaching !== undefined) return { ok: false, error: reaching };
  return {
    ok: true,
    config: {
      checkpointRoot,
      scope,
      key: key.key,
      keySource: key.source,
      restoreConsumed: host.restoreConsumed === "always" || requested,
      ...(shared !== undefined ? { sharedFs: shared } : {}),
    },
  };
}

/**
 * Shared-FS mode (`ARCH_SHAREDFS_HOST_PATH` + `ARCH_WORKDIR_CONTAINER_PATH`), or `undefined`
 * in local mode, or the sentence that refuses the container. The shared path passes the same
 * rules as a checkpoint root (one of the allowed roots exactly, resolved once, a directory
 * only root can change) against host config `sharedFsRoots`, and the allowed root that holds
 * it must be mounted right now: ARCH never writes into an empty mount point.
 */
export function sharedFsConfig(
  env: ReadonlyMap<string, string>,
  host: Pick<HostConfig, "sharedFsRoots"> & Partial<HostConfig>,
  mountinfo?: string,
): SharedFsConfig | string | undefined {
  const path = env.get("ARCH_SHAREDFS_HOST_PATH");
  const containerPath = env.get("ARCH_WORKDIR_CONTAINER_PATH");
  if (path === undefined) {
    if (containerPath === undefined) return undefined;
    return `ARCH_WORKDIR_CONTAINER_PATH=${
      quoteValue(containerPath)
    } needs ARCH_SHAREDFS_HOST_PATH (the shared file system ` +
      `that holds the work directory): set both, or neither`;
  }
  if (containerPath === undefined) {
    return `ARCH_SHAREDFS_HOST_PATH=${
      quoteValue(path)
    } needs ARCH_WORKDIR_CONTAINER_PATH (where the work directory appears ` +
      `in the container, e.g. /work): set both, or neither`;
  }
  const bad = containerPathProblem(containerPath);
  if (bad !== undefined) return `ARCH_WORKDIR_CONTAINER_PATH=${quoteValue(containerPath)} ${bad}`;
  // By path first: nothing but the allowed roots is ever looked at, not even whether it is mounted.
  const allowed = host.sharedFsRoots.filter((r) => tidyPath(r) === tidyPath(path));
  if (!path.startsWith("/") || path.split("/").includes("..") || allowed.length === 0) {
    return resolveRoot(path, "ARCH_SHAREDFS_HOST_PATH", host.sharedFsRoots, "sharedFsRoots") as string;
  }
  const mounted = allowed.find((r) => notMounted(r, mountinfo) === undefined);
  if (mounted === undefined) {
    return `ARCH_SHAREDFS_HOST_PATH=${quoteValue(path)}: the shared file system ${
      allowed.map((r) => `"${r}"`).join(" or ")
    } ` +
      `is not mounted on this node, and ARCH never writes into an empty mount point: mount it, then start the container again`;
  }
  const apart = host.stateDir !== undefined ? archDirectories(host as HostConfig) : host.sharedFsRoots;
  const checked = resolveRoot(path, "ARCH_SHAREDFS_HOST_PATH", [mounted], "sharedFsRoots", apart);
  if (typeof checked === "string") return checked;
  return { root: checked.real, mountPoint: mounted, containerPath };
}
