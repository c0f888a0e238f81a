/**
 * SHA-256 and HMAC-SHA256 through Web Crypto, so that the runc wrapper's create and restore
 * never load Deno's Node compatibility layer: the first `node:` import costs a process about
 * 40 ms of CPU on this 2-core node (measured: importing the restore module took 45 ms with it,
 * 6 ms without), on the path of every restore. Only a file too large to hash in one piece (Web Crypto cannot stream) goes
 * through `node:crypto`, loaded on first use.
 *
 * Guarantees: the same digests as `node:crypto` (standard algorithms, tested against it);
 * {@link verifyHmac} compares in constant time (Web Crypto's `verify`).
 */

/** Files below this size are read whole and hashed in one call; larger ones are streamed. */
export const WHOLE_FILE_LIMIT = 8 << 20;

const encoder = new TextEncoder();

function toHex(bytes: ArrayBuffer): string {
  return Array.from(new Uint8Array(bytes), (b) => b.toString(16).padStart(2, "0")).join("");
}

function bytesOf(data: Uint8Array | string): Uint8Array<ArrayBuffer> {
  return (typeof data === "string" ? encoder.encode(data) : data) as Uint8Array<ArrayBuffer>;
}

/** `node:crypto`, once this process loaded it. */
let node: typeof import("node:crypto") | undefined;

/**
 * Hash through `node:crypto` from now on in this process: for the CLI, which loads the Node
 * layer anyway (its argument parser). There hashing stays on the calling thread, as before Web
 * Crypto, where each digest goes to a worker thread: a finalize's checkpoints, on a node its
 * dumps saturate, keep the hashing they were measured with.
 */
export async function preferNodeCrypto(): Promise<void> {
  node ??= await import("node:crypto");
}

/** The hex SHA-256 of `data` (a string is hashed as UTF-8). */
export async function sha256Hex(data: Uint8Array | string): Promise<string> {
  if (node !== undefined) return node.createHash("sha256").update(data).digest("hex");
  return toHex(await crypto.subtle.digest("SHA-256", bytesOf(data)));
}

function hmacKey(secret: Uint8Array, usage: KeyUsage): Promise<CryptoKey> {
  return crypto.subtle.importKey("raw", bytesOf(secret), { name: "HMAC", hash: "SHA-256" }, false, [usage]);
}

/** The hex HMAC-SHA256 of `data` under `secret`. */
export async function hmacHex(secret: Uint8Array, data: Uint8Array): Promise<string> {
  return toHex(await crypto.subtle.sign("HMAC", await hmacKey(secret, "sign"), bytesOf(data)));
}

/** Whether `mac` (64 hex digits) is the HMAC-SHA256 of `data` under `secret`; compared in constant time. */
export async function verifyHmac(secret: Uint8Array, data: Uint8Array, mac: string): Promise<boolean> {
  const hex = mac.trim();
  if (!/^[0-9a-fA-F]{64}$/.test(hex)) return false;
  const given = new Uint8Array(32);
  for (let i = 0; i < 32; i++) given[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return await crypto.subtle.verify("HMAC", await hmacKey(secret, "verify"), given, bytesOf(data));
}

/** An incremental SHA-256 (`node:crypto`, loaded on first use): for data too large to hash in one piece. */
export async function streamingSha256(): Promise<{ update(data: Uint8Array): void; digest(): string }> {
  await preferNodeCrypto();
  const hash = node!.createHash("sha256");
  return { update: (data) => void hash.update(data), digest: () => hash.digest("hex") };
}
