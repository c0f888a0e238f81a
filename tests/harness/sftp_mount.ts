/**
 * A real network file system on this machine, without network namespaces: an SFTP server on
 * loopback (`socat` accepting TCP on 127.0.0.1:<port> and running OpenSSH's `sftp-server` for
 * each connection, no sshd) serving a directory, mounted with `sshfs -o directport` (FUSE) in
 * the host's own mount namespace. For benchmarks and single-node tests; the two-node version,
 * with a mount per node in its own namespaces, is tests/harness/nodes.ts.
 *
 * Both processes stay our children (sshfs runs in the foreground, `-f`): their pids give
 * their I/O counters ({@link SftpMount.clientIo}, {@link SftpMount.serverIo}: e.g. what the
 * server wrote to its disk); {@link SftpMount.serverTraffic} counts the bytes on the wire.
 *
 * Guarantees: `start` either returns a mounted file system or throws after undoing what it
 * did; `stop` is best-effort and complete (mount, client, server and the per-connection
 * server processes) and returns what it could not do instead of throwing; a second call does
 * nothing. The server's and the client's stderr are kept in `<logDir>/{sftp-server,sshfs}.log`
 * and their last lines are quoted in errors. Requires root, sshfs, socat, openssh-sftp-server,
 * iproute2 (`ss`).
 */

import { runCommand } from "../../src/process/exec.ts";
import { terminate } from "./stack.ts";

const SFTP_SERVER = "/usr/lib/openssh/sftp-server";
const PATH = "/usr/sbin:/usr/bin:/sbin:/bin";

/**
 * Default sshfs `-o` options (besides `directport`): `allow_other` (non-root container
 * processes may use bind mounts of it); `max_conns=4`: four SFTP connections, files spread
 * over them (sshfs 3.7: a single connection serialises every request of every file);
 * `max_read`/`max_write=131072`: 128 KiB per SFTP request instead of sshfs's 32 KiB
 * (OpenSSH's sftp-server takes messages up to 256 KiB). FUSE 3 always has "big writes".
 */
export const SFTP_MOUNT_OPTIONS: readonly string[] = [
  "allow_other",
  "max_conns=4",
  "max_read=131072",
  "max_write=131072",
];

export interface SftpMountOptions {
  /** The directory the SFTP server serves (created 0755 if missing). */
  readonly export: string;
  /** Where it is mounted (created 0755 if missing). */
  readonly mountPoint: string;
  /** Where the server's and the client's stderr go (default: the parent of `mountPoint`). */
  readonly logDir?: string;
  /** sshfs `-o` options besides `directport` (default {@link SFTP_MOUNT_OPTIONS}). */
  readonly sshfsOptions?: readonly string[];
  /** TCP port on 127.0.0.1 (default: a free one). */
  readonly port?: number;
}

/** I/O counters of a process tree, from `/proc/<pid>/io` (bytes). */
export interface IoCounters {
  /** Bytes passed to read-like system calls (files, sockets, pipes, /dev/fuse). */
  rchar: number;
  /** Bytes passed to write-like system calls. */
  wchar: number;
  /** Bytes read from storage (not from the page cache). */
  readBytes: number;
  /** Bytes dirtied for storage, less those truncated away before writeback. */
  writeBytes: number;
}

const ZERO: IoCounters = { rchar: 0, wchar: 0, readBytes: 0, writeBytes: 0 };

/**
 * `/proc/<pid>/io` of a process: its threads and its children that it has reaped (the kernel
 * adds a reaped child's counters to its parent's). Zeros if the process is gone.
 */
export function processIo(pid: number | "self"): IoCounters {
  let text: string;
  try {
    text = Deno.readTextFileSync(`/proc/${pid}/io`);
  } catch {
    return { ...ZERO };
  }
  const field = (name: string) => Number(new RegExp(`^${name}: (\\d+)$`, "m").exec(text)?.[1] ?? 0);
  return {
    rchar: field("rchar"),
    wchar: field("wchar"),
    readBytes: field("read_bytes"),
    writeBytes: field("write_bytes") - field("cancelled_write_bytes"),
  };
}

/** `a + b` (or `a - b` with `sign` -1), field by field. */
export function addIo(a: IoCounters, b: IoCounters, sign = 1): IoCounters {
  return {
    rchar: a.rchar + sign * b.rchar,
    wchar: a.wchar + sign * b.wchar,
    readBytes: a.readBytes + sign * b.readBytes,
    writeBytes: a.writeBytes + sign * b.writeBytes,
  };
}

/** Live descendants of `pid` (by the parent pid in /proc/<n>/stat). */
export function descendants(pid: number): number[] {
  const parents = new Map<number, number[]>();
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      const stat = Deno.readTextFileSync(`/proc/${entry.name}/stat`);
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      parents.set(ppid, [...(parents.get(ppid) ?? []), Number(entry.name)]);
    } catch { /* gone */ }
  }
  const out: number[] = [];
  const walk = (p: number) => {
    for (const child of parents.get(p) ?? []) {
      out.push(child);
      walk(child);
    }
  };
  walk(pid);
  return out;
}

/** Counters of a process and its live descendants: ever-growing while the tree lives. */
function treeIo(pid: number): IoCounters {
  return [pid, ...descendants(pid)].reduce((sum, p) => addIo(sum, processIo(p)), { ...ZERO });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function tail(file: string): string {
  try {
    return Deno.readTextFileSync(file).trim().split("\n").slice(-3).join(" | ");
  } catch {
    return "";
  }
}

/** A child with a clean environment, stdin/stdout closed, stderr appended to `log`. */
function spawn(cmd: string, args: string[], log: string): Deno.ChildProcess {
  const file = Deno.openSync(log, { create: true, append: true });
  const options = {
    args,
    clearEnv: true,
    env: { PATH },
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  } as const;
  const child = cmd === "socat"
    ? new Deno.Command("socat", options).spawn()
    : new Deno.Command("sshfs", options).spawn();
  child.stderr.pipeTo(file.writable).catch(() => {});
  return child;
}

function mounted(mountPoint: string): boolean {
  // Mount points in mountinfo have spaces etc. octal-escaped; ours have none (checked in start).
  return Deno.readTextFileSync("/proc/self/mountinfo").split("\n")
    .some((l) => l.split(" ")[4] === mountPoint && l.includes(" - fuse.sshfs "));
}

async function freePort(): Promise<number> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  await sleep(0);
  return port;
}

export class SftpMount implements AsyncDisposable {
  /** The sshfs `-o` options in use (besides `directport`). */
  readonly sshfsOptions: readonly string[];
  #server: Deno.ChildProcess | undefined;
  #client: Deno.ChildProcess | undefined;
  #workers: number[] = [];
  #stopped = false;

  private constructor(
    /** The directory the server serves (the host's view of the file system's contents). */
    readonly exportDir: string,
    readonly mountPoint: string,
    readonly port: number,
    readonly logDir: string,
    options: readonly string[],
  ) {
    this.sshfsOptions = options;
  }

  /** Starts the server, mounts it; on failure stops what it started and throws. */
  static async start(options: SftpMountOptions): Promise<SftpMount> {
    for (const path of [options.export, options.mountPoint]) {
      // socat's address syntax and mountinfo's escaping: keep paths plain.
      if (!/^\/[A-Za-z0-9._/-]+$/.test(path)) throw new Error(`unsupported path for an SFTP mount: "${path}"`);
    }
    Deno.mkdirSync(options.export, { recursive: true, mode: 0o755 });
    Deno.mkdirSync(options.mountPoint, { recursive: true, mode: 0o755 });
    const logDir = options.logDir ?? (options.mountPoint.replace(/\/+[^/]+\/*$/, "") || "/");
    const mount = new SftpMount(
      options.export,
      options.mountPoint,
      options.port ?? await freePort(),
      logDir,
      options.sshfsOptions ?? SFTP_MOUNT_OPTIONS,
    );
    try {
      await mount.#startServer();
      await mount.#mount();
    } catch (error) {
      const problems = await mount.stop();
      const cleanup = problems.length > 0 ? ` (cleanup incomplete: ${problems.join("; ")})` : "";
      throw new Error(`cannot mount the SFTP file system: ${message(error)}${cleanup}`);
    }
    return mount;
  }

  /** pid of the FUSE client (sshfs), `undefined` once stopped. */
  get clientPid(): number | undefined {
    return this.#client?.pid;
  }

  /** pid of the listening socat, `undefined` once stopped. */
  get serverPid(): number | undefined {
    return this.#server?.pid;
  }

  /**
   * The FUSE client's I/O. Its `wchar` mixes what it sent to the server with the data it
   * hands back to readers through /dev/fuse: for bytes on the wire, see {@link serverTraffic}.
   */
  clientIo(): IoCounters {
    return this.#client === undefined ? { ...ZERO } : treeIo(this.#client.pid);
  }

  /**
   * The server's I/O: the listening socat, the per-connection socat relays and sftp-server
   * processes, live or reaped. `writeBytes` is what the server dirtied on its disk.
   */
  serverIo(): IoCounters {
    return this.#server === undefined ? { ...ZERO } : treeIo(this.#server.pid);
  }

  /**
   * Bytes over the SFTP connections, from the kernel's TCP counters of the server's end
   * (`ss -ti`: `bytes_received`, `bytes_acked`): `received` is what clients sent (requests
   * and the data they write), `sent` what the server answered (the data they read). Sums
   * over the connections open now: take differences while the mount stays up (sshfs keeps
   * its connections).
   */
  async serverTraffic(): Promise<{ received: number; sent: number }> {
    const r = await runCommand({
      cmd: "ss",
      args: ["-tinH", "state", "established", "sport", "=", `:${this.port}`],
      timeoutMs: 10_000,
    });
    if (r.code !== 0) throw new Error(`ss: ${r.stderr.trim()}`);
    const sum = (field: string) =>
      [...r.stdout.matchAll(new RegExp(`\\b${field}:(\\d+)`, "g"))].reduce((n, m) => n + Number(m[1]), 0);
    return { received: sum("bytes_received"), sent: sum("bytes_acked") };
  }

  async #startServer(): Promise<void> {
    const log = `${this.logDir}/sftp-server.log`;
    this.#server = spawn("socat", [
      `TCP-LISTEN:${this.port},bind=127.0.0.1,fork,reuseaddr`,
      `EXEC:${SFTP_SERVER} -e -d ${this.exportDir}`,
    ], log);
    const pid = this.#server.pid;
    const port = this.port.toString(16).toUpperCase().padStart(4, "0");
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      try {
        const table = Deno.readTextFileSync(`/proc/${pid}/net/tcp`);
        if (table.split("\n").some((l) => l.includes(`0100007F:${port} 00000000:0000 0A `))) return;
      } catch { /* starting or gone */ }
      await sleep(20);
    }
    throw new Error(`the SFTP server did not listen on 127.0.0.1:${this.port} (${log}: ${tail(log)})`);
  }

  async #mount(): Promise<void> {
    const log = `${this.logDir}/sshfs.log`;
    const child = spawn("sshfs", [
      "-f",
      "-o",
      [`directport=${this.port}`, ...this.sshfsOptions].join(","),
      `127.0.0.1:${this.exportDir}`,
      this.mountPoint,
    ], log);
    this.#client = child;
    let exited = false;
    child.status.then(() => exited = true);
    const deadline = Date.now() + 15_000;
    while (Date.now() < deadline && !exited) {
      if (mounted(this.mountPoint)) {
        if (this.#server !== undefined) this.#workers = descendants(this.#server.pid);
        return;
      }
      await sleep(20);
    }
    throw new Error(`sshfs did not mount ${this.mountPoint}${exited ? " (it exited)" : ""} (${log}: ${tail(log)})`);
  }

  /**
   * Unmounts (lazily: a busy mount is detached), ends the client, the server and the server
   * processes of its connections. Never throws: returns what it could not do.
   */
  async stop(): Promise<string[]> {
    if (this.#stopped) return [];
    this.#stopped = true;
    const problems: string[] = [];
    try {
      if (mounted(this.mountPoint)) {
        const r = await runCommand({ cmd: "umount", args: ["-l", this.mountPoint], timeoutMs: 30_000 });
        if (r.code !== 0) problems.push(`umount ${this.mountPoint}: ${r.stderr.trim()}`);
      }
    } catch (error) {
      problems.push(`umount ${this.mountPoint}: ${message(error)}`);
    }
    try {
      await terminate(this.#client);
      this.#client = undefined;
    } catch (error) {
      problems.push(`stop sshfs: ${message(error)}`);
    }
    if (this.#server !== undefined) {
      // The connections' processes (socat relays, sftp-server) end with their connection;
      // they are ours: end any still there once the listener is gone.
      const workers = [...new Set([...this.#workers, ...descendants(this.#server.pid)])];
      try {
        await terminate(this.#server);
        this.#server = undefined;
      } catch (error) {
        problems.push(`stop the SFTP server: ${message(error)}`);
      }
      await sleep(100);
      for (const pid of workers) {
        try {
          const cmdline = Deno.readTextFileSync(`/proc/${pid}/cmdline`);
          if (!cmdline.includes(this.exportDir)) continue; // gone, and the pid reused
          Deno.kill(pid, "SIGKILL");
          problems.push(`server process ${pid} outlived its connection (killed)`);
        } catch { /* gone */ }
      }
    }
    try {
      if (mounted(this.mountPoint)) problems.push(`${this.mountPoint} is still mounted`);
    } catch { /* no mountinfo */ }
    return problems;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    const problems = await this.stop();
    if (problems.length > 0) console.error(`SFTP mount: cleanup incomplete: ${problems.join("; ")}`);
  }
}
