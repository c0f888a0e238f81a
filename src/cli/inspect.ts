/**
 * `arch inspect <key|scope/key>`: one key's checkpoint as a person wants to see it: its
 * manifest (when, which container and image, runc/CRIU/kernel versions, sizes, step times),
 * whether its signature is valid with this node's secret, the dumped process tree and memory
 * (read from CRIU's images, `criu/images.ts`), and the saved writable layer (files,
 * bytes, deleted entries). Read-only; nothing is followed out of the checkpoint roots: the
 * archive is read only under the store's own name (never a path from the manifest, which is
 * checked only for its signature), `manifest.json`/`manifest.hmac` through an opened file
 * checked to be the regular file looked at, with a size bound. Strings a tenant could set
 * (process names, paths, ids) are printed without control characters.
 */

import { type KeyFailure, readLastFailures } from "../observe/failures.ts";
import { CRIU_DIR, MANIFEST_FILE, ROOTFS_ARCHIVE, SIGNATURE_FILE, TMP_PREFIX } from "../store/layout.ts";
import { loadHostConfig } from "../config/host_schema.ts";
import { type CheckpointEntry, checkpointRootsOf, findKeys, type KeyEntry, scanCheckpoints } from "../store/listing.ts";
import { type CriuSummary, pageBytes, readCriuImages } from "../criu/images.ts";
import { listTarMembers } from "../rootfs/tar_index.ts";
import { isOpaque, isWhiteout } from "../rootfs/layer_archive.ts";
import { errorMessage, UsageError } from "../util/errors.ts";

import { humanBytes, printJson, printTable, terminalSafe } from "./output.ts";

/** The saved writable layer, summarized. */
export interface LayerSummary {
  readonly members: number;
  readonly files: number;
  readonly directories: number;
  /** Bytes of file data in the archive. */
  readonly bytes: number;
  /** Paths the container deleted from its image (overlay whiteouts). */
  readonly deleted: number;
  /** Directories the container replaced entirely (opaque). */
  readonly opaque: number;
  readonly archiveBytes: number;
}

/** `arch inspect --json`'s object. */
export interface InspectOutput {
  readonly scope: string;
  readonly key: string;
  readonly keyDir: string;
  readonly checkpoint: {
    readonly name: string;
    readonly path: string;
    readonly status: string;
    readonly bytes: number;
    readonly files: number;
    readonly consumedBy?: CheckpointEntry["consumedBy"];
  };
  /** Other checkpoint directories of the key (quarantined, temporary, ...). */
  readonly others: readonly { name: string; status: string; bytes: number; createdAt: string }[];
  readonly manifest?: {
    readonly createdAt: unknown;
    readonly containerId: unknown;
    readonly namespace: unknown;
    readonly image: unknown;
    readonly arch: unknown;
    readonly runc: unknown;
    readonly criu: unknown;
    readonly kernel: unknown;
    readonly cpuArch: unknown;
    readonly upperdir: unknown;
    readonly timings: unknown;
    readonly listedFiles: number;
    readonly listedBytes: number;
  };
  /** The key's last failed checkpoint or restore on this node (events file), if any. */
  readonly lastFailure?: KeyFailure;
  /** `valid`, `invalid` (not this node's secret, or modified), `unsigned`, or `unknown` (no secret here). */
  readonly signature: string;
  readonly criu?: CriuSummary;
  readonly layer?: LayerSummary | { readonly error: string };
}

/** The key `wanted` names, or a {@link UsageError} saying why not. */
export function resolveKey(keys: KeyEntry[], wanted: string): KeyEntry {
  if (keys.length === 1) return keys[0]!;
  if (keys.length === 0) {
    throw new UsageError(`no checkpoint key "${wanted}" on this node's checkpoint roots: see "arch ls --checkpoints"`);
  }
  throw new UsageError(
    `"${wanted}" names ${keys.length} keys (${keys.map((k) => `${k.scope}/${k.key}`).join(", ")}): give scope/key`,
  );
}

/** Summarizes the layer archive at `path`. */
export function layerSummary(path: string): LayerSummary {
  const members = listTarMembers(path);
  return {
    members: members.length,
    files: members.filter((m) => m.kind === "file").length,
    directories: members.filter((m) => m.kind === "directory").length,
    bytes: members.reduce((n, m) => n + m.dataSize, 0),
    deleted: members.filter(isWhiteout).length,
    opaque: members.filter(isOpaque).length,
    archiveBytes: Deno.lstatSync(path).size,
  };
}

/**
 * The bytes of the regular file `path`, at most `max`; `undefined` if it is missing, not a
 * regular file (a symlink is not followed: the opened file must be the one `lstat` saw) or larger.
 */
export function readBounded(path: string, max: number): Uint8Array | undefined {
  let seen: Deno.FileInfo;
  try {
    seen = Deno.lstatSync(path);
  } catch {
    return undefined;
  }
  if (!seen.isFile || seen.size > max) return undefined;
  let file: Deno.FsFile;
  try {
    file = Deno.openSync(path, { read: true });
  } catch {
    return undefined;
  }
  try {
    const info = file.statSync();
    if (!info.isFile || info.ino !== seen.ino || info.dev !== seen.dev || info.size > max) return undefined;
    const buf = new Uint8Array(max + 1);
    let n = 0;
    for (;;) {
      const got = file.readSync(buf.subarray(n));
      if (got === null || got === 0) break;
      n += got;
      if (n > max) return undefined;
    }
    return buf.subarray(0, n);
  } catch {
    return undefined;
  } finally {
    file.close();
  }
}

const MAX_MANIFEST = 64 << 20;
const MAX_HMAC = 4096;

async function signatureOf(
  dir: string,
  manifest: Uint8Array,
  secretFile: string,
  loadSecret: typeof import("../store/secret.ts"),
): Promise<string> {
  const bytes = readBounded(`${dir}/${SIGNATURE_FILE}`, MAX_HMAC);
  if (bytes === undefined) return "unsigned";
  const mac = new TextDecoder().decode(bytes);
  let secret: Uint8Array;
  try {
    secret = loadSecret.loadSecret(secretFile, false);
  } catch {
    return "unknown";
  }
  return (await loadSecret.verifySignature(secret, manifest, mac)) ? "valid" : "invalid";
}

/** Collects what `arch inspect` shows for `wanted`. Requires root. */
export async function collectInspect(wanted: string): Promise<InspectOutput> {
  const host = loadHostConfig();
  const keys = findKeys(scanCheckpoints(checkpointRootsOf(host)), wanted);
  if (keys.length === 0) {
    // No checkpoint on the roots: its checkpoints may all have failed; the events say why.
    const failed = [...readLastFailures(host.eventsFile)].filter(([k]) => k === wanted || k.endsWith(`/${wanted}`));
    if (failed.length === 1) {
      const [name, f] = failed[0]!;
      throw new UsageError(
        `no checkpoint of key "${name}" on this node's checkpoint roots: its last ${f.kind} failed at ${f.time}` +
          `${f.code ? ` (${f.code})` : ""}: ${f.error}`,
      );
    }
  }
  const key = resolveKey(keys, wanted);
  const chosen = key.checkpoints.find((c) => c.status === "committed" || c.status === "consumed") ??
    key.checkpoints.find((c) => !c.name.startsWith(TMP_PREFIX)) ?? key.checkpoints[0];
  const lastFailure = readLastFailures(host.eventsFile).get(`${key.scope}/${key.key}`);
  if (chosen === undefined) {
    const failed = lastFailure === undefined
      ? ""
      : `; its last ${lastFailure.kind} failed at ${lastFailure.time}: ${lastFailure.error}`;
    throw new UsageError(`checkpoint key "${key.scope}/${key.key}" holds no checkpoint (${key.keyDir})${failed}`);
  }
  let raw: Record<string, unknown> | undefined;
  const manifestBytes = readBounded(`${chosen.path}/${MANIFEST_FILE}`, MAX_MANIFEST);
  try {
    const v = manifestBytes === undefined ? undefined : JSON.parse(new TextDecoder().decode(manifestBytes));
    if (v !== null && typeof v === "object" && !Array.isArray(v)) raw = v;
  } catch { /* temporary or damaged */ }
  const files = Array.isArray(raw?.files) ? raw.files as { size?: unknown }[] : [];
  const rootfs = raw?.rootfs as { archive?: unknown; upperdir?: unknown } | undefined;
  const secretModule = await import("../store/secret.ts");
  let layer: InspectOutput["layer"];
  const archive = `${chosen.path}/${ROOTFS_ARCHIVE}`; // never a name from the (unverified) manifest
  try {
    if (Deno.lstatSync(archive).isFile) layer = layerSummary(archive);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) layer = { error: errorMessage(error) };
  }
  const criu = readCriuImages(`${chosen.path}/${CRIU_DIR}`);
  return {
    scope: key.scope,
    key: key.key,
    keyDir: key.keyDir,
    ...(lastFailure !== undefined ? { lastFailure } : {}),
    checkpoint: {
      name: chosen.name,
      path: chosen.path,
      status: chosen.status,
      bytes: chosen.bytes,
      files: chosen.files,
      ...(chosen.consumedBy !== undefined ? { consumedBy: chosen.consumedBy } : {}),
    },
    others: key.checkpoints.filter((c) => c !== chosen).map((c) => ({
      name: c.name,
      status: c.status,
      bytes: c.bytes,
      createdAt: c.createdAt,
    })),
    ...(raw !== undefined
      ? {
        manifest: {
          createdAt: raw.createdAt,
          containerId: raw.containerId,
          namespace: raw.namespace,
          image: raw.image,
          arch: (raw.arch as { version?: unknown } | undefined)?.version,
          runc: (raw.runc as { version?: unknown } | undefined)?.version,
          criu: (raw.criu as { version?: unknown } | undefined)?.version,
          kernel: raw.kernel,
          cpuArch: raw.cpuArch,
          upperdir: rootfs?.upperdir,
          timings: raw.timings,
          listedFiles: files.length,
          listedBytes: files.reduce((n, f) => n + (typeof f.size === "number" ? f.size : 0), 0),
        },
      }
      : {}),
    signature: raw === undefined || manifestBytes === undefined
      ? "unsigned"
      : await signatureOf(chosen.path, manifestBytes, host.secretFile, secretModule),
    ...(criu !== undefined ? { criu } : {}),
    ...(layer !== undefined ? { layer } : {}),
  };
}

const s = (v: unknown) => (v === undefined || v === null ? "-" : typeof v === "string" ? v : JSON.stringify(v));

/** `arch inspect`: prints one key's checkpoint (see the module doc), or JSON with `json`; returns 0. */
export async function inspect(wanted: string, opts: { json?: boolean }): Promise<number> {
  const out = await collectInspect(wanted);
  if (opts.json) {
    printJson(out);
    return 0;
  }
  const m = out.manifest;
  const consumed = out.checkpoint.consumedBy;
  const rows: [string, string][] = [
    ["key", `${out.scope}/${out.key}`],
    ["checkpoint", out.checkpoint.path],
    [
      "status",
      out.checkpoint.status + (consumed ? ` (by ${consumed.container} on ${consumed.node} at ${consumed.at})` : ""),
    ],
    ["size", `${humanBytes(out.checkpoint.bytes)} in ${out.checkpoint.files} files`],
    ["signature", out.signature],
  ];
  if (out.lastFailure !== undefined) {
    const f = out.lastFailure;
    rows.push(["last failure", `${f.kind} at ${f.time}${f.code ? ` (${f.code})` : ""}: ${f.error}`]);
  }
  if (m !== undefined) {
    rows.push(
      ["created", s(m.createdAt)],
      ["container", `${s(m.namespace)}/${s(m.containerId)}`],
      ["image", s(m.image)],
      ["versions", `arch ${s(m.arch)}, runc ${s(m.runc)}, criu ${s(m.criu)}, kernel ${s(m.kernel)} (${s(m.cpuArch)})`],
      ["timings (ms)", s(m.timings)],
    );
  }
  if (out.criu !== undefined) {
    rows.push(["memory dumped", humanBytes(out.criu.memoryBytes)]);
    rows.push(["CRIU images", `${out.criu.files} files, ${humanBytes(out.criu.bytes)}`]);
  }
  if (out.layer !== undefined) {
    rows.push([
      "writable layer",
      "error" in out.layer
        ? `unreadable: ${out.layer.error}`
        : `${out.layer.files} files, ${out.layer.directories} directories, ${humanBytes(out.layer.bytes)} of data, ` +
          `${out.layer.deleted} deleted, ${out.layer.opaque} opaque directories`,
    ]);
  }
  for (const [k, v] of rows) console.log(`${`${k}:`.padEnd(16)}${terminalSafe(v)}`);
  if (out.criu !== undefined && out.criu.processes.length > 0) {
    console.log("\nprocesses:");
    printTable(
      ["PID", "PPID", "THREADS", "MEMORY", "COMMAND"],
      treeOrder(out.criu.processes).map(({ p, depth }) => [
        String(p.pid),
        String(p.ppid),
        String(p.threads.length),
        p.pages !== undefined ? humanBytes(pageBytes(p.pages)) : "-",
        `${"  ".repeat(depth)}${p.comm ?? "?"}`,
      ]),
    );
  }
  if (out.others.length > 0) {
    console.log("\nother directories of the key:");
    printTable(
      ["NAME", "STATUS", "SIZE", "CREATED"],
      out.others.map((o) => [o.name, o.status, humanBytes(o.bytes), o.createdAt]),
    );
  }
  return 0;
}

/** Processes in tree order (parents before children), with their depth. */
function treeOrder(
  processes: CriuSummary["processes"],
): { p: CriuSummary["processes"][number]; depth: number }[] {
  const out: { p: CriuSummary["processes"][number]; depth: number }[] = [];
  const pids = new Set(processes.map((p) => p.pid));
  const visit = (ppid: number, depth: number, isRoot: boolean) => {
    for (const p of processes) {
      if (isRoot ? !pids.has(p.ppid) : p.ppid === ppid) {
        if (out.some((o) => o.p === p) || depth > 64) continue;
        out.push({ p, depth });
        visit(p.pid, depth + 1, false);
      }
    }
  };
  visit(0, 0, true);
  return out;
}
