/**
 * No container is ever left frozen by ARCH.
 *
 * Before ARCH pauses a container it writes a marker `<stateDir>/paused/<namespace>/<id>.json`
 * naming itself (pid + start time, see `process/liveness.ts`) and the phase: `paused`
 * (nothing committed: the container must be resumed) or `committed` (its checkpoint is
 * the key's current one: the container must be stopped, never resumed into running past
 * its checkpoint; `committing` in between: stopped if the commit landed, else resumed).
 * The marker goes only once the container was verifiably released (`runc state` no longer
 * says `paused`). So whatever ends an ARCH process — an error, a
 * signal, `kill -9`, a crash — the marker survives it, and {@link recoverPaused} (run by
 * every `arch` command, `finalize` and `doctor`) finishes the job of a dead owner.
 * SIGTERM, SIGINT and SIGHUP are handled in-process: the guards this process holds are
 * released before it exits.
 *
 * An owner that is alive but stuck (a shared file system that stopped answering blocks its
 * writes, as a hard NFS mount does) must not keep the container frozen either: each pause
 * has a budget, written into the marker as its deadline, and a watchdog (a detached shell
 * started with the pause, gone within a second of the release) runs `arch recover` once the
 * budget is spent and as long as the marker stays. Past its deadline, an owner is killed
 * (SIGKILL) like a dead one, together with the helpers it started (tar) but not CRIU, which
 * may have its parasite code inside the container's processes: a dump stuck in CRIU keeps
 * them stopped until the file system answers again, and the marker until CRIU is gone.
 */

import { CURRENT_LINK } from "../store/layout.ts";
import { isSafeSegment } from "../util/paths.ts";
import { isAlive, type ProcessIdentity, selfIdentity } from "../process/liveness.ts";
import { Runc, RuncError, type RuncTarget, targetOf } from "../runc/client.ts";
import { runCommand } from "../process/exec.ts";
import { selfArch } from "../config/host.ts";
import { errorMessage } from "../util/errors.ts";

/**
 * `paused`: nothing committed, resume. `committing`: the commit of `checkpoint` is under
 * way; stop if it became the key's current checkpoint, else resume. `committed`: stop (or
 * resume, if `keepRunning`: `arch checkpoint --leave-running`).
 */
export type PausePhase = "paused" | "committing" | "committed";

/** The marker of one paused container (`<stateDir>/paused/<namespace>/<id>.json`): its owner, phase and deadline. */
export interface PauseMarker {
  readonly namespace: string;
  readonly id: string;
  /** runc's `--root` of the container. */
  readonly root: string;
  /** The other global flags the container was created with (`runc/client.ts`). */
  readonly runcGlobal?: Readonly<Record<string, string | boolean | string[]>>;
  readonly owner: ProcessIdentity;
  readonly phase: PausePhase;
  /** The checkpoint directory being committed (phase `committing`). */
  readonly checkpoint?: string | undefined;
  /** The temporary checkpoint directory runc and CRIU write into. */
  readonly workDir?: string | undefined;
  readonly keepRunning: boolean;
  readonly since: string;
  /** Epoch ms by which the owner must have released the container (its pause budget), else it is killed. */
  readonly deadline?: number;
}

/** Whether `checkpoint` (a `<key>/ckpt-*` directory) is its key's current checkpoint. */
function isCurrent(checkpoint: string): boolean {
  const slash = checkpoint.lastIndexOf("/");
  try {
    return Deno.readLinkSync(`${checkpoint.slice(0, slash)}/${CURRENT_LINK}`) === checkpoint.slice(slash + 1);
  } catch {
    return false;
  }
}

/** What releasing a container in this marker's state means: stop it, or resume it. */
export function releaseAction(marker: Pick<PauseMarker, "phase" | "checkpoint" | "keepRunning">): "stop" | "resume" {
  if (marker.keepRunning || marker.phase === "paused") return "resume";
  if (marker.phase === "committed") return "stop";
  return marker.checkpoint !== undefined && isCurrent(marker.checkpoint) ? "stop" : "resume";
}

/** Pause budget when the caller gives none (host config `maxPauseSeconds`). */
export const DEFAULT_PAUSE_BUDGET_MS = 300_000;

/**
 * The watchdog of one pause: a detached shell (own session, stdio on /dev/null) that checks
 * every second whether the marker is still there, exits as soon as it is not, and once the
 * budget is spent runs `arch recover` every 5 s while it stays. Costs one fork per second of
 * pause; never fails the pause (without it, the next `arch` command still recovers).
 */
const WATCHDOG = 'n=0; while [ -e "$2" ]; do n=$((n + 1)); ' +
  'if [ "$n" -gt "$1" ]; then "$0" recover >/dev/null 2>&1; sleep 4; fi; sleep 1; done';

async function startWatchdog(marker: string, budgetMs: number): Promise<void> {
  const arch = selfArch();
  await runCommand({
    cmd: "setsid",
    args: ["-f", "sh", "-c", WATCHDOG, arch, String(Math.ceil(budgetMs / 1000)), marker],
    stdio: "null",
    cwd: "/",
    timeoutMs: 5_000,
  }).catch(() => {});
}

/** Bound for each runc call of a release (pause/resume/kill/state on a healthy node take ms). */
const RUNC_CALL_MS = 15_000;
/** How long a release waits for a dump that outlived its ARCH process to finish. */
const HELPER_WAIT_MS = 60_000;

/**
 * Processes that still have a file or working directory under `dir`: a `runc checkpoint`
 * and its CRIU that outlived the ARCH process that started them (killed, or past its
 * deadline). CRIU puts the container's cgroup back into the freezer state it found —
 * paused — when it finishes, so a release must come after it, not before.
 */
export function processesUsing(dir: string, only: (pid: number) => boolean = () => true): number[] {
  const out: number[] = [];
  // `dir` must be a resolved path (checkpoint roots are resolved when a container is created,
  // `config/container_config.ts`): the kernel names cwds and descriptors so. It is not resolved
  // here, since a release must never touch a file system that stopped answering.
  const under = (link: string) => link === dir || link.startsWith(`${dir}/`);
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name) || Number(entry.name) === Deno.pid) continue;
    if (!only(Number(entry.name))) continue; // cheaper than reading every descriptor of every process
    try {
      if (under(Deno.readLinkSync(`/proc/${entry.name}/cwd`))) {
        out.push(Number(entry.name));
        continue;
      }
      for (const fd of Deno.readDirSync(`/proc/${entry.name}/fd`)) {
        try {
          if (under(Deno.readLinkSync(`/proc/${entry.name}/fd/${fd.name}`))) {
            out.push(Number(entry.name));
            break;
          }
        } catch { /* closed meanwhile */ }
      }
    } catch { /* gone, or a kernel thread */ }
  }
  return out;
}

/** CRIU and the runc that drives it: what may still put the container back into the frozen state. */
const isRefreezer = (pid: number) => {
  try {
    return ["criu", "runc"].includes(Deno.readTextFileSync(`/proc/${pid}/comm`).trim());
  } catch {
    return false;
  }
};

function kill(pid: number): void {
  try {
    Deno.kill(pid, "SIGKILL");
  } catch { /* gone */ }
}

/**
 * Waits until no CRIU or runc works in `dir` (or `timeoutMs` passes). Returns whether none
 * does. Other helpers (tar) never touch the freezer: a release need not wait for them (one
 * stuck on a file system that stopped answering may never end).
 */
async function helpersGone(dir: string | undefined, timeoutMs = HELPER_WAIT_MS): Promise<boolean> {
  if (dir === undefined) return true;
  const deadline = Date.now() + timeoutMs;
  while (processesUsing(dir, isRefreezer).length > 0) {
    if (Date.now() >= deadline) return false;
    await new Promise((r) => setTimeout(r, 100));
  }
  return true;
}

const markerDir = (stateDir: string) => `${stateDir}/paused`;

function markerPath(stateDir: string, namespace: string, id: string): string {
  if (!isSafeSegment(namespace) || !isSafeSegment(id)) throw new Error(`unsafe container name "${namespace}/${id}"`);
  return `${markerDir(stateDir)}/${namespace}/${id}.json`;
}

function writeMarker(stateDir: string, marker: PauseMarker): void {
  const path = markerPath(stateDir, marker.namespace, marker.id);
  Deno.mkdirSync(path.slice(0, path.lastIndexOf("/")), { recursive: true, mode: 0o700 });
  const tmp = `${path}.${Deno.pid}.tmp`;
  Deno.writeTextFileSync(tmp, JSON.stringify(marker) + "\n", { mode: 0o600 });
  Deno.renameSync(tmp, path);
}

function removeMarker(stateDir: string, namespace: string, id: string): void {
  try {
    Deno.removeSync(markerPath(stateDir, namespace, id));
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
}

/** Guards this process holds, released by the signal handler. */
const active = new Set<PauseGuard>();
/** Set by the signal handler: no new pause, no new commit. */
let stopping = false;

/** Whether runc's status of a container says it is not frozen any more. */
const released = (status: string | undefined) => status === "gone" || status === "running" || status === "stopped";

/**
 * Releases a paused container: `resume` (phase `paused`), or `stop` (phase `committed`:
 * SIGKILL, then resume if runc left it paused, so that the kill is delivered: a frozen task
 * only dies once thawed).
 * Returns `undefined` once `runc state` confirms it is not paused any more, else why not.
 */
export async function release(target: RuncTarget, action: "stop" | "resume"): Promise<string | undefined> {
  const runc = new Runc(target);
  const bounded = { timeoutMs: RUNC_CALL_MS };
  const attempt = (call: Promise<void>) => call.then(() => undefined, (e: unknown) => failure(e));
  let status: string | undefined;
  if (action === "stop") {
    // Never resume a committed container whose kill failed: it would run past its checkpoint.
    const kill = await attempt(runc.kill("KILL", bounded));
    status = await runc.status(RUNC_CALL_MS);
    if (kill !== undefined && !released(status)) return `runc kill failed: ${kill}`;
    // runc >= 1.1 thaws a paused container it sends SIGKILL to (cgroup v2 kills frozen tasks
    // anyway): then there is nothing to resume. Older runc leaves it paused; and when runc could
    // not tell, a resume after a kill that worked is safe.
    if (released(status)) return undefined;
  }
  let resume = await attempt(runc.resume(bounded));
  status = await runc.status(RUNC_CALL_MS);
  // Seen once in CI (runc 1.1.15, cgroup v1): runc answered "container not paused" to a resume while its state
  // said "paused" a moment later, a freezer still changing state. Try again for up to 2 s before calling the
  // container stuck.
  for (let i = 0; i < 20 && status === "paused"; i++) {
    await new Promise((r) => setTimeout(r, 100));
    resume = await attempt(runc.resume(bounded));
    status = await runc.status(RUNC_CALL_MS);
  }
  if (released(status)) return undefined;
  return `runc resume failed (state ${status ?? "unknown"}): ${resume ?? "no error, still paused"}`;
}

/** What a failed runc call says: runc's stderr tail, or how it ended. */
function failure(error: unknown): string {
  if (error instanceof RuncError) return error.stderrTail || `exit ${error.status}`;
  return errorMessage(error);
}

/** One pause of one container by this process. */
export class PauseGuard {
  #phase: PausePhase = "paused";
  #checkpoint: string | undefined;
  #workDir: string | undefined;
  #held = false;

  #deadline: number | undefined;

  /**
   * `budgetMs`: how long the container may stay paused before a watchdog kills this process
   * and releases it (see the module doc).
   */
  constructor(
    readonly stateDir: string,
    readonly namespace: string,
    readonly target: RuncTarget,
    readonly keepRunning = false,
    readonly budgetMs = DEFAULT_PAUSE_BUDGET_MS,
  ) {}

  /** Writes the marker, then pauses. On failure the marker goes and the error is thrown. */
  async pause(): Promise<void> {
    if (stopping) throw new Error("arch is stopping (signal): no new pause");
    this.#deadline = Date.now() + this.budgetMs;
    this.#write();
    this.#held = true;
    active.add(this);
    await startWatchdog(markerPath(this.stateDir, this.namespace, this.target.id), this.budgetMs);
    try {
      await new Runc(this.target).pause({ timeoutMs: RUNC_CALL_MS });
    } catch (error) {
      const why = await release(this.target, "resume"); // a pause that timed out may have half-happened
      if (why === undefined) this.#drop();
      throw new Error(`cannot pause "${this.target.id}": ${failure(error)}`);
    }
  }

  /** runc and CRIU write into `dir`: a release waits for whatever still does. */
  working(dir: string): void {
    this.#workDir = dir;
    this.#write();
  }

  /** The commit of `checkpoint` starts: if it lands, a release stops the container. */
  committing(checkpoint: string): void {
    if (stopping) throw new Error("arch is stopping (signal): not committing");
    this.#phase = "committing";
    this.#checkpoint = checkpoint;
    this.#write();
  }

  /** The checkpoint is committed: from now on, a release stops the container. */
  committed(): void {
    this.#phase = "committed";
    this.#write();
  }

  /** What {@link release} will do now. */
  action(): "stop" | "resume" {
    return releaseAction({ phase: this.#phase, checkpoint: this.#checkpoint, keepRunning: this.keepRunning });
  }

  /**
   * Resumes or stops the container, per {@link action}. Returns `undefined` when done, else
   * why not; then the marker stays, and the next `arch` command on the node tries again.
   */
  async release(): Promise<string | undefined> {
    if (!this.#held) return undefined;
    const gone = await helpersGone(this.#workDir);
    const why = await release(this.target, this.action());
    // A dump still running could freeze it again when it ends: then the marker stays, and
    // the next arch command releases it once more.
    if (why === undefined && gone) this.#drop();
    return why;
  }

  #write(): void {
    writeMarker(this.stateDir, {
      namespace: this.namespace,
      id: this.target.id,
      root: String(this.target.global.root),
      runcGlobal: this.target.global,
      owner: selfIdentity(),
      phase: this.#phase,
      ...(this.#checkpoint !== undefined ? { checkpoint: this.#checkpoint } : {}),
      ...(this.#workDir !== undefined ? { workDir: this.#workDir } : {}),
      keepRunning: this.keepRunning,
      since: new Date().toISOString(),
      ...(this.#deadline !== undefined ? { deadline: this.#deadline } : {}),
    });
  }

  #drop(): void {
    this.#held = false;
    active.delete(this);
    removeMarker(this.stateDir, this.namespace, this.target.id);
  }
}

/** Every marker on the node (unreadable ones skipped). */
export function listMarkers(stateDir: string): PauseMarker[] {
  const out: PauseMarker[] = [];
  let namespaces: Deno.DirEntry[];
  try {
    namespaces = [...Deno.readDirSync(markerDir(stateDir))];
  } catch {
    return out;
  }
  for (const ns of namespaces) {
    if (!ns.isDirectory || !isSafeSegment(ns.name)) continue;
    for (const file of Deno.readDirSync(`${markerDir(stateDir)}/${ns.name}`)) {
      if (!file.isFile || !file.name.endsWith(".json")) continue;
      try {
        const marker = JSON.parse(Deno.readTextFileSync(`${markerDir(stateDir)}/${ns.name}/${file.name}`));
        if (marker?.namespace === ns.name && `${marker.id}.json` === file.name) out.push(marker as PauseMarker);
      } catch { /* half-written by a process that died: its container was not paused yet */ }
    }
  }
  return out;
}

/**
 * Finds containers a dead ARCH process left paused and releases them (resume, or stop if
 * their checkpoint was committed). Returns one line per container acted on.
 */
export async function recoverPaused(stateDir: string, runcPath: string): Promise<string[]> {
  const lines: string[] = [];
  for (const marker of listMarkers(stateDir)) {
    if (isAlive(marker.owner)) {
      if (marker.deadline === undefined || Date.now() < marker.deadline) continue;
      // Alive but past its pause budget: stuck (a file system that stopped answering).
      kill(marker.owner.pid);
      // its other helpers (tar) too; never CRIU (see the module doc)
      if (marker.workDir !== undefined) processesUsing(marker.workDir).filter((p) => !isRefreezer(p)).forEach(kill);
      lines.push(
        `${marker.namespace}/${marker.id}: process ${marker.owner.pid} kept it paused past its budget, killed`,
      );
    }
    const target = targetOf(runcPath, marker);
    const status = await new Runc(target).status(RUNC_CALL_MS);
    if (status === "gone") {
      removeMarker(stateDir, marker.namespace, marker.id); // the container is gone
      continue;
    }
    const gone = await helpersGone(marker.workDir);
    const action = releaseAction(marker);
    const why = await release(target, action);
    const what = action === "stop" ? "stopped (its checkpoint was committed)" : "resumed";
    if (why === undefined) {
      if (gone) removeMarker(stateDir, marker.namespace, marker.id);
      lines.push(`${marker.namespace}/${marker.id}: left paused by process ${marker.owner.pid}, ${what}`);
    } else {
      lines.push(`${marker.namespace}/${marker.id}: left paused by process ${marker.owner.pid}, ${why}`);
    }
  }
  return lines;
}

let handlersInstalled = false;

/**
 * On SIGTERM/SIGINT/SIGHUP, releases every guard this process holds, then exits with
 * 128 + signal. For the CLI commands that pause containers.
 */
export function releaseOnSignals(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  const numbers = { SIGHUP: 1, SIGINT: 2, SIGTERM: 15 } as const;
  for (const [signal, n] of Object.entries(numbers) as [Deno.Signal, number][]) {
    Deno.addSignalListener(signal, async () => {
      stopping = true;
      // Guards taken or moved on while releasing are released in the next round.
      for (let round = 0; round < 10 && active.size > 0; round++) {
        await Promise.all([...active].map((guard) => guard.release()));
      }
      Deno.exit(128 + n);
    });
  }
}
