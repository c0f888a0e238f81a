/**
 * The full host configuration (`/etc/arch/config.json`, root-owned), validated with zod.
 * The runc wrapper's hot path reads only the few fields it needs (`host.ts`); everything
 * else that reads the file goes through {@link loadHostConfig}.
 */

import { z } from "zod";
import { DEFAULT_CONFIG_PATH, DEFAULT_LOG_FILE, DEFAULT_STATE_DIR, readHostBasics } from "./host.ts";
import { UsageError } from "../util/errors.ts";

const absolute = z.string().refine((p) => p.startsWith("/") && !p.split("/").includes(".."), {
  message: "must be an absolute path without '..'",
});

export const HostConfigSchema = z.object({
  /** Absolute path of the real runc. */
  runc: absolute.optional(),
  /** Runtime state (registry, drain marker); tmpfs so it ends with the boot. */
  stateDir: absolute.default(DEFAULT_STATE_DIR),
  /** ARCH's CRIU configuration and action script (must allow execution: not a noexec /run). */
  criuConfigDir: absolute.default("/var/lib/arch/criu"),
  /** ARCH's JSON-lines log. */
  logFile: absolute.default(DEFAULT_LOG_FILE),
  /** Host roots under which containers may keep checkpoints (ARCH_CHECKPOINT_HOST_PATH). */
  checkpointRoots: z.array(absolute).default(["/var/lib/arch", "/mnt"]),
  /** Checkpoint root for enabled containers that do not set ARCH_CHECKPOINT_HOST_PATH. */
  defaultCheckpointRoot: absolute.default("/var/lib/arch/checkpoints"),
  /** On a failed restore: start the container fresh (default) or refuse to start it. */
  onRestoreFailure: z.enum(["fresh", "fail"]).default("fresh"),
  /** Restore a checkpoint that was already restored once (default: no). */
  restoreConsumed: z.boolean().default(false),
  /** arch finalize: containers checkpointed at once, and the overall deadline. */
  finalizeConcurrency: z.number().int().min(1).max(64).default(4),
  finalizeDeadlineSeconds: z.number().positive().default(100),
}).strict();

export type HostConfig = z.infer<typeof HostConfigSchema> & { readonly configPath: string; readonly runcPath: string };

/** The configuration file the CLI uses: `ARCH_CONFIG` or the default. */
export function hostConfigPath(): string {
  return Deno.env.get("ARCH_CONFIG") ?? DEFAULT_CONFIG_PATH;
}

/**
 * Loads and validates the host configuration; a missing file means defaults. Throws
 * {@link UsageError} naming the file, the field and the fix.
 */
export function loadHostConfig(path = hostConfigPath(), self: readonly string[] = [Deno.execPath()]): HostConfig {
  const basics = readHostBasics(path, self);
  const problem = basics.problems[0];
  if (problem !== undefined) throw new UsageError(`${problem}: fix ${path}`);
  const parsed = HostConfigSchema.safeParse(basics.raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new UsageError(`${path}: field "${issue.path.join(".")}" ${issue.message}`);
  }
  if (basics.runc === undefined) throw new UsageError(`no usable runc found: set "runc" in ${path}`);
  return { ...parsed.data, configPath: path, runcPath: basics.runc };
}
