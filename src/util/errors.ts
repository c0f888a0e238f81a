/**
 * ARCH's one error model. Every ARCH failure is an {@link ArchError}: a one-sentence message
 * (what, which value, how to fix it; lower case start, values quoted, no trailing period), a
 * stable `code` for logs, events and scripts, and the exit status `arch` ends with. Only two
 * places turn one into what a user sees: `runCli` (`cli/main.ts`: `arch: <message>` on
 * stderr and the exit status) and the runc wrapper (`wrapper/wrapper.ts`: one line in runc's
 * `--log` file, where `docker`/`ctr` read it). Events carry the code (`observe/events.ts`).
 *
 * Exit statuses of `arch`: 0 done; 1 failed; 2 bad input ({@link UsageError}, nothing
 * changed); 3 the node does not allow it now ({@link PreconditionError}); 70 an internal
 * error (the last guard, `mod.ts`).
 *
 * Codes, by where they are thrown:
 * | code | class | module |
 * |---|---|---|
 * | `usage` | UsageError | every command's option and config checks |
 * | `precondition`, `watch-running`, `no-cloud` | PreconditionError | `cli/watch.ts` |
 * | `checkpoint-<step>` (config, prepare, size, claim, pause, dump, capture, release) | CheckpointError | `checkpoint/checkpoint.ts` |
 * | `restore-<outcome>` (foreign, refused, failed, error) | event only | `restore/restore.ts` |
 * | `runc-<command>` | RuncError | `runc/client.ts` |
 * | `checkpoint-foreign`, `checkpoint-unauthenticated` | ForeignCheckpoint, UnauthenticatedCheckpoint | `store/manifest.ts` |
 * | `claim-timeout`, `key-gone` | ClaimTimeout, KeyGone | `store/claim.ts` |
 * | `unsafe-path` | UnsafePathError | `store/safe_dir.ts` |
 * | `unsafe-entry` | UnsafeEntryError | `util/dirfd.ts` |
 * | `size-limit`, `layer-refused` | SizeLimitError, LayerRefusedError | `rootfs/layer_archive.ts` |
 * | `tar-format` | TarFormatError | `rootfs/tar_index.ts` |
 * | `syscall` | SyscallError | `rootfs/_libc.ts` |
 * | `command-failed` | CommandError | `process/exec.ts` |
 * | `metadata-timeout`, `metadata-unreachable`, `metadata-status` | MetadataHttpError, UnexpectedStatusError | `spot/http.ts` |
 */

/** Base of ARCH's errors: a one-sentence message, a stable `code` and an exit status (default 1). */
export class ArchError extends Error {
  constructor(message: string, readonly code: string, readonly exitCode = 1, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** Bad input from a user or a container: refused, nothing changed. */
export class UsageError extends ArchError {
  constructor(message: string, code = "usage") {
    super(message, code, 2);
  }
}

/** The node is not in a state that allows the operation. */
export class PreconditionError extends ArchError {
  constructor(message: string, code = "precondition") {
    super(message, code, 3);
  }
}

/** The message of anything thrown (an `Error`'s message, else the value as a string). */
export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
