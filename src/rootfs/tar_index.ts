/**
 * Lists the members of a tar archive (POSIX pax, ustar and GNU formats, as GNU tar writes
 * them) by reading its headers only: the data of every member is skipped with a seek, so a
 * layer of many gigabytes is listed in the time it takes to read its headers.
 *
 * Guarantees: each member's name is the one GNU tar extracts it under (pax `path` and
 * `GNU.sparse.name`, GNU long names, the ustar prefix), exactly, as a string; a name or link
 * target that is not UTF-8 refuses the archive (ARCH could not check the path it names).
 * Every header's checksum is verified and a member whose data runs past the end of the file
 * refuses the archive, so a damaged archive is refused before anything is extracted from it.
 * Listing stops where GNU tar stops: at the first zero block or at the end of the file.
 * Not supported (refused): multi-volume and incremental-dump members.
 */
import { ArchError } from "../util/errors.ts";
import { openRegularFile } from "../util/dirfd.ts";

/** What a member is. */
export type MemberKind = "file" | "hardlink" | "symlink" | "chardev" | "blockdev" | "directory" | "fifo";

/** One member of a tar archive as its headers describe it (its data is not read). */
export interface TarMember {
  /** The name GNU tar extracts the member under (directories may end with `/`). */
  readonly name: string;
  readonly kind: MemberKind;
  /** Target of a hard link or symlink; `""` for other kinds. */
  readonly linkName: string;
  /**
   * Bytes of data the archive stores for the member: for a sparse file its data (and sparse
   * map), never its holes; 0 for everything but files.
   */
  readonly dataSize: number;
  readonly devMajor: number;
  readonly devMinor: number;
  /** Extended attributes (pax `SCHILY.xattr.*`), values decoded as UTF-8. */
  readonly xattrs: Readonly<Record<string, string>>;
}

/** A tar archive ARCH cannot read: damaged, or of a kind it does not take. */
export class TarFormatError extends ArchError {
  constructor(message: string) {
    super(message, "tar-format");
  }
}

const BLOCK = 512;
const KINDS: Readonly<Record<string, MemberKind>> = {
  "0": "file",
  "\0": "file",
  "7": "file",
  "S": "file",
  "1": "hardlink",
  "2": "symlink",
  "3": "chardev",
  "4": "blockdev",
  "5": "directory",
  "6": "fifo",
};

const strictUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const lenientUtf8 = new TextDecoder("utf-8", { ignoreBOM: true });

/** Bytes up to the first NUL. */
function cBytes(bytes: Uint8Array): Uint8Array {
  const end = bytes.indexOf(0);
  return end === -1 ? bytes : bytes.subarray(0, end);
}

function pathText(bytes: Uint8Array, what: string): string {
  try {
    return strictUtf8.decode(bytes);
  } catch {
    throw new TarFormatError(`the archive has a ${what} that is not UTF-8: "${lenientUtf8.decode(bytes)}"`);
  }
}

/** A numeric header field: octal text, or GNU's base-256 (first byte's high bit set). */
function numeric(field: Uint8Array): number {
  if (field.length > 0 && (field[0]! & 0x80) !== 0) {
    if (field[0] === 0xff) throw new TarFormatError("the archive has a negative numeric field");
    let value = BigInt(field[0]! & 0x7f);
    for (const byte of field.subarray(1)) value = (value << 8n) | BigInt(byte);
    if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw new TarFormatError("the archive has a numeric field too large");
    return Number(value);
  }
  const text = new TextDecoder().decode(cBytes(field)).trim();
  if (text === "") return 0;
  if (!/^[0-7]+$/.test(text)) throw new TarFormatError(`the archive has a malformed numeric field "${text}"`);
  return parseInt(text, 8);
}

function checksumOk(header: Uint8Array): boolean {
  const stored = numeric(header.subarray(148, 156));
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const byte = i >= 148 && i < 156 ? 0x20 : header[i]!;
    unsigned += byte;
    signed += byte > 127 ? byte - 256 : byte;
  }
  return stored === unsigned || stored === signed;
}

/** The records of a pax extended header (`"<len> <key>=<value>\n"`), values as bytes. */
export function parsePaxRecords(data: Uint8Array): Map<string, Uint8Array> {
  const records = new Map<string, Uint8Array>();
  let at = 0;
  while (at < data.length) {
    if (data[at] === 0) break; // padding
    const space = data.indexOf(0x20, at);
    const length = space === -1 ? NaN : Number(new TextDecoder().decode(data.subarray(at, space)));
    if (!Number.isSafeInteger(length) || length <= space - at + 1 || at + length > data.length) {
      throw new TarFormatError("the archive has a malformed pax header");
    }
    const record = data.subarray(space + 1, at + length - 1); // without the trailing newline
    const equals = record.indexOf(0x3d);
    if (equals === -1 || data[at + length - 1] !== 0x0a) {
      throw new TarFormatError("the archive has a malformed pax header");
    }
    records.set(lenientUtf8.decode(record.subarray(0, equals)), record.subarray(equals + 1));
    at += length;
  }
  return records;
}

/** Reads a file at arbitrary offsets through one window, so consecutive small reads cost one syscall. */
class Reader {
  #window = new Uint8Array(0);
  #windowAt = 0;
  constructor(readonly file: Deno.FsFile, readonly size: number) {}

  /** `length` bytes at `offset`; throws if the file ends before. */
  read(offset: number, length: number): Uint8Array {
    if (offset + length > this.size) throw new TarFormatError("the archive is truncated");
    if (offset < this.#windowAt || offset + length > this.#windowAt + this.#window.length) {
      const buffer = new Uint8Array(Math.max(length, 64 * 1024));
      this.file.seekSync(offset, Deno.SeekMode.Start);
      let filled = 0;
      while (filled < Math.min(buffer.length, this.size - offset)) {
        const n = this.file.readSync(buffer.subarray(filled));
        if (n === null || n === 0) break;
        filled += n;
      }
      if (filled < length) throw new TarFormatError("the archive is truncated");
      this.#window = buffer.subarray(0, filled);
      this.#windowAt = offset;
    }
    return this.#window.subarray(offset - this.#windowAt, offset - this.#windowAt + length);
  }
}

const padded = (size: number) => Math.ceil(size / BLOCK) * BLOCK;

/**
 * The members of the tar archive at `path`, in archive order. Throws {@link TarFormatError}
 * for a damaged or unsupported archive. Requires read access to `path`.
 *
 * @example
 * ```ts
 * import { listTarMembers } from "./tar_index.ts";
 * const dir = Deno.makeTempDirSync();
 * Deno.writeTextFileSync(`${dir}/a`, "hello");
 * await new Deno.Command("tar", { args: ["-C", dir, "-cf", `${dir}.tar`, "./a"] }).output();
 * const [member] = listTarMembers(`${dir}.tar`);
 * if (member?.name !== "./a" || member.kind !== "file" || member.dataSize !== 5) throw new Error();
 * Deno.removeSync(dir, { recursive: true });
 * Deno.removeSync(`${dir}.tar`);
 * ```
 */
export function listTarMembers(path: string): TarMember[] {
  using file = openRegularFile(path); // never a FIFO or link planted in a checkpoint
  const reader = new Reader(file, file.statSync().size);
  const members: TarMember[] = [];
  let at = 0;
  let pax = new Map<string, Uint8Array>();
  let longName: Uint8Array | undefined;
  let longLink: Uint8Array | undefined;
  while (at + BLOCK <= reader.size) {
    const header = reader.read(at, BLOCK).slice();
    if (header.every((b) => b === 0)) break;
    if (!checksumOk(header)) throw new TarFormatError(`the archive has a damaged header at byte ${at}`);
    const type = String.fromCharCode(header[156]!);
    let size = numeric(header.subarray(124, 136));
    at += BLOCK;
    if (type === "x" || type === "g" || type === "L" || type === "K") {
      const data = reader.read(at, size).slice();
      at += padded(size);
      if (type === "x") pax = parsePaxRecords(data);
      if (type === "L") longName = cBytes(data);
      if (type === "K") longLink = cBytes(data);
      continue; // "g" (global) carries nothing ARCH's checks need
    }
    const kind = KINDS[type];
    if (kind === undefined) throw new TarFormatError(`the archive has a member of unsupported type "${type}"`);
    if (type === "S") { // old GNU sparse: extension headers follow while "isextended" is set
      let extended = header[482] !== 0;
      while (extended) {
        extended = reader.read(at, BLOCK)[504] !== 0;
        at += BLOCK;
      }
    }
    const paxSize = pax.get("size");
    if (paxSize !== undefined) size = Number(lenientUtf8.decode(paxSize));
    if (!Number.isSafeInteger(size) || size < 0) throw new TarFormatError("the archive has a malformed member size");
    const ustar = lenientUtf8.decode(header.subarray(257, 263)) === "ustar\0";
    const prefix = ustar ? cBytes(header.subarray(345, 500)) : new Uint8Array(0);
    const shortName = cBytes(header.subarray(0, 100));
    const nameBytes = pax.get("GNU.sparse.name") ?? pax.get("path") ?? longName ??
      (prefix.length > 0 ? new Uint8Array([...prefix, 0x2f, ...shortName]) : shortName);
    const linkBytes = pax.get("linkpath") ?? longLink ?? cBytes(header.subarray(157, 257));
    const xattrs: Record<string, string> = {};
    for (const [key, value] of pax) {
      if (key.startsWith("SCHILY.xattr.")) xattrs[key.slice("SCHILY.xattr.".length)] = lenientUtf8.decode(value);
    }
    if (kind !== "file" && size !== 0) throw new TarFormatError(`the archive has a ${kind} member that carries data`);
    if (size > 0) reader.read(at + size - 1, 1); // the data must be there
    at += padded(size);
    members.push({
      name: pathText(nameBytes, "member name"),
      kind,
      linkName: kind === "hardlink" || kind === "symlink" ? pathText(linkBytes, "link target") : "",
      dataSize: size,
      devMajor: numeric(header.subarray(329, 337)),
      devMinor: numeric(header.subarray(337, 345)),
      xattrs,
    });
    pax = new Map();
    longName = undefined;
    longLink = undefined;
  }
  return members;
}
