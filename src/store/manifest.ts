/**
 * The checkpoint manifest (`manifest.json`, versioned, zod-validated): what was saved,
 * from where, with which tools, and a sha256 for every file so a restore can refuse a
 * corrupted or tampered checkpoint before it touches anything.
 */

import { z } from "zod";
import { createHash } from "node:crypto";

export const MANIFEST_VERSION = 1;

export const ManifestSchema = z.object({
  version: z.literal(MANIFEST_VERSION),
  containerId: z.string(),
  namespace: z.string(),
  key: z.string(),
  createdAt: z.string(),
  arch: z.object({ version: z.string() }),
  runc: z.object({ version: z.string() }),
  criu: z.object({ version: z.string() }),
  kernel: z.string(),
  cpuArch: z.string(),
  rootfs: z.object({ archive: z.string().nullable(), upperdir: z.string().nullable() }),
  timings: z.record(z.string(), z.number()),
  files: z.array(z.object({ path: z.string(), size: z.number(), sha256: z.string().regex(/^[0-9a-f]{64}$/) })),
});

export type Manifest = z.infer<typeof ManifestSchema>;

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

/** Streams one file through sha256 (in-process, SHA extensions when the CPU has them). */
export async function sha256File(path: string): Promise<{ size: number; sha256: string }> {
  const hash = createHash("sha256");
  const file = await Deno.open(path);
  const buf = new Uint8Array(4 << 20);
  let size = 0;
  try {
    for (let n = await file.read(buf); n !== null; n = await file.read(buf)) {
      hash.update(buf.subarray(0, n));
      size += n;
    }
  } finally {
    file.close();
  }
  return { size, sha256: hash.digest("hex") };
}

/** sha256 and size of each file. */
export async function hashFiles(dir: string, files: readonly string[]): Promise<Manifest["files"]> {
  const out: Manifest["files"] = [];
  for (const path of files) out.push({ path, ...(await sha256File(`${dir}/${path}`)) });
  return out;
}

/** Reads and validates `<dir>/manifest.json`, then checks every file's size and sha256. */
export async function verifyCheckpoint(dir: string): Promise<Manifest> {
  const manifest = ManifestSchema.parse(JSON.parse(Deno.readTextFileSync(`${dir}/manifest.json`)));
  const actual = await hashFiles(dir, manifest.files.map((f) => f.path));
  for (const [i, expected] of manifest.files.entries()) {
    const got = actual[i]!;
    if (got.size !== expected.size || got.sha256 !== expected.sha256) {
      throw new Error(`checkpoint file "${expected.path}" does not match its manifest checksum`);
    }
  }
  return manifest;
}
