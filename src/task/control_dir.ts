/**
 * A task-aware container's control directory: `/run/arch` inside the container, a small
 * tmpfs ARCH adds to its config.json at create (64 KiB, 64 inodes, mode 1777, nosuid,
 * nodev, noexec). Through it the job and ARCH talk without anything crossing the
 * container's boundary:
 *
 * - `notice` (ARCH writes, the job reads): what ARCH is about to do, one word: `checkpoint`
 *   (it will dump the job; say ready) or `exit` (save your state and exit with
 *   `ARCH_CHECKPOINT_EXIT_CODE`).
 * - `ready` (the job creates, ARCH looks): the job is at a safe point.
 * - `request` (the job writes `continue` or `stop`, ARCH takes it): the job asks for a
 *   checkpoint at its safe point (`requests.ts`); `result` (ARCH writes): the answer, one line:
 *   `ok <checkpoint>`, `restored <checkpoint>` (in the container restored from it),
 *   `refused <why>` or `failed <why>`.
 *
 * Guarantees: the directory lives in the container's own mount namespace and memory (no
 * host disk a tenant could fill, nothing to clean after the container; CRIU saves and
 * restores it with the container). ARCH reaches it only from the container's root
 * (`/proc/<pid>/root`, `openat2` `RESOLVE_IN_ROOT`: no link leads out of the container),
 * never reads the job's answer (only `lstat`s it: a symbolic link, FIFO or directory named
 * `ready` is not an answer and blocks nothing), and writes `notice` only as a new file
 * (`O_CREAT|O_EXCL`: a link planted there is refused, never followed).
 */

import type { BundleSpec } from "../config/container.ts";
import { Dir } from "../util/dirfd.ts";
import { processStartTime } from "../process/liveness.ts";

/** Where the control directory appears in the container. */
export const CONTROL_DIR = "/run/arch";
/** The tmpfs options: small, and nothing in it runs or is a device. */
const TMPFS_OPTIONS = ["nosuid", "nodev", "noexec", "size=64k", "nr_inodes=64", "mode=1777"];

interface Mount {
  destination: string;
  type?: string;
  source?: string;
  options?: string[];
}

/**
 * `spec` with the control directory mounted; `undefined` if it is already there (ARCH's own),
 * or the sentence refusing a container that mounts something else at {@link CONTROL_DIR}.
 *
 * @example
 * ```ts
 * import { withControlDir } from "./control_dir.ts";
 * const spec = withControlDir({ mounts: [] });
 * if (typeof spec !== "object" || (spec.mounts as unknown[]).length !== 1) throw new Error();
 * if (withControlDir(spec) !== undefined) throw new Error();
 * if (typeof withControlDir({ mounts: [{ destination: "/run/arch/", type: "bind", source: "/x" }] }) !== "string") {
 *   throw new Error();
 * }
 * ```
 */
export function withControlDir(spec: BundleSpec): BundleSpec | string | undefined {
  const mounts = (spec.mounts as Mount[] | undefined) ?? [];
  const clash = mounts.filter((m) => m.destination.replace(/\/+$/, "") === CONTROL_DIR);
  if (clash.length === 1 && clash[0]!.type === "tmpfs" && clash[0]!.source === "arch-control") return undefined;
  if (clash.length > 0) {
    return `the container already mounts "${clash[0]!.source ?? clash[0]!.type}" at ${CONTROL_DIR}, where ARCH ` +
      `puts the control directory of ARCH_NOTIFY_SIGNAL: remove that mount`;
  }
  const mount: Mount = { destination: CONTROL_DIR, type: "tmpfs", source: "arch-control", options: TMPFS_OPTIONS };
  return { ...spec, mounts: [...mounts, mount] };
}

/** A process the control directory is reached through: its pid and, when known, its start time (`/proc/<pid>/stat`). */
export type ControlTarget = number | { readonly pid: number; readonly startTime: number | null };

/**
 * `st_dev` of the container's own control tmpfs, from its mount table (`/proc/<pid>/mountinfo`:
 * the tmpfs whose source is `arch-control`); `undefined` when there is none.
 */
export function controlDevice(mountinfo: string): number | undefined {
  for (const line of mountinfo.split("\n")) {
    const [left, right] = line.split(" - ");
    if (left === undefined || right === undefined) continue;
    const [fstype, source] = right.split(" ");
    if (fstype !== "tmpfs" || source !== "arch-control") continue;
    const [major, minor] = (left.split(" ")[2] ?? "").split(":").map(Number);
    if (!Number.isInteger(major) || !Number.isInteger(minor)) continue;
    // The kernel's new_encode_dev, as stat(2) reports st_dev.
    return (minor! & 0xff) + (major! & 0xfff) * 256 + Math.floor(minor! / 256) * 2 ** 20 +
      Math.floor(major! / 4096) * 2 ** 32;
  }
  return undefined;
}

/**
 * The control directory of the running container whose init is `target`, opened from inside
 * its root. Refused (throws) unless the process is still the one named (its start time, when
 * given), lives in another mount namespace than ARCH (a reused pid of a host process never
 * leads ARCH into the host's own directories), and the directory opened is that container's
 * own control tmpfs (a tenant that repointed a link on the way, or unmounted the tmpfs, is
 * not followed).
 */
function openControlDir(target: ControlTarget): Dir {
  const pid = typeof target === "number" ? target : target.pid;
  const sameProcess = () =>
    typeof target === "number" || target.startTime === null || processStartTime(pid) === target.startTime;
  if (!sameProcess()) throw new Error(`process ${pid} is no longer the container's`);
  if (Deno.statSync(`/proc/${pid}/ns/mnt`).ino === Deno.statSync("/proc/self/ns/mnt").ino) {
    throw new Error(`process ${pid} is not in a container (it shares ARCH's mount namespace)`);
  }
  const device = controlDevice(Deno.readTextFileSync(`/proc/${pid}/mountinfo`));
  if (device === undefined) throw new Error(`the container has no ${CONTROL_DIR} of ARCH's`);
  using root = Dir.open(`/proc/${pid}/root/.`);
  const dir = root.openInRoot(CONTROL_DIR.slice(1));
  if (dir.dev !== device || !sameProcess()) {
    dir.close();
    throw new Error(`${CONTROL_DIR} of process ${pid} is not the container's control directory`);
  }
  return dir;
}

/** What ARCH is about to do, as the job reads it in `notice`. */
export type Notice = "checkpoint" | "exit";

/**
 * Removes a previous `ready` and writes `notice`: the job's next `ready` answers this notice.
 * Throws when the directory cannot be reached or written (no control directory, a full
 * tmpfs, a planted `notice` that cannot be replaced).
 */
export function postNotice(pid: ControlTarget, notice: Notice): void {
  using dir = openControlDir(pid);
  dir.removeTree("ready");
  dir.removeTree("notice");
  // A new file only: an entry planted between the removal and here fails the write, nothing is followed.
  Deno.writeTextFileSync(dir.at("notice"), `${notice}\n`, { createNew: true, mode: 0o644 });
}

/**
 * Whether the job answered: `true` for a regular file `ready`; a string saying what is there
 * instead (then the job has not answered); `false` when there is nothing yet.
 */
export function readyAnswer(pid: ControlTarget): boolean | string {
  using dir = openControlDir(pid);
  const info = dir.lstat("ready");
  if (info === undefined) return false;
  if (info.isFile) return true;
  return `${CONTROL_DIR}/ready is ${
    info.isSymlink ? "a symbolic link" : info.isDirectory ? "a directory" : "not a regular file"
  }, not an answer: the job must create it as a plain file`;
}

/** The largest request ARCH reads, bytes. */
const MAX_REQUEST_BYTES = 64;

/** What a job asks for in `request`: a checkpoint after which it goes on, or one that stops it. */
export type RequestKind = "continue" | "stop";

/**
 * Takes the job's `request` (read, then removed): its kind, `undefined` when there is none, or
 * the sentence refusing what was found (a link, a FIFO, a directory, unknown words).
 */
export function takeRequest(pid: ControlTarget): RequestKind | { refused: string } | undefined {
  using dir = openControlDir(pid);
  const info = dir.lstat("request");
  if (info === undefined) return undefined;
  let text: string | undefined;
  try {
    if (info.isFile) text = new TextDecoder().decode(dir.readFile("request", MAX_REQUEST_BYTES)).trim();
  } catch { /* swapped, or too long: refused below */ }
  dir.removeTree("request");
  if (text === "continue" || text === "stop") return text;
  return {
    refused: text === undefined
      ? `${CONTROL_DIR}/request must be a plain file of at most ${MAX_REQUEST_BYTES} bytes`
      : `${CONTROL_DIR}/request must say "continue" or "stop"`,
  };
}

/** Writes the answer to a request as `result` (one line), replacing a previous one; throws when it cannot. */
export function postResult(pid: ControlTarget, line: string): void {
  using dir = openControlDir(pid);
  dir.removeTree("result");
  Deno.writeTextFileSync(dir.at("result"), `${line.replace(/[\r\n]+/g, " ").slice(0, 512)}\n`, {
    createNew: true,
    mode: 0o644,
  });
}

/** Removes `notice` and `ready` after a restore: the job starts over without a stale answer. Best effort. */
export function clearControlDir(pid: ControlTarget): void {
  try {
    using dir = openControlDir(pid);
    dir.removeTree("ready");
    dir.removeTree("notice");
  } catch { /* nothing to clear */ }
}
