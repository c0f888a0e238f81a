/**
 * What a container asks of ARCH, read from its OCI bundle (`config.json`): the `ARCH_*`
 * environment variables and the checkpoint identity (key).
 *
 * Guarantees: pure functions over the parsed spec except {@link readBundleSpec}; a key is
 * always a single safe path element (see `util/paths.ts`) that is no name the store uses for
 * its own entries (`reservedKeyProblem` in `store/store.ts`), or an error sentence naming the
 * variable, the value and the fix. Only `ARCH_ENABLE=1` enables ARCH; any other value (or
 * none) means plain runc.
 */

import { quoteValue } from "../log/log.ts";
import { isSafeSegment } from "../util/paths.ts";
import { reservedKeyProblem } from "../store/store.ts";

/** The parts of an OCI runtime spec ARCH reads. */
export interface BundleSpec {
  readonly process?: {
    readonly args?: readonly string[];
    readonly env?: readonly string[];
    readonly terminal?: boolean;
    readonly cwd?: string;
    readonly user?: { readonly uid?: number; readonly gid?: number };
  };
  readonly root?: { readonly path?: string; readonly readonly?: boolean };
  readonly annotations?: { readonly [k: string]: string };
  readonly [k: string]: unknown;
}

/** Reads and parses `<bundle>/config.json`. Throws on a missing or malformed file. */
export function readBundleSpec(bundle: string): BundleSpec {
  return JSON.parse(Deno.readTextFileSync(`${bundle}/config.json`)) as BundleSpec;
}

/** The rootfs path of a bundle (`root.path`, relative to the bundle unless absolute). */
export function rootfsPath(spec: BundleSpec, bundle: string): string {
  const path = spec.root?.path ?? "rootfs";
  return path.startsWith("/") ? path : `${bundle}/${path}`;
}

/** The container's environment as a map (last definition wins, as in execve). */
export function envOf(spec: BundleSpec): Map<string, string> {
  const env = new Map<string, string>();
  for (const entry of spec.process?.env ?? []) {
    const eq = entry.indexOf("=");
    if (eq > 0) env.set(entry.slice(0, eq), entry.slice(eq + 1));
  }
  return env;
}

/**
 * `spec` with `name=value` in its process environment (any earlier definition of `name`
 * removed); `undefined` if it is already exactly that.
 *
 * @example
 * ```ts
 * import { withEnv } from "./container.ts";
 * const spec = withEnv({ process: { env: ["A=1", "ARCH_RESTORED=x"] } }, "ARCH_RESTORED", "task");
 * if (spec?.process?.env?.join(" ") !== "A=1 ARCH_RESTORED=task") throw new Error();
 * ```
 */
export function withEnv(spec: BundleSpec, name: string, value: string): BundleSpec | undefined {
  const env = spec.process?.env ?? [];
  const others = env.filter((e) => !e.startsWith(`${name}=`));
  if (others.length === env.length - 1 && env.includes(`${name}=${value}`)) return undefined;
  return { ...spec, process: { ...spec.process, env: [...others, `${name}=${value}`] } };
}

/** Whether the container opted in (`ARCH_ENABLE=1`, nothing else). */
export function isArchEnabled(env: ReadonlyMap<string, string>): boolean {
  return env.get("ARCH_ENABLE") === "1";
}

/** Where a key came from, for logs and `arch inspect`. */
export type KeySource = "ARCH_CHECKPOINT_ID" | "AWS_BATCH_JOB_ID" | "kubernetes" | "container-id";

/** The result of {@link resolveKey}: the key and where it came from, or the sentence that refuses it. */
export type KeyResult = { ok: true; key: string; source: KeySource } | { ok: false; error: string };

const K8S_ANNOTATIONS = [
  ["io.kubernetes.cri.sandbox-namespace", "io.kubernetes.cri.sandbox-name", "io.kubernetes.cri.container-name"],
  ["io.kubernetes.pod.namespace", "io.kubernetes.pod.name", "io.kubernetes.container.name"],
] as const;

/** FNV-1a, 64 bit, as 16 hex digits: a short stable tag (not a security boundary). */
function fnv1a64(text: string): string {
  let h = 0xcbf29ce484222325n;
  for (const byte of new TextEncoder().encode(text)) {
    h ^= BigInt(byte);
    h = (h * 0x100000001b3n) & 0xffffffffffffffffn;
  }
  return h.toString(16).padStart(16, "0");
}

/**
 * Resolves the checkpoint key: `ARCH_CHECKPOINT_ID`, else the AWS Batch job (with its array
 * index, its node index in a multi-node job, and a tag of the container's command line, so
 * that the containers of a multi-container job do not share one key), else the Kubernetes
 * pod namespace/name and container name, else the container id. The key is unique within a
 * key scope only (see `container_config.ts`), which the container cannot choose.
 *
 * @example
 * ```ts
 * import { resolveKey } from "./container.ts";
 * const env = new Map([["AWS_BATCH_JOB_ID", "4f2c:3"], ["AWS_BATCH_JOB_ARRAY_INDEX", "3"]]);
 * const a = resolveKey(env, {}, "c1", ["/bin/train"]), b = resolveKey(env, {}, "c2", ["/bin/sidecar"]);
 * if (!a.ok || !b.ok || !a.key.startsWith("aws-batch_4f2c_3_") || a.key === b.key) throw new Error();
 * ```
 */
export function resolveKey(
  env: ReadonlyMap<string, string>,
  annotations: { readonly [k: string]: string },
  containerId: string,
  args: readonly string[] = [],
): KeyResult {
  const explicit = env.get("ARCH_CHECKPOINT_ID");
  if (explicit !== undefined) {
    if (!isSafeSegment(explicit)) {
      return {
        ok: false,
        error: `ARCH_CHECKPOINT_ID=${quoteValue(explicit)} is not a valid checkpoint id: use 1-255 characters from ` +
          `letters, digits, "_", "+", "-" and "." (not "." or "..")`,
      };
    }
    const reserved = reservedKeyProblem(explicit);
    if (reserved !== undefined) {
      return {
        ok: false,
        error: `ARCH_CHECKPOINT_ID=${quoteValue(explicit)} is not a valid checkpoint id: ${reserved}; ` +
          `choose another id (not beginning with ".", "ckpt-" or "quarantine-", and not "current")`,
      };
    }
    return { ok: true, key: explicit, source: "ARCH_CHECKPOINT_ID" };
  }
  const job = env.get("AWS_BATCH_JOB_ID");
  if (job !== undefined && job !== "") {
    const parts = [`aws-batch_${job.split(":")[0]!}`];
    const index = env.get("AWS_BATCH_JOB_ARRAY_INDEX");
    if (index !== undefined && index !== "") parts.push(index);
    const node = env.get("AWS_BATCH_JOB_NODE_INDEX");
    if (node !== undefined && node !== "") parts.push(`node${node}`);
    parts.push(fnv1a64(JSON.stringify(args)));
    const key = parts.join("_");
    if (isSafeSegment(key)) return { ok: true, key, source: "AWS_BATCH_JOB_ID" };
    return {
      ok: false,
      error: `AWS_BATCH_JOB_ID=${quoteValue(job)} cannot be used as a checkpoint id: set ARCH_CHECKPOINT_ID`,
    };
  }
  for (const [nsKey, podKey, ctrKey] of K8S_ANNOTATIONS) {
    const ns = annotations[nsKey], pod = annotations[podKey], ctr = annotations[ctrKey];
    if (ns !== undefined && pod !== undefined && ctr !== undefined) {
      const key = `k8s_${ns}_${pod}_${ctr}`;
      if (isSafeSegment(key)) return { ok: true, key, source: "kubernetes" };
    }
  }
  if (reservedKeyProblem(containerId) !== undefined) {
    return {
      ok: false,
      error: `container id "${containerId}" cannot be used as a checkpoint id (${
        reservedKeyProblem(containerId)
      }): set ARCH_CHECKPOINT_ID or rename the container`,
    };
  }
  return { ok: true, key: containerId, source: "container-id" };
}
