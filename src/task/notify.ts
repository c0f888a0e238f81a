/**
 * Tells a task-aware job what ARCH is about to do (`control_dir.ts`: `notice`), sends its
 * notify signal to its init (`runc kill`), and waits for its answer: `ready`, bounded by the
 * job's timeout and the caller's deadline. Never throws: a job that cannot be told, or does
 * not answer, is checkpointed anyway once the wait ends (the notice is a courtesy, the
 * checkpoint is the protection).
 */

import { Runc, type RuncTarget } from "../runc/client.ts";
import { errorMessage } from "../util/errors.ts";
import { type Notice, postNotice, readyAnswer } from "./control_dir.ts";

/** How a notice ended: the job said ready, the wait timed out, or the notice could not be given. */
export interface NotifyResult {
  readonly answer: "ready" | "timeout" | "failed";
  /** From the signal to the end of the wait, ms. */
  readonly waitedMs: number;
  /** Why the notice failed, or what the job left instead of an answer. */
  readonly problem?: string;
}

const POLL_MS = 50;

/** Posts `notice` and signals the init of `target` with `signal`; why it could not, or `undefined`. */
export async function tellJob(
  target: RuncTarget,
  pid: number,
  signal: string,
  notice: Notice,
): Promise<string | undefined> {
  try {
    postNotice(pid, notice);
    await new Runc(target).kill(signal, { timeoutMs: 10_000 });
    return undefined;
  } catch (error) {
    return `cannot notify the job: ${errorMessage(error)}`;
  }
}

/**
 * Posts `notice`, signals the init of `target` (its pid `pid`) with `signal`, and waits up to
 * `timeoutMs` for the job's `ready`.
 */
export async function notifyJob(
  target: RuncTarget,
  pid: number,
  signal: string,
  notice: Notice,
  timeoutMs: number,
): Promise<NotifyResult> {
  const started = performance.now();
  const waited = () => Math.round(performance.now() - started);
  const failed = await tellJob(target, pid, signal, notice);
  if (failed !== undefined) return { answer: "failed", waitedMs: waited(), problem: failed };
  let problem: string | undefined;
  for (;;) {
    try {
      const answer = readyAnswer(pid);
      if (answer === true) return { answer: "ready", waitedMs: waited() };
      if (typeof answer === "string") problem = answer;
    } catch (error) {
      // The container went away (it exited): nothing more to wait for.
      return { answer: "failed", waitedMs: waited(), problem: `cannot read the job's answer: ${errorMessage(error)}` };
    }
    if (performance.now() - started >= timeoutMs) {
      return { answer: "timeout", waitedMs: waited(), ...(problem !== undefined ? { problem } : {}) };
    }
    await new Promise((r) => setTimeout(r, Math.min(POLL_MS, Math.max(1, timeoutMs - waited()))));
  }
}
