/**
 * What a container asks of ARCH's task-aware checkpoints (docs/task-aware.md), read from its
 * `ARCH_*` variables and checked against the admin's limits:
 *
 * - `ARCH_NOTIFY_SIGNAL` (a signal name such as `SIGUSR1`) and `ARCH_NOTIFY_TIMEOUT`
 *   (seconds, default 30, at most host config `notifyTimeoutMaxSeconds`): sent to the
 *   container's init before each checkpoint; ARCH dumps once the job said it is ready, or the
 *   timeout passed.
 * - `ARCH_RESTORED_SIGNAL`: sent to the init right after a restore.
 * - `ARCH_CHECKPOINT_EXIT_CODE` (1–125): exiting with it saves the writable layer as a task
 *   checkpoint (host config `exitCodeCheckpoints`).
 * - `ARCH_CHECKPOINT_REQUESTS=1`: the job may ask for its own checkpoints (`requests.ts`;
 *   host config `checkpointRequests` decides each request).
 * - `ARCH_RESTORE_FROM=<name>`: start from the admin's template `name` when the key has no
 *   checkpoint (`store/templates.ts`).
 *
 * Pure: every refusal is one sentence naming the variable, its value and the fix. Signals
 * that cannot be caught (`SIGKILL`, `SIGSTOP`) or that stop a job (`SIGTSTP`, `SIGTTIN`,
 * `SIGTTOU`) are refused.
 */

import { quoteValue } from "../log/log.ts";
import { templateNameProblem } from "../store/layout.ts";

/** The task-aware settings of one container, as recorded in the registry. */
export interface TaskOptions {
  /** Signal sent before each checkpoint, and how long ARCH then waits for the job's answer (ms). */
  readonly notify?: { readonly signal: string; readonly timeoutMs: number };
  /** Signal sent after a restore. */
  readonly restoredSignal?: string;
  /** Exit code by which the job asks ARCH to save its files (a task checkpoint). */
  readonly exitCode?: number;
  /** Whether the job may ask for its own checkpoints (`requests.ts`; the admin's policy decides each). */
  readonly requests?: boolean;
  /** The template to start from when the key has no checkpoint (`ARCH_RESTORE_FROM`, `store/templates.ts`). */
  readonly restoreFrom?: string;
}

/** The admin's limits {@link taskOptions} checks against (host config). */
export interface TaskLimits {
  readonly notifyTimeoutMaxSeconds: number;
  readonly exitCodeCheckpoints: boolean;
}

/** `ARCH_NOTIFY_TIMEOUT` when the container sets a notify signal without it, seconds. */
export const DEFAULT_NOTIFY_TIMEOUT_SECONDS = 30;

const SIGNALS = new Set([
  "SIGHUP",
  "SIGINT",
  "SIGQUIT",
  "SIGUSR1",
  "SIGUSR2",
  "SIGTERM",
  "SIGALRM",
  "SIGWINCH",
  "SIGURG",
  "SIGPWR",
  "SIGCONT",
  "SIGIO",
]);

/**
 * The signal's canonical name (`USR1`, `sigusr1` → `SIGUSR1`), or `undefined` if ARCH does
 * not send it.
 *
 * @example
 * ```ts
 * import { signalName } from "./options.ts";
 * if (signalName("usr1") !== "SIGUSR1" || signalName("SIGTERM") !== "SIGTERM") throw new Error();
 * if (signalName("SIGKILL") !== undefined || signalName("9") !== undefined) throw new Error();
 * ```
 */
export function signalName(value: string): string | undefined {
  const upper = value.trim().toUpperCase();
  const name = upper.startsWith("SIG") ? upper : `SIG${upper}`;
  return SIGNALS.has(name) ? name : undefined;
}

function badSignal(variable: string, value: string): string {
  return `${variable}=${quoteValue(value)} is not a signal ARCH sends: use a name such as SIGUSR1, SIGUSR2, ` +
    `SIGTERM, SIGHUP or SIGWINCH (SIGKILL, SIGSTOP and the terminal stop signals cannot be used)`;
}

/**
 * The container's task-aware settings, or the sentence that refuses the container.
 *
 * @example
 * ```ts
 * import { taskOptions } from "./options.ts";
 * const limits = { notifyTimeoutMaxSeconds: 120, exitCodeCheckpoints: true };
 * const env = new Map([["ARCH_NOTIFY_SIGNAL", "SIGUSR1"], ["ARCH_NOTIFY_TIMEOUT", "10"]]);
 * const got = taskOptions(env, limits);
 * if (typeof got === "string" || got.notify?.timeoutMs !== 10_000) throw new Error(String(got));
 * if (typeof taskOptions(new Map([["ARCH_CHECKPOINT_EXIT_CODE", "0"]]), limits) !== "string") throw new Error();
 * ```
 */
export function taskOptions(env: ReadonlyMap<string, string>, limits: TaskLimits): TaskOptions | string {
  const out: { -readonly [K in keyof TaskOptions]: TaskOptions[K] } = {};
  const notify = env.get("ARCH_NOTIFY_SIGNAL");
  const timeout = env.get("ARCH_NOTIFY_TIMEOUT");
  if (notify !== undefined) {
    const signal = signalName(notify);
    if (signal === undefined) return badSignal("ARCH_NOTIFY_SIGNAL", notify);
    if (limits.notifyTimeoutMaxSeconds <= 0) {
      return `ARCH_NOTIFY_SIGNAL=${quoteValue(notify)} is not allowed on this node (host config ` +
        `"notifyTimeoutMaxSeconds" is 0): remove it, or ask the admin to allow notify signals`;
    }
    let seconds = Math.min(DEFAULT_NOTIFY_TIMEOUT_SECONDS, limits.notifyTimeoutMaxSeconds);
    if (timeout !== undefined) {
      seconds = Number(timeout);
      if (!/^\d+(\.\d+)?$/.test(timeout.trim()) || !(seconds > 0)) {
        return `ARCH_NOTIFY_TIMEOUT=${quoteValue(timeout)} is not a positive number of seconds: set e.g. ` +
          `ARCH_NOTIFY_TIMEOUT=30`;
      }
      if (seconds > limits.notifyTimeoutMaxSeconds) {
        return `ARCH_NOTIFY_TIMEOUT=${quoteValue(timeout)} is more than this node allows ` +
          `(${limits.notifyTimeoutMaxSeconds} s, host config "notifyTimeoutMaxSeconds"): set it to at most that`;
      }
    }
    out.notify = { signal, timeoutMs: Math.round(seconds * 1000) };
  } else if (timeout !== undefined) {
    return `ARCH_NOTIFY_TIMEOUT=${quoteValue(timeout)} needs ARCH_NOTIFY_SIGNAL (the signal the job is ` +
      `told by): set both, or neither`;
  }
  const restored = env.get("ARCH_RESTORED_SIGNAL");
  if (restored !== undefined) {
    const signal = signalName(restored);
    if (signal === undefined) return badSignal("ARCH_RESTORED_SIGNAL", restored);
    out.restoredSignal = signal;
  }
  const code = env.get("ARCH_CHECKPOINT_EXIT_CODE");
  if (code !== undefined) {
    const n = Number(code);
    if (!/^\d{1,3}$/.test(code.trim()) || n < 1 || n > 125) {
      return `ARCH_CHECKPOINT_EXIT_CODE=${quoteValue(code)} is not an exit code from 1 to 125: set the code ` +
        `your job exits with after saving its state (0 means the job is done; 126 and above are how shells and ` +
        `engines report a command that could not run or a death by a signal)`;
    }
    if (!limits.exitCodeCheckpoints) {
      return `ARCH_CHECKPOINT_EXIT_CODE=${quoteValue(code)} is not allowed on this node (host config ` +
        `"exitCodeCheckpoints" is false): remove it, or ask the admin to allow task checkpoints`;
    }
    out.exitCode = n;
  }
  const requests = env.get("ARCH_CHECKPOINT_REQUESTS");
  if (requests !== undefined && requests !== "0" && requests !== "1") {
    return `ARCH_CHECKPOINT_REQUESTS=${quoteValue(requests)} is neither 1 nor 0: set ARCH_CHECKPOINT_REQUESTS=1 ` +
      `to ask for checkpoints through ${"/run/arch/request"}`;
  }
  if (requests === "1") out.requests = true;
  const from = env.get("ARCH_RESTORE_FROM");
  if (from !== undefined) {
    const problem = templateNameProblem(from);
    if (problem !== undefined) return `ARCH_RESTORE_FROM=${quoteValue(from)}: ${problem}`;
    out.restoreFrom = from;
  }
  return out;
}

/** Whether the container gets ARCH's control directory (`control_dir.ts`): it talks to ARCH through it. */
export function needsControlDir(options: TaskOptions): boolean {
  return options.notify !== undefined || options.requests === true;
}

/** The task-aware settings a registry record holds (written by the wrapper at create), if any. */
export function recordedTask(record: { readonly [k: string]: unknown }): TaskOptions | undefined {
  const task = record.task as TaskOptions | undefined;
  return typeof task === "object" && task !== null ? task : undefined;
}
