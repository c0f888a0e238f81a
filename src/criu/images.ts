/**
 * Reads what a person wants to know from CRIU's image files, without CRIU's tools: the
 * process tree (`pstree.img`, with each process's command name from `core-<pid>.img`), each
 * process's dumped pages (`pagemap-<pid>.img`) and the total memory dumped (the size of the
 * `pages-*.img` files).
 *
 * CRIU images (format "v1.1") start with two little-endian u32 magics, then hold entries,
 * each a u32 length and a protobuf message. Only the few fields used here are decoded; an
 * unknown or damaged file yields `undefined` fields, never an exception. Read-only; never
 * follows a symlink and reads at most 16 MiB of a file, only a regular one, opened without
 * blocking (`util/dirfd.ts`: a FIFO planted in place of an image never hangs): images are
 * written by CRIU, but a checkpoint on a shared file system is not trusted before its
 * manifest is verified.
 */

import { readVarint } from "./protobuf.ts";
import { readRegularFile } from "../util/dirfd.ts";

/** One process of a dumped tree. */
export interface DumpedProcess {
  readonly pid: number;
  readonly ppid: number;
  /** Thread ids (the first is the process itself). */
  readonly threads: readonly number[];
  /** Command name (`comm`), if core-<pid>.img could be read. */
  readonly comm?: string;
  /** Pages dumped for this process (pagemap), if it could be read. */
  readonly pages?: number;
}

/** What {@link readCriuImages} found. */
export interface CriuSummary {
  readonly processes: readonly DumpedProcess[];
  /** Bytes of memory pages dumped (sum of `pages-*.img`). */
  readonly memoryBytes: number;
  /** Number of image files and their total size. */
  readonly files: number;
  readonly bytes: number;
}

const MAX_READ = 16 << 20;
const PAGE = 4096;

type Field = { n: number; wire: number; value: number | bigint | Uint8Array };

/**
 * The top-level fields of one protobuf message (varints as numbers, length-delimited as bytes).
 *
 * @example
 * ```ts
 * import { decodeFields } from "./images.ts";
 * const f = decodeFields(new Uint8Array([0x08, 0x96, 0x01, 0x32, 0x02, 0x68, 0x69]));
 * if (f[0]!.value !== 150 || new TextDecoder().decode(f[1]!.value as Uint8Array) !== "hi") throw new Error();
 * ```
 */
export function decodeFields(buf: Uint8Array): Field[] {
  const out: Field[] = [];
  let at = 0;
  while (at < buf.length) {
    const [tag, next] = readVarint(buf, at);
    at = next;
    const n = Number(tag >> 3n);
    const wire = Number(tag & 7n);
    if (wire === 0) {
      const [v, after] = readVarint(buf, at);
      at = after;
      out.push({ n, wire, value: v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v });
    } else if (wire === 2) {
      const [len, after] = readVarint(buf, at);
      const end = after + Number(len);
      if (end > buf.length) throw new Error("truncated field");
      out.push({ n, wire, value: buf.subarray(after, end) });
      at = end;
    } else if (wire === 1) {
      at += 8;
    } else if (wire === 5) {
      at += 4;
    } else {
      throw new Error(`unsupported wire type ${wire}`);
    }
  }
  return out;
}

/** The entries (protobuf messages) of a CRIU image file's bytes, after its two magics. */
export function imageEntries(bytes: Uint8Array): Uint8Array[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: Uint8Array[] = [];
  let at = 8; // IMG_COMMON_MAGIC (or IMG_SERVICE_MAGIC) and the image's own magic
  while (at + 4 <= bytes.length) {
    const len = view.getUint32(at, true);
    at += 4;
    if (at + len > bytes.length) throw new Error("truncated entry");
    out.push(bytes.subarray(at, at + len));
    at += len;
  }
  return out;
}

function readImage(dir: string, name: string): Uint8Array | undefined {
  try {
    return readRegularFile(`${dir}/${name}`, MAX_READ);
  } catch {
    return undefined;
  }
}

const numbers = (fields: Field[], n: number) =>
  fields.flatMap((f) => {
    if (f.n !== n) return [];
    if (f.wire === 0) return [Number(f.value)];
    // packed repeated varints
    const out: number[] = [];
    const buf = f.value as Uint8Array;
    for (let at = 0; at < buf.length;) {
      const [v, next] = readVarint(buf, at);
      out.push(Number(v));
      at = next;
    }
    return out;
  });

/** The process tree of `pstree.img` bytes: pid, ppid, threads. */
export function parsePstree(bytes: Uint8Array): { pid: number; ppid: number; threads: number[] }[] {
  return imageEntries(bytes).map((entry) => {
    const f = decodeFields(entry);
    return { pid: numbers(f, 1)[0] ?? 0, ppid: numbers(f, 2)[0] ?? 0, threads: numbers(f, 5) };
  });
}

/** The command name (`core_entry.tc.comm`) of `core-<pid>.img` bytes. */
export function parseCoreComm(bytes: Uint8Array): string | undefined {
  const entry = imageEntries(bytes)[0];
  if (entry === undefined) return undefined;
  const tc = decodeFields(entry).find((f) => f.n === 3 && f.wire === 2);
  if (tc === undefined) return undefined;
  const comm = decodeFields(tc.value as Uint8Array).find((f) => f.n === 6 && f.wire === 2);
  return comm === undefined ? undefined : new TextDecoder().decode(comm.value as Uint8Array);
}

const PE_PARENT = 1;

/** Pages a `pagemap-<pid>.img` says were dumped for the process (entries not left in a parent image). */
export function parsePagemapPages(bytes: Uint8Array): number {
  const [, ...entries] = imageEntries(bytes); // the first is pagemap_head
  let pages = 0;
  for (const entry of entries) {
    const f = decodeFields(entry);
    const flags = numbers(f, 4)[0] ?? 0;
    const inParent = numbers(f, 3)[0] ?? 0;
    // pages_nr (5, uint64) replaced nr_pages (2), which newer CRIU writes as 0
    if ((flags & PE_PARENT) === 0 && inParent === 0) pages += numbers(f, 5)[0] ?? numbers(f, 2)[0] ?? 0;
  }
  return pages;
}

/** Reads the CRIU image directory `dir` (see the module doc); `undefined` if it is not a directory. */
export function readCriuImages(dir: string): CriuSummary | undefined {
  let names: string[];
  try {
    if (!Deno.lstatSync(dir).isDirectory) return undefined;
    names = [...Deno.readDirSync(dir)].filter((e) => e.isFile).map((e) => e.name);
  } catch {
    return undefined;
  }
  let bytes = 0;
  let memoryBytes = 0;
  for (const name of names) {
    try {
      const size = Deno.lstatSync(`${dir}/${name}`).size;
      bytes += size;
      if (/^pages-\d+\.img$/.test(name)) memoryBytes += size;
    } catch { /* vanished */ }
  }
  let processes: DumpedProcess[] = [];
  const pstree = readImage(dir, "pstree.img");
  try {
    if (pstree !== undefined) {
      processes = parsePstree(pstree).map((p) => {
        let comm: string | undefined;
        let pages: number | undefined;
        try {
          const core = readImage(dir, `core-${p.pid}.img`);
          if (core !== undefined) comm = parseCoreComm(core);
        } catch { /* unreadable core image */ }
        try {
          const pagemap = readImage(dir, `pagemap-${p.pid}.img`);
          if (pagemap !== undefined) pages = parsePagemapPages(pagemap);
        } catch { /* unreadable pagemap */ }
        return { ...p, ...(comm !== undefined ? { comm } : {}), ...(pages !== undefined ? { pages } : {}) };
      });
    }
  } catch { /* a damaged pstree: no tree */ }
  return { processes, memoryBytes, files: names.length, bytes };
}

/** Bytes of `pages` memory pages. */
export const pageBytes = (pages: number): number => pages * PAGE;
