/**
 * The checkpoint manifest (`manifest.json`, versioned, zod-validated): what was saved,
 * from where, for which key scope and image, with which tools, and a sha256 for every file.
 * `manifest.hmac` authenticates it with the checkpoint secret (`secret.ts`).
 *
 * Guarantees of {@link verifyCheckpoint}, all before a restore touches anything: the
 * manifest is authentic (HMAC), it names only confined relative paths, the checkpoint
 * directory holds exactly the files it lists (no symlink, device or extra file), every file
 * matches its size and sha256, and the checkpoint belongs to the scope, key and image of the
 * container being restored.
 *
 * {@link verifyCheckpointExcept} is the split form for a restore that overlaps its slowest
 * hashing with `runc restore`: everything above holds at once for every file except those
 * `defer` selects, whose size is checked at once and whose sha256 {@link verifyFiles}
 * checks later. Only data CRIU copies without parsing (`criu/pages-*.img`, see
 * {@link isPageData}) may be deferred, and only when something holds the restored tasks
 * until that verdict (`restore/restore_gate.ts`).
 *
 * `manifest.json` and `manifest.hmac` are read without following a link or blocking on a
 * FIFO, and only as regular files of at most {@link MAX_MANIFEST_BYTES} and
 * {@link MAX_HMAC_BYTES}: a planted FIFO or device is an error, never a hang.
 */

import { ARCH_VERSION } from "../version.ts";
import {
  MANIFEST_FILE,
  MANIFEST_VERSION,
  READ_MANIFEST_VERSIONS,
  ROOTFS_ARCHIVE,
  SIGNATURE_FILE,
  TASK_MANIFEST_VERSION,
  UNLISTED,
} from "./layout.ts";
import { ArchError, errorMessage } from "../util/errors.ts";
import { z } from "zod";
import { sha256Hex, streamingSha256, WHOLE_FILE_LIMIT } from "../util/digest.ts";
import { openRegularFile, readRegularFile } from "../util/dirfd.ts";
import { sign, verifySignature } from "./secret.ts";

/** Largest `manifest.json` read, bytes (one entry of about 150 bytes per checkpoint file). */
export const MAX_MANIFEST_BYTES = 64 << 20;
/** Largest `manifest.hmac` read, bytes (ARCH writes 65). */
export const MAX_HMAC_BYTES = 4096;

/** A relative path of plain elements: no `/` at either end, no `.`/`..`, no odd characters. */
const RELATIVE = /^(?!.*(^|\/)\.{1,2}(\/|$))[A-Za-z0-9_.+-]+(\/[A-Za-z0-9_.+-]+)*$/;

/** The zod schema of `manifest.json`; each listed file's path must be a plain relative path (no `..`). */
export const ManifestSchema = z.object({
  version: z.union([z.literal(MANIFEST_VERSION), z.literal(TASK_MANIFEST_VERSION)]),
  /** "task": the writable layer only, saved by the job's exit code (version 3); absent: a process checkpoint. */
  kind: z.literal("task").optional(),
  /**
   * A template (`arch publish`): restored by name (`ARCH_RESTORE_FROM`) into containers of any
   * key of its scope and image, never consumed. Absent: a key's own checkpoint.
   */
  template: z.object({ name: z.string(), fromKey: z.string(), publishedAt: z.string() }).optional(),
  containerId: z.string(),
  namespace: z.string(),
  /** Key scope (see `config/container_config.ts`): who may restore it. */
  scope: z.string(),
  key: z.string(),
  /** Identity of the container's image (see `rootfs/image_identity.ts`). */
  image: z.string(),
  createdAt: z.string(),
  arch: z.object({ version: z.string() }),
  runc: z.object({ version: z.string() }),
  criu: z.object({ version: z.string() }),
  kernel: z.string(),
  cpuArch: z.string(),
  /** The CPU's instruction-set extensions (optional: absent in checkpoints of older ARCH versions, ignored by them). */
  cpuFeatures: z.array(z.string().max(64)).max(512).optional(),
  rootfs: z.object({ archive: z.literal(ROOTFS_ARCHIVE).nullable(), upperdir: z.string().nullable() }),
  timings: z.record(z.string(), z.number()),
  files: z.array(
    z.object({ path: z.string().regex(RELATIVE), size: z.number(), sha256: z.string().regex(/^[0-9a-f]{64}$/) }),
  ),
}).refine((m) => (m.kind === "task") === (m.version === TASK_MANIFEST_VERSION), {
  message: `a task checkpoint is of version ${TASK_MANIFEST_VERSION}, a process checkpoint of ${MANIFEST_VERSION}`,
});

/** A checkpoint's manifest, as {@link ManifestSchema} validates it. */
export type Manifest = z.infer<typeof ManifestSchema>;

/**
 * What every manifest says of where a checkpoint comes from: the container, its engine
 * namespace, key scope, key and image, and now.
 */
export function checkpointOrigin(
  record: { readonly id: string; readonly namespace: string; readonly key: string },
  scope: string,
  image: string,
): Pick<Manifest, "containerId" | "namespace" | "scope" | "key" | "image" | "createdAt"> {
  return {
    containerId: record.id,
    namespace: record.namespace,
    scope,
    key: record.key,
    image,
    createdAt: new Date().toISOString(),
  };
}

/** Lists every regular file under `dir` (relative paths), skipping `skip`. */
export function listFiles(dir: string, skip: ReadonlySet<string>, rel = ""): string[] {
  const out: string[] = [];
  for (const entry of Deno.readDirSync(`${dir}${rel ? `/${rel}` : ""}`)) {
    const path = rel ? `${rel}/${entry.name}` : entry.name;
    if (skip.has(path)) continue;
    if (entry.isDirectory) out.push(...listFiles(dir, skip, path));
    else if (entry.isFile) out.push(path);
  }
  return out.sort();
}

/**
 * The size and sha256 of one file: read whole and hashed in one call below
 * `WHOLE_FILE_LIMIT` (no `node:crypto` loaded: `util/digest.ts`), streamed above it.
 */
export async function sha256File(path: string): Promise<{ size: number; sha256: string }> {
  const file = openRegularFile(path); // a FIFO or link swapped in after the listing is refused, never waited on
  try {
    const stated = (await file.stat()).size;
    if (stated < WHOLE_FILE_LIMIT) {
      const whole = new Uint8Array(stated + 1); // one byte more: a file that grew meanwhile is seen
      let size = 0;
      while (size < whole.length) {
        const n = await file.read(whole.subarray(size));
        if (n === null) break;
        size += n;
      }
      if (size <= stated) return { size, sha256: await sha256Hex(whole.subarray(0, size)) };
      await file.seek(0, Deno.SeekMode.Start); // it grew: stream it from the start
    }
    const hash = await streamingSha256();
    const buf = new Uint8Array(4 << 20);
    let size = 0;
    for (let n = await file.read(buf); n !== null; n = await file.read(buf)) {
      hash.update(buf.subarray(0, n));
      size += n;
    }
    return { size, sha256: hash.digest() };
  } finally {
    file.close();
  }
}

/** sha256 and size of each file. */
export async function hashFiles(dir: string, files: readonly string[]): Promise<Manifest["files"]> {
  const out: Manifest["files"] = [];
  for (const path of files) out.push({ path, ...(await sha256File(`${dir}/${path}`)) });
  return out;
}

/** Writes `manifest.json` and its `manifest.hmac` into `dir` (files 0600, not yet fsync'ed). */
export async function writeManifest(dir: string, manifest: Manifest, secret: Uint8Array): Promise<void> {
  const bytes = new TextEncoder().encode(JSON.stringify(manifest, null, 2) + "\n");
  Deno.writeFileSync(`${dir}/${MANIFEST_FILE}`, bytes, { mode: 0o600 });
  Deno.writeTextFileSync(`${dir}/${SIGNATURE_FILE}`, (await sign(secret, bytes)) + "\n", { mode: 0o600 });
}

/** What the restoring container is: a checkpoint of anything else is refused. */
export interface Expected {
  readonly scope: string;
  readonly key: string;
  readonly image: string;
  /** Restoring the template of this name (`ARCH_RESTORE_FROM`): its key is not the container's. */
  readonly template?: string;
}

/**
 * An authentic checkpoint whose manifest is of another format version than this ARCH's
 * (`MANIFEST_VERSION`): written by an ARCH of another format, left for a node that reads it.
 */
export class CheckpointVersionError extends ArchError {
  constructor(message: string) {
    super(message, "checkpoint-version");
  }
}

/** A checkpoint that is authentic and intact but belongs to another scope, key or image. */
export class ForeignCheckpoint extends ArchError {
  constructor(message: string) {
    super(message, "checkpoint-foreign");
  }
}

/**
 * A checkpoint this node cannot authenticate: not signed with its secret. Most often the
 * node lacks the cluster's secret, so the checkpoint is left alone, not quarantined.
 */
export class UnauthenticatedCheckpoint extends ArchError {
  constructor(message: string) {
    super(message, "checkpoint-unauthenticated");
  }
}

/** Every regular file below `dir` (relative); throws on anything else than files and directories. */
function strictListing(dir: string, rel = ""): string[] {
  const out: string[] = [];
  for (const entry of Deno.readDirSync(rel ? `${dir}/${rel}` : dir)) {
    const path = rel ? `${rel}/${entry.name}` : entry.name;
    const info = Deno.lstatSync(`${dir}/${path}`);
    if (info.isDirectory) out.push(...strictListing(dir, path));
    else if (info.isFile) out.push(path);
    else throw new Error(`"${path}" is neither a file nor a directory`);
  }
  return out;
}

/**
 * The bytes of `dir/manifest.json`, a regular file of at most {@link MAX_MANIFEST_BYTES}
 * (read without following a link or blocking: see the module doc); throws otherwise.
 */
export function readManifestBytes(dir: string): Uint8Array {
  return readRegularFile(`${dir}/${MANIFEST_FILE}`, MAX_MANIFEST_BYTES);
}

/** The text of `dir/manifest.hmac`; {@link UnauthenticatedCheckpoint} if absent or not a small regular file. */
function readSignature(dir: string): string {
  try {
    return new TextDecoder().decode(readRegularFile(`${dir}/${SIGNATURE_FILE}`, MAX_HMAC_BYTES));
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      throw new UnauthenticatedCheckpoint("its manifest has no signature (manifest.hmac)");
    }
    throw new UnauthenticatedCheckpoint(`its manifest signature cannot be read: ${errorMessage(error)}`);
  }
}

/**
 * Authenticates and checks the checkpoint in `dir` for a restore into `expected` (see the
 * module doc). Throws {@link ForeignCheckpoint} for a checkpoint of another scope, key or
 * image, an Error for anything corrupt or forged.
 */
export async function verifyCheckpoint(dir: string, secret: Uint8Array, expected: Expected): Promise<Manifest> {
  return (await verifyCheckpointExcept(dir, secret, expected, () => false)).manifest;
}

/** A listed file of a manifest. */
export type ManifestFile = Manifest["files"][number];

/** What {@link verifyCheckpointExcept} verified, and the files whose sha256 is left to {@link verifyFiles}. */
export interface PartlyVerified {
  readonly manifest: Manifest;
  /** Listed files of the right size whose content is not verified yet (in manifest order). */
  readonly deferred: readonly ManifestFile[];
}

/**
 * {@link verifyCheckpoint} except the sha256 of the files `defer` selects, which are only
 * checked to be listed regular files of their listed size: {@link verifyFiles} checks
 * their content. Throws as {@link verifyCheckpoint} does.
 */
export async function verifyCheckpointExcept(
  dir: string,
  secret: Uint8Array,
  expected: Expected,
  defer: (path: string) => boolean,
): Promise<PartlyVerified> {
  const bytes = readManifestBytes(dir);
  const mac = readSignature(dir);
  if (!(await verifySignature(secret, bytes, mac))) {
    throw new UnauthenticatedCheckpoint(
      "its manifest is not signed with this node's checkpoint secret (made with another secret, or modified)",
    );
  }
  const parsed: unknown = JSON.parse(new TextDecoder().decode(bytes));
  const version = (parsed as { version?: unknown } | null)?.version;
  if (typeof version !== "number" || !READ_MANIFEST_VERSIONS.includes(version)) {
    // Authentic (signed with this node's secret) but of another format: a node with the ARCH
    // that wrote it can restore it, so it is left as it is, never quarantined as damaged.
    throw new CheckpointVersionError(
      `its manifest is of format version ${JSON.stringify(version ?? null)}, and this ARCH ` +
        `(${ARCH_VERSION}) reads versions ${READ_MANIFEST_VERSIONS.join(" and ")}: restore it on a node whose ARCH ` +
        `reads that version`,
    );
  }
  const manifest = ManifestSchema.parse(parsed);
  if (manifest.template?.name !== expected.template) {
    throw new ForeignCheckpoint(
      manifest.template === undefined
        ? `it is a checkpoint of key "${manifest.key}", not the template "${expected.template}"`
        : `it is the template "${manifest.template.name}", not ${
          expected.template === undefined ? "a checkpoint of this key" : `"${expected.template}"`
        }`,
    );
  }
  if (manifest.scope !== expected.scope || (expected.template === undefined && manifest.key !== expected.key)) {
    throw new ForeignCheckpoint(
      `it belongs to key "${manifest.key}" of scope "${manifest.scope}", not "${expected.key}" of "${expected.scope}"`,
    );
  }
  if (manifest.image !== expected.image) {
    throw new ForeignCheckpoint(
      `it was made from another image (${manifest.image}, this container: ${expected.image})`,
    );
  }
  const listed = new Set(manifest.files.map((f) => f.path));
  if (manifest.rootfs.archive !== null && !listed.has(manifest.rootfs.archive)) {
    throw new Error(`its manifest names the archive "${manifest.rootfs.archive}" but does not list it`);
  }
  const present = strictListing(dir).filter((p) => !UNLISTED.has(p));
  const extra = present.filter((p) => !listed.has(p));
  if (extra.length > 0 || present.length !== listed.size) {
    throw new Error(`its files do not match its manifest${extra.length > 0 ? ` ("${extra[0]}" is not listed)` : ""}`);
  }
  const deferred = manifest.files.filter((f) => f.path !== manifest.rootfs.archive && defer(f.path));
  for (const file of deferred) {
    if (Deno.lstatSync(`${dir}/${file.path}`).size !== file.size) throw mismatch(file.path);
  }
  const now = manifest.files.filter((f) => !deferred.includes(f));
  await verifyFiles(dir, now);
  return { manifest, deferred };
}

const mismatch = (path: string) => new Error(`checkpoint file "${path}" does not match its manifest checksum`);

/** Checks each file's size and sha256 against `files` (from an authenticated manifest); throws on the first that differs. */
export async function verifyFiles(dir: string, files: readonly ManifestFile[]): Promise<void> {
  for (const file of files) {
    const got = await sha256File(`${dir}/${file.path}`);
    if (got.size !== file.size || got.sha256 !== file.sha256) throw mismatch(file.path);
  }
}
