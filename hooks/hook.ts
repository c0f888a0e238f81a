/**
 * The OCI hook role: `arch hook <createRuntime|poststop>`, run by runc with the container's
 * state on stdin (OCI runtime spec, "State"). The wrapper puts these hooks into config.json
 * of ARCH shared-FS containers (containerd, Docker); Podman and CRI-O get them from an OCI
 * hooks.d file that matches every container (`sharedfs/config_json.ts` writes both).
 *
 * - Every container without `ARCH_ENABLE=1` and a shared-FS path: exit 0 at once, nothing
 *   read beyond config.json, nothing written. Any error before ARCH knows the container is
 *   its own also exits 0 (a hook must never fail a container ARCH does not manage).
 * - `createRuntime` validates the work directory the wrapper declared (it must be on the
 *   shared file system, mounted now) and refuses the container with one sentence on stderr
 *   (runc shows it in `docker run`/`podman run` output) when it cannot be handed over; a
 *   shared-FS container that did not go through the wrapper (no registry record: the engine's
 *   runtime is not ARCH) is refused, since nobody declared its work directory.
 * - `poststop` finishes the work directory: removed only when the job ended by itself with
 *   exit code 0 and the host configuration asks for it (`removeWorkdirOnSuccess`); else kept.
 *   It never fails (runc would only log it).
 *
 * Trust: the state and config.json describe a container whose owner may be hostile. What the
 * hook acts on comes from the node's registry (root-only), matched by id and bundle, never
 * from the container's own annotations or environment alone.
 */

import { errorMessage } from "../src/util/errors.ts";
import { envOf, readBundleSpec } from "../src/config/container.ts";
import { NAMESPACE_ANNOTATION } from "../src/sharedfs/config_json.ts";
import { isSafeSegment, samePath } from "../src/util/paths.ts";
import type { ContainerRecord } from "../src/registry/registry.ts";
import type { HostConfig } from "../src/config/host_schema.ts";
import type { Logger } from "../src/log/log.ts";

/** The part of the OCI state a hook reads. */
interface HookState {
  readonly id: string;
  readonly bundle: string;
  readonly status?: string;
  readonly pid?: number;
}

async function readStdin(limit = 1 << 20): Promise<string> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of Deno.stdin.readable) {
    chunks.push(chunk);
    size += chunk.length;
    if (size > limit) break;
  }
  const all = new Uint8Array(size);
  chunks.reduce((at, chunk) => (all.set(chunk, at), at + chunk.length), 0);
  return new TextDecoder().decode(all);
}

function parseState(text: string): HookState | undefined {
  try {
    const state = JSON.parse(text) as Partial<HookState>;
    if (typeof state.id !== "string" || typeof state.bundle !== "string" || !state.bundle.startsWith("/")) {
      return undefined;
    }
    return state as HookState;
  } catch {
    return undefined;
  }
}

function refuse(msg: string): number {
  Deno.stderr.writeSync(new TextEncoder().encode(`arch: ${msg}\n`));
  return 1;
}

/** Runs one hook; returns its exit status. */
export async function runHook(args: readonly string[]): Promise<number> {
  const stage = args[0];
  if (stage !== "createRuntime" && stage !== "poststop") {
    return refuse(`unknown hook stage "${stage ?? ""}": use "arch hook createRuntime" or "arch hook poststop"`);
  }
  const state = parseState(await readStdin());
  if (state === undefined) return 0; // not a container state ARCH can tell is its own
  let env, annotations, spec;
  try {
    spec = readBundleSpec(state.bundle);
    env = envOf(spec);
    annotations = spec.annotations ?? {};
  } catch {
    return 0; // no config.json (already deleted at poststop by some engines): nothing ARCH can act on
  }
  if (env.get("ARCH_ENABLE") !== "1" || !env.has("ARCH_SHAREDFS_HOST_PATH")) return 0;

  // An ARCH shared-FS container: from here on, the host configuration and the registry decide.
  const { loadHostConfig } = await import("../src/config/host_schema.ts");
  const { Registry } = await import("../src/registry/registry.ts");
  const { Logger } = await import("../src/log/log.ts");
  let host;
  try {
    host = loadHostConfig();
  } catch (error) {
    return stage === "createRuntime" ? refuse(`host configuration: ${errorMessage(error)}`) : 0;
  }
  const log = new Logger(host.logFile, { component: "hook", stage, id: state.id });
  const namespace = annotations[NAMESPACE_ANNOTATION];
  const registry = new Registry(host.stateDir);
  const record = namespace !== undefined && isSafeSegment(namespace) && isSafeSegment(state.id)
    ? registry.get(namespace, state.id)
    : undefined;
  // runc hands hooks the resolved bundle path; the record holds the engine's spelling of it.
  const shared = record !== undefined && samePath(record.bundle, state.bundle)
    ? record.sharedFs as SharedFsRecord | undefined
    : undefined;
  if (stage === "createRuntime") {
    if (shared?.workdir === undefined) {
      const msg = `ARCH_SHAREDFS_HOST_PATH needs ARCH as the container's runtime (arch-runc), which declares its ` +
        `work directory: run the container with the "arch" runtime, or without ARCH_SHAREDFS_HOST_PATH`;
      log.error(msg);
      return refuse(msg);
    }
    const { workdirProblem, mountedWorkdirProblem } = await import("../src/sharedfs/workdir.ts");
    const problem = workdirProblem(shared.workdir, shared.mountPoint);
    if (problem !== undefined) {
      const msg = `cannot give the container its work directory: ${problem}: mount it, then start the container again`;
      log.error(msg);
      return refuse(msg);
    }
    // What runc mounted is what the wrapper checked: compared by device and inode, before the
    // container's process runs (runc runs createRuntime hooks after its mounts, before pivot_root).
    // A restore: runc runs this hook before CRIU mounts anything; the source is ARCH's staging
    // mount of the checked directory (`sharedfs/staging.ts`), checked by construction.
    const mounts = (spec.mounts ?? []) as { destination?: string; source?: string }[];
    const source = mounts.find((m) => m.destination?.replace(/\/+$/, "") === shared.containerPath)?.source;
    if (shared.staged !== undefined && source === shared.staged) return 0;
    // runc create runs this hook after its mounts, before pivot_root: the rootfs is seen through
    // the init process's root (never the process's root alone: the work path is the tenant's
    // choice and could name the work directory's own host path).
    const rootfs = containerRoot(state, spec.root?.path);
    const swapped = rootfs === undefined
      ? "the container's process is not known to the hook"
      : mountedWorkdirProblem(shared, String(record!.scope), record!.key, rootfs, shared.containerPath);
    if (swapped !== undefined) {
      const msg = `refusing to start the container: ${swapped}; start it again, and ask the admin to check ` +
        `who else can write ${shared.root}`;
      log.error(msg, { workdir: shared.workdir });
      return refuse(msg);
    }
    return 0;
  }
  if (record === undefined || shared?.workdir === undefined) return 0;
  try {
    await finish(record, shared, host, log);
  } catch (error) {
    log.error("cannot finish the work directory", { workdir: shared.workdir, error: String(error) });
  }
  return 0;
}

/** What the wrapper recorded of a shared-FS container (`wrapper/create.ts`). */
interface SharedFsRecord {
  readonly root: string;
  readonly mountPoint: string;
  readonly containerPath: string;
  readonly workdir?: string;
  /** A restore's staging mount (`sharedfs/staging.ts`): the source is ARCH's own mount of the checked directory. */
  readonly staged?: string;
}

/** The container's rootfs as the createRuntime hook can see it: through the init process's root, not yet pivoted into. */
function containerRoot(state: HookState, rootPath: string | undefined): string | undefined {
  if (typeof state.pid !== "number" || state.pid <= 0) return undefined;
  const rootfs = rootPath === undefined
    ? `${state.bundle}/rootfs`
    : rootPath.startsWith("/")
    ? rootPath
    : `${state.bundle}/${rootPath}`;
  return `/proc/${state.pid}/root${rootfs}`;
}

/** poststop: keep or remove the work directory (see the module doc). */
async function finish(record: ContainerRecord, shared: SharedFsRecord, host: HostConfig, log: Logger): Promise<void> {
  const { awaitExit, keepReason } = await import("../src/store/retention.ts");
  const { Registry } = await import("../src/registry/registry.ts");
  const { KeyStore } = await import("../src/store/store.ts");
  const ended = await awaitExit(new Registry(host.stateDir), record.namespace, record.id) ?? record;
  const store = new KeyStore(String(record.checkpointRoot), String(record.scope), record.key);
  const keep = !host.removeWorkdirOnSuccess ? `host config "removeWorkdirOnSuccess" is off` : keepReason(ended, store);
  if (keep !== undefined) {
    log.info("container stopped, work directory kept", { workdir: shared.workdir, reason: keep });
    return;
  }
  const { removeWorkdir } = await import("../src/sharedfs/workdir.ts");
  removeWorkdir(shared, String(record.scope), record.key);
  log.info("job ended with exit code 0, work directory removed", { workdir: shared.workdir });
}
