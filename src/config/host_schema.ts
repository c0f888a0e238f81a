/**
 * The full host configuration (`/etc/arch/config.json`, root-owned), validated with zod.
 * The runc wrapper's hot path reads only the few fields it needs (`host.ts`); everything
 * else that reads the file goes through {@link loadHostConfig}.
 */

import { z } from "zod";
import {
  DEFAULT_CONFIG_PATH,
  DEFAULT_LOG_FILE,
  DEFAULT_METRICS_FILE,
  DEFAULT_STATE_DIR,
  type HostBasics,
  readHostBasics,
} from "./host.ts";
import { UsageError } from "../util/errors.ts";

const absolute = z.string().refine((p) => p.startsWith("/") && !p.split("/").includes(".."), {
  message: "must be an absolute path without '..'",
});

/** The zod schema of the host configuration file: its fields, their defaults and limits; unknown fields are refused. */
export const HostConfigSchema = z.object({
  /** Absolute path of the real runc. */
  runc: absolute.optional(),
  /** Runtime state (registry, drain marker); tmpfs so it ends with the boot. */
  stateDir: absolute.default(DEFAULT_STATE_DIR),
  /** ARCH's CRIU configuration and action script (must allow execution: not a noexec /run). */
  criuConfigDir: absolute.default("/var/lib/arch/criu"),
  /** ARCH's JSON-lines log. */
  logFile: absolute.default(DEFAULT_LOG_FILE),
  /**
   * Roots a container may name as its checkpoint root (ARCH_CHECKPOINT_HOST_PATH), exactly:
   * never a directory below one. Each must be root-owned and not writable by others, must
   * not nest with another root or ARCH directory, and is never mounted into a container.
   * `defaultCheckpointRoot` is always allowed.
   */
  checkpointRoots: z.array(absolute).default([]),
  /**
   * Shared file systems (EFS, JuiceFS, ... mounted at the same path on every node) a container
   * may name, exactly, for shared-FS mode (ARCH_SHAREDFS_HOST_PATH). Each entry must be a
   * mount point, root-owned and not writable by others; a container is refused while it is
   * not mounted.
   */
  sharedFsRoots: z.array(absolute).default([]),
  /** Shared-FS mode: remove a job's work directory when it ended by itself with exit code 0. */
  removeWorkdirOnSuccess: z.boolean().default(false),
  /**
   * A container whose key's checkpoint was already restored (by another container, maybe on
   * another node): start it fresh (default) or refuse it.
   */
  onConsumedCheckpoint: z.enum(["fresh", "refuse"]).default("fresh"),
  /** Checkpoint root for enabled containers that do not set ARCH_CHECKPOINT_HOST_PATH. */
  defaultCheckpointRoot: absolute.default("/var/lib/arch/checkpoints"),
  /** On a failed restore: start the container fresh (default) or refuse to start it. */
  onRestoreFailure: z.enum(["fresh", "fail"]).default("fresh"),
  /**
   * A checkpoint that was restored once: never restored again (default), restored again
   * when the container asks (`ARCH_RESTORE_CONSUMED=1`), or always.
   */
  restoreConsumed: z.enum(["never", "on-request", "always"]).default("never"),
  /**
   * Admin-defined key scope: keys of this node's containers live apart from those of nodes
   * with another scope (e.g. one scope per tenant's node pool on a shared file system).
   */
  scope: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, "must be 1-64 letters, digits, '_', '.' or '-'").optional(),
  /** The checkpoint secret (HMAC key of manifests): root-owned, 0600, the same on nodes that share checkpoints. */
  secretFile: absolute.default("/etc/arch/secret"),
  /** How long a checkpoint, restore or delete waits for another one of the same key. */
  lockWaitSeconds: z.number().positive().default(30),
  /**
   * Largest checkpoint (memory + writable layer) a container may make, enforced while it is
   * written (default 64 GiB).
   */
  maxCheckpointBytes: z.number().int().positive().default(64 * 2 ** 30),
  /**
   * Free space of a checkpoint root no checkpoint may take (default 1 GiB): a checkpoint that
   * would leave less is stopped, so one job never fills the root other jobs need.
   */
  checkpointReserveBytes: z.number().int().nonnegative().default(2 ** 30),
  /**
   * Largest file a job holds open after unlinking it (a temp file, a log rotated away) that a
   * checkpoint saves, each (CRIU's `ghost-limit`; default 64 MiB). A larger one fails the
   * checkpoint with a sentence naming this setting. Counted in `maxCheckpointBytes` like the rest.
   */
  ghostFileLimitBytes: z.number().int().positive().default(64 * 2 ** 20),
  /**
   * "require" (default): a checkpoint is restored only on a node whose CPU has every
   * instruction-set extension of the node that made it (else its processes may die of SIGILL);
   * it stays for a node that has them. "off": restored anyway.
   */
  cpuFeatureCheck: z.enum(["require", "off"]).default("require"),
  /**
   * Longest a checkpoint may keep a container paused; past it, the stuck ARCH process is
   * killed and the container released (a shared file system that stopped answering).
   */
  maxPauseSeconds: z.number().positive().default(300),
  /**
   * arch finalize: containers checkpointed at once ("auto": measured during the run, see
   * checkpoint/finalize_plan.ts), and the overall deadline.
   */
  finalizeConcurrency: z.union([z.literal("auto"), z.number().int().min(1).max(64)]).default("auto"),
  finalizeDeadlineSeconds: z.number().positive().default(100),
  /**
   * Task-aware checkpoints (docs/task-aware.md). The longest a container may ask ARCH to wait,
   * after its notify signal (`ARCH_NOTIFY_SIGNAL`), for the job to say it is ready; a larger
   * `ARCH_NOTIFY_TIMEOUT` is refused. 0 turns notify signals off (a container asking is refused).
   */
  notifyTimeoutMaxSeconds: z.number().min(0).max(3600).default(120),
  /** Whether a container may save itself by its exit code (`ARCH_CHECKPOINT_EXIT_CODE`). */
  exitCodeCheckpoints: z.boolean().default(true),
  /**
   * Whether a container may ask for its own checkpoint through its control directory
   * (`/run/arch/request`), how soon after its previous one, and how many such checkpoints
   * run at once on the node.
   */
  checkpointRequests: z.object({
    allowed: z.boolean().default(false),
    minIntervalSeconds: z.number().min(0).default(300),
    concurrency: z.number().int().min(1).max(64).default(1),
  }).strict().default({ allowed: false, minIntervalSeconds: 300, concurrency: 1 }),
  /** Minimum level of ARCH's log (`arch log --level` filters further). */
  logLevel: z.enum(["debug", "info", "warn", "error"]).default("info"),
  /**
   * Prometheus text file of ARCH's counters for node_exporter's textfile collector (mode 0644,
   * no secrets); `""` turns it off.
   */
  metricsFile: z.union([absolute, z.literal("")]).default(DEFAULT_METRICS_FILE),
  /** One JSON line per checkpoint, restore and finalize (0600); default `events.jsonl` beside `logFile`; `""`: off. */
  eventsFile: z.union([absolute, z.literal("")]).optional(),
  /** `arch gc` defaults: remove committed checkpoints older than this many days (none: no age limit)... */
  gc: z.object({
    maxAgeDays: z.number().positive().optional(),
    /** ...and keep this many committed checkpoints per key (the key's current one is kept unless asked). */
    keepPerKey: z.number().int().min(0).default(1),
    /** ...and remove a quarantined checkpoint (maybe a job's only state) only this many days after it failed. */
    quarantineDays: z.number().min(0).default(7),
  }).strict().default({ keepPerKey: 1, quarantineDays: 7 }),
  /** `arch doctor` warns when a checkpoint root has less free space than this (bytes). */
  minFreeBytes: z.number().int().min(0).default(10 * 2 ** 30),
}).strict();

/** The validated host configuration, with the file it was read from and the runc binary in use. */
export type HostConfig = Omit<z.infer<typeof HostConfigSchema>, "eventsFile"> & {
  readonly configPath: string;
  readonly runcPath: string;
  /** The events file in use (`""`: off), default resolved from `logFile`. */
  readonly eventsFile: string;
};

/** The configuration file the CLI uses: `ARCH_CONFIG` or the default. */
export function hostConfigPath(): string {
  return Deno.env.get("ARCH_CONFIG") ?? DEFAULT_CONFIG_PATH;
}

/**
 * Loads and validates the host configuration; a missing file means defaults. Throws
 * {@link UsageError} naming the file, the field and the fix.
 */
export function loadHostConfig(path = hostConfigPath(), self: readonly string[] = [Deno.execPath()]): HostConfig {
  return hostConfigFrom(readHostBasics(path, self));
}

/**
 * Validates a host configuration the wrapper already read (`host.ts`), without reading the
 * file again. Throws like {@link loadHostConfig}.
 */
export function hostConfigFrom(basics: HostBasics): HostConfig {
  const path = basics.configPath;
  const problem = basics.problems[0];
  if (problem !== undefined) throw new UsageError(`${problem}: fix ${path}`);
  const parsed = HostConfigSchema.safeParse(basics.raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new UsageError(`${path}: field "${issue.path.join(".")}" ${issue.message}`);
  }
  if (basics.runc === undefined) throw new UsageError(`no usable runc found: set "runc" in ${path}`);
  return { ...parsed.data, eventsFile: basics.eventsFile, configPath: path, runcPath: basics.runc };
}
