/**
 * What a failed CRIU dump or restore says, in one sentence a user can act on: the first
 * meaningful error of CRIU's log (never the known noise before it), what it means for the
 * job, and the fix when there is one. Pure: the caller reads the log.
 *
 * CRIU logs one line per event, errors as `(00.012345) Error (criu/<file>.c:<line>): <text>`.
 */

/** Error lines CRIU writes on every run here, harmless: never a cause. */
const NOISE: readonly RegExp[] = [
  /rlimit: Can't setup RLIMIT_NOFILE/,
  /Can't set RLIMIT_NOFILE/,
];

/** Known causes: the CRIU text, and the sentence that explains it (`$1`… from the match). */
const KNOWN: readonly { readonly match: RegExp; readonly say: (m: RegExpMatchArray) => string }[] = [
  {
    match: /Can't dump ghost file (\S+) of (\d+) size, increase limit/,
    say: (m) =>
      `the job holds open a deleted file ("${m[1]}", ${mib(Number(m[2]))}) larger than the ghost-file limit: ` +
      `raise host config "ghostFileLimitBytes" above it, or have the job close the file`,
  },
  {
    match: /Some file locks are hold by dumping tasks/,
    say: () =>
      `the job holds file locks and the CRIU configuration in use does not save them (ARCH's criu.conf, which does, ` +
      `names "file-locks"): start the container again through this ARCH, whose create points it at that configuration`,
  },
  {
    match: /fsnotify:\s+Can't dump that handle|Can't dump fsnotify|fanotify:\s+Can't dump/,
    say: () =>
      `the job watches files with inotify or fanotify on a path CRIU cannot find again on this file system: ` +
      `this watch cannot be checkpointed; let the job save its state on the notice (the task-aware exit-code path)`,
  },
  {
    match: /Unable to seize|Can't seize/,
    say: () =>
      `a process of the job could not be frozen for the dump (traced by a debugger, or stuck in the kernel): ` +
      `try again once it is not`,
  },
  {
    match: /Unsupported (\S+ )?(socket|sk) family|Can't dump (\S+ )?socket/,
    say: (m) => `the job holds a socket CRIU cannot save (${m[0]}): this kernel object cannot be checkpointed`,
  },
];

const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(1)} MiB`;

/**
 * CRIU's error lines of `log` that are not known noise, without their time and source prefix.
 * Only lines CRIU itself begins as errors count: CRIU's debug lines quote the job's file and
 * process names, which the tenant chooses.
 */
function criuErrors(log: string): string[] {
  return log.split("\n").flatMap((line) => {
    const m = /^\(\s*[0-9.]+\)\s+(?:[0-9]+:\s+)?Error \([^)]*\):\s*(.*)$/.exec(line);
    const text = m?.[1]?.trim() ?? "";
    return text !== "" && !NOISE.some((n) => n.test(text)) ? [text] : [];
  });
}

/** CRIU's first meaningful error line of `log`, without its time and source prefix. */
export function firstCriuError(log: string): string | undefined {
  return criuErrors(log)[0];
}

/**
 * One sentence for a failed CRIU run: a known cause explained with its fix, else CRIU's own
 * first meaningful error; `undefined` when the log holds no error.
 *
 * @example
 * ```ts
 * import { criuCause } from "./diagnose.ts";
 * const log = "(00.01) Error (criu/rlimit.c:1): rlimit: Can't setup RLIMIT_NOFILE for self\n" +
 *   "(00.20) Error (criu/files-reg.c:9): Can't dump ghost file /tmp/x of 8388608 size, increase limit\n";
 * if (!criuCause(log)?.startsWith('the job holds open a deleted file ("/tmp/x", 8.0 MiB)')) throw new Error();
 * ```
 */
export function criuCause(log: string): string | undefined {
  const errors = criuErrors(log);
  for (const error of errors) {
    for (const { match, say } of KNOWN) {
      const m = error.match(match);
      if (m !== null) return say(m);
    }
  }
  return errors[0] === undefined ? undefined : `CRIU: ${errors[0]}`;
}
