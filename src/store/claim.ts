/**
 * The per-key claim: checkpoint, restore and delete of one key never overlap, on one node
 * or across nodes sharing the checkpoint root over a network file system (where `flock` is
 * not reliable).
 *
 * A claim is the directory `<key>/.claim`, taken with `mkdir` (atomic on local file systems,
 * NFS and FUSE alike), holding `owner.json` (host, pid + start time, operation, a random
 * nonce). The holder touches `owner.json` every few seconds. A claim is stale, and broken,
 * when its owner is on this host and dead (pid + start time), or when it was not touched for
 * `ttlMs` (an owner on another host that died or lost the file system). Breaking is a
 * rename to a unique name followed by a check that what was renamed is the stale claim that
 * was seen (else it is put back), so two breakers cannot both win. Waiting is bounded: a
 * claim not obtained within `waitMs` is an error naming the holder.
 * `owner.json` is read without following a link or blocking on a FIFO, at most 64 KiB, and
 * only a well-formed owner (short strings without control characters) is believed.
 */

import { ArchError } from "../util/errors.ts";
import { isAlive, type ProcessIdentity, selfIdentity } from "../process/liveness.ts";
import { readRegularFile } from "../util/dirfd.ts";

/** A claim's holder as `owner.json` records it: host, pid + start time, operation, a random nonce, time taken. */
export interface ClaimOwner extends ProcessIdentity {
  readonly host: string;
  readonly op: string;
  readonly nonce: string;
  readonly at: string;
}

/** A held claim; releasing it (or leaving its `using` scope) removes it unless it was broken meanwhile. */
export interface Claim extends Disposable {
  readonly owner: ClaimOwner;
  /** Releases the claim (if still ours). */
  release(): void;
}

/** A claim not obtained within `waitMs`; the message names the holder. */
export class ClaimTimeout extends ArchError {
  constructor(message: string) {
    super(message, "claim-timeout");
  }
}

/** Outcome of a claim attempt on a key directory that vanished (the key was deleted). */
export class KeyGone extends ArchError {
  constructor(message: string) {
    super(message, "key-gone");
  }
}

/** How long {@link claimKey} waits, when an untouched claim is stale, and how often its holder touches it. */
export interface ClaimOptions {
  /** How long to wait for a holder to finish. */
  readonly waitMs: number;
  /** A claim untouched for this long is stale (owner on another host died). */
  readonly ttlMs?: number;
  /** Heartbeat period (default ttl / 4). */
  readonly heartbeatMs?: number;
}

/** The claim directory's name inside a key directory. */
export const CLAIM_DIR = ".claim";

const DEFAULT_TTL_MS = 120_000;

/** Largest `owner.json` read, bytes (ARCH writes about 200). */
const MAX_OWNER_BYTES = 64 << 10;

/** Control characters: never in a string ARCH writes to `owner.json`. */
// deno-lint-ignore no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;

/** A string of `owner.json` ARCH could have written: at most 256 characters, no control character. */
const plain = (v: unknown): v is string => typeof v === "string" && v.length <= 256 && !CONTROL.test(v);

/** `value` (parsed `owner.json`) as a claim owner, or `undefined` if it is not one ARCH could have written. */
function ownerOf(value: unknown): ClaimOwner | undefined {
  if (value === null || typeof value !== "object") return undefined;
  const v = value as Record<string, unknown>;
  const number = (n: unknown) => typeof n === "number" && Number.isSafeInteger(n);
  if (!plain(v.host) || !plain(v.op) || !plain(v.nonce) || !plain(v.at) || !number(v.pid)) return undefined;
  if (v.start !== undefined && !number(v.start)) return undefined;
  return {
    host: v.host,
    op: v.op,
    nonce: v.nonce,
    at: v.at,
    pid: v.pid as number,
    start: v.start as number | undefined,
  };
}

function readOwner(dir: string): { owner: ClaimOwner | undefined; mtime: number | undefined } {
  try {
    const info = Deno.lstatSync(`${dir}/owner.json`);
    const bytes = readRegularFile(`${dir}/owner.json`, MAX_OWNER_BYTES);
    const owner = ownerOf(JSON.parse(new TextDecoder().decode(bytes)));
    return { owner, mtime: info.mtime?.getTime() };
  } catch {
    try {
      return { owner: undefined, mtime: Deno.statSync(dir).mtime?.getTime() };
    } catch {
      return { owner: undefined, mtime: undefined };
    }
  }
}

/** Whether a claim with this owner and last touch is stale, seen from this host at `now`. */
export function isStale(
  owner: ClaimOwner | undefined,
  mtime: number | undefined,
  host: string,
  now: number,
  ttlMs: number,
  alive: (id: ProcessIdentity) => boolean = isAlive,
): boolean {
  if (owner !== undefined && owner.host === host) return !alive(owner);
  return mtime !== undefined && now - mtime > ttlMs;
}

function randomNonce(): string {
  return [...crypto.getRandomValues(new Uint8Array(12))].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** Takes the claim on `keyDir` for `op`, waiting up to `options.waitMs`. */
export async function claimKey(keyDir: string, op: string, options: ClaimOptions): Promise<Claim> {
  const ttlMs = options.ttlMs ?? DEFAULT_TTL_MS;
  const host = Deno.hostname();
  const dir = `${keyDir}/${CLAIM_DIR}`;
  const owner: ClaimOwner = { host, ...selfIdentity(), op, nonce: randomNonce(), at: new Date().toISOString() };
  const deadline = Date.now() + options.waitMs;
  let delay = 20;
  while (true) {
    try {
      Deno.mkdirSync(dir, { mode: 0o700 });
      writeOwner(dir, owner);
      return held(dir, owner, options.heartbeatMs ?? ttlMs / 4);
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) throw new KeyGone(`key directory "${keyDir}" is gone`);
      if (!(error instanceof Deno.errors.AlreadyExists)) throw error;
    }
    const seen = readOwner(dir);
    if (isStale(seen.owner, seen.mtime, host, Date.now(), ttlMs)) {
      breakStale(dir, seen.owner);
      continue;
    }
    if (Date.now() >= deadline) {
      const who = seen.owner === undefined
        ? "a process that is starting"
        : `"${seen.owner.op}" by pid ${seen.owner.pid} on ${seen.owner.host} since ${seen.owner.at}`;
      throw new ClaimTimeout(`checkpoint key is busy (${who}) for more than ${Math.round(options.waitMs / 1000)} s`);
    }
    await new Promise((r) => setTimeout(r, Math.min(delay, Math.max(1, deadline - Date.now()))));
    delay = Math.min(delay * 2, 500);
  }
}

function writeOwner(dir: string, owner: ClaimOwner): void {
  Deno.writeTextFileSync(`${dir}/owner.json`, JSON.stringify(owner) + "\n", { mode: 0o600 });
}

function breakStale(dir: string, stale: ClaimOwner | undefined): void {
  const aside = `${dir}-stale-${randomNonce()}`;
  try {
    Deno.renameSync(dir, aside);
  } catch {
    return; // someone else broke or released it
  }
  const moved = readOwner(aside).owner;
  if (stale !== undefined && moved?.nonce !== stale.nonce) {
    // Between our look and the rename, the stale claim was broken and a live one taken:
    // give it back (if nobody took the name meanwhile, which only a live claim could).
    try {
      Deno.renameSync(aside, dir);
      return;
    } catch { /* a newer claim exists: ours to discard */ }
  }
  try {
    Deno.removeSync(aside, { recursive: true });
  } catch { /* best effort */ }
}

function held(dir: string, owner: ClaimOwner, heartbeatMs: number): Claim {
  const timer = setInterval(() => {
    try {
      const now = new Date();
      Deno.utimeSync(`${dir}/owner.json`, now, now);
    } catch { /* lost (key deleted under us by our own operation): nothing to refresh */ }
  }, heartbeatMs);
  Deno.unrefTimer(timer);
  let released = false;
  const release = () => {
    if (released) return;
    released = true;
    clearInterval(timer);
    if (readOwner(dir).owner?.nonce !== owner.nonce) return; // broken by someone: not ours any more
    try {
      Deno.removeSync(dir, { recursive: true });
    } catch { /* the key directory went with it */ }
  };
  return { owner, release, [Symbol.dispose]: release };
}
