/**
 * Validates what an ARCH-enabled container asks for (its `ARCH_*` variables) against the
 * host configuration. Every refusal is one sentence naming the variable, its value and the
 * fix; it reaches `docker run`/`ctr run` output through runc's log file.
 *
 * Guarantees: the checkpoint root is absolute, has no `..`, exists, is a directory, is
 * writable, and its real path lies under one of the admin's allowed roots; the key is a
 * single safe path element. Nothing is created or changed here.
 */

import { type BundleSpec, envOf, resolveKey } from "./container.ts";
import type { HostConfig } from "./host_schema.ts";

export interface ContainerConfig {
  readonly checkpointRoot: string;
  readonly key: string;
  readonly keySource: string;
  /** `ARCH_RESTORE_CONSUMED=1`: restore even a checkpoint that was restored before. */
  readonly restoreConsumed: boolean;
}

export type ContainerConfigResult = { ok: true; config: ContainerConfig } | { ok: false; error: string };

const within = (path: string, root: string) => path === root || path.startsWith(root.endsWith("/") ? root : `${root}/`);

/** Why `root` cannot hold checkpoints, or `undefined`. `variable` names where it came from. */
export function checkRoot(root: string, variable: string, allowed: readonly string[]): string | undefined {
  const fix = `use an existing directory under ${allowed.map((r) => `"${r}"`).join(" or ")}`;
  if (!root.startsWith("/")) return `${variable}="${root}" is not an absolute path: ${fix}`;
  if (root.split("/").includes("..")) return `${variable}="${root}" contains "..": ${fix}`;
  let real: string;
  try {
    real = Deno.realPathSync(root);
  } catch {
    return `${variable}="${root}" does not exist: create it or ${fix}`;
  }
  if (!Deno.statSync(real).isDirectory) return `${variable}="${root}" is not a directory: ${fix}`;
  const allowedReal = allowed.map((r) => {
    try {
      return Deno.realPathSync(r);
    } catch {
      return r;
    }
  });
  if (!allowedReal.some((r) => within(real, r))) {
    return `${variable}="${root}" is outside the allowed checkpoint roots: ${fix} (host config "checkpointRoots")`;
  }
  try {
    const probe = `${real}/.arch-write-test-${Deno.pid}`;
    Deno.writeFileSync(probe, new Uint8Array(), { mode: 0o600 });
    Deno.removeSync(probe);
  } catch {
    return `${variable}="${root}" is not writable: ${fix}`;
  }
  return undefined;
}

/** Resolves and validates an enabled container's configuration. */
export function containerConfig(spec: BundleSpec, containerId: string, host: HostConfig): ContainerConfigResult {
  const env = envOf(spec);
  const key = resolveKey(env, spec.annotations ?? {}, containerId);
  if (!key.ok) return { ok: false, error: key.error };
  const given = env.get("ARCH_CHECKPOINT_HOST_PATH");
  const variable = given !== undefined ? "ARCH_CHECKPOINT_HOST_PATH" : "defaultCheckpointRoot (host config)";
  const root = given ?? host.defaultCheckpointRoot;
  const problem = checkRoot(root, variable, host.checkpointRoots);
  if (problem !== undefined) return { ok: false, error: problem };
  return {
    ok: true,
    config: {
      checkpointRoot: Deno.realPathSync(root),
      key: key.key,
      keySource: key.source,
      restoreConsumed: env.get("ARCH_RESTORE_CONSUMED") === "1",
    },
  };
}
