/**
 * ARCH's error types. Each has a stable `code` for logs and scripts and an exit status.
 * Messages follow one rule: one sentence saying what, which value, and how to fix it;
 * lower case start, values quoted, no trailing period.
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
