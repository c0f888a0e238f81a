/**
 * The checkpoint secret: authenticates manifests with HMAC-SHA256, so that a restore (which
 * runs CRIU as root on the images) only ever trusts checkpoints written by an ARCH that
 * holds the same secret — not files a tenant, or another node's admin on a shared file
 * system, put there.
 *
 * The secret is a root-owned file, mode 0600, of at least 32 bytes (host config
 * `secretFile`, default `/etc/arch/secret`). Missing, it is created with 32 random bytes on
 * first use, which is all a single node needs; nodes that restore each other's checkpoints
 * must hold the same file (copy it like any cluster credential).
 */

import { hmacHex, verifyHmac } from "../util/digest.ts";

/** Shortest secret file accepted, in bytes; a secret ARCH creates holds this many random bytes, as hex. */
export const MIN_SECRET_BYTES = 32;

/** Reads the secret; creates it when missing and `create`. Throws one sentence on an unsafe file. */
export function loadSecret(path: string, create: boolean): Uint8Array {
  let info: Deno.FileInfo;
  try {
    info = Deno.lstatSync(path);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound) || !create) {
      throw new Error(`checkpoint secret "${path}" is missing: create it (32+ random bytes, root-owned, mode 0600)`);
    }
    const dir = path.slice(0, path.lastIndexOf("/")) || "/";
    Deno.mkdirSync(dir, { recursive: true, mode: 0o700 });
    const hex = [...crypto.getRandomValues(new Uint8Array(MIN_SECRET_BYTES))]
      .map((b) => b.toString(16).padStart(2, "0")).join("");
    try {
      Deno.writeTextFileSync(path, hex + "\n", { mode: 0o600, createNew: true });
    } catch (e) {
      if (!(e instanceof Deno.errors.AlreadyExists)) throw e; // another process made it first
    }
    info = Deno.lstatSync(path);
  }
  if (!info.isFile || info.uid !== 0 || info.mode === null || (info.mode & 0o077) !== 0) {
    throw new Error(`checkpoint secret "${path}" must be a regular file owned by root with mode 0600`);
  }
  const bytes = Deno.readFileSync(path);
  if (bytes.length < MIN_SECRET_BYTES) {
    throw new Error(`checkpoint secret "${path}" is shorter than ${MIN_SECRET_BYTES} bytes: write 32+ random bytes`);
  }
  return bytes;
}

/** The hex HMAC-SHA256 of `data` under `secret`. */
export function sign(secret: Uint8Array, data: Uint8Array): Promise<string> {
  return hmacHex(secret, data);
}

/** Whether `mac` (hex) authenticates `data` under `secret` (constant-time compare). */
export function verifySignature(secret: Uint8Array, data: Uint8Array, mac: string): Promise<boolean> {
  return verifyHmac(secret, data, mac);
}
