/**
 * Shared-FS benchmark: ARCH checkpoint and restore of the 512 MiB workload with the
 * checkpoint on a real network file system (shared-FS mode, `ARCH_SHAREDFS_HOST_PATH`)
 * against local disk (local mode, the host config's `defaultCheckpointRoot`), in one run,
 * rounds interleaved (local, shared, local, shared...), medians reported.
 *
 * The network file system is sshfs (FUSE) over an SFTP server on loopback
 * (tests/harness/sftp_mount.ts, its default options `SFTP_MOUNT_OPTIONS`, or the comma-separated
 * `-o` options of ARCH_BENCH_SSHFS_OPTIONS besides `directport`); the server's directory is
 * on the same disk as the local checkpoint root, so the difference is the network file
 * system (and shared-FS mode's work directory and OCI hooks), not the disk.
 *
 * Each round: a container (the lab's raw runc root, through the ARCH wrapper) runs
 * `workload --mem 512`; `arch checkpoint` is timed; then a new container of the same key is
 * created and started through the wrapper, timed until it runs (restore on create). Bytes:
 * - committed: the size of the committed checkpoint directory (`<root>/<scope>/<key>/ckpt-*`);
 * - sent to the file system during the checkpoint: local disk, the bytes the checkpoint's
 *   process tree (arch, runc, CRIU: reaped children count in our /proc/self/io) dirtied for
 *   storage (`write_bytes - cancelled_write_bytes`); shared FS, the bytes the SFTP server
 *   received over TCP (the kernel's socket counters, `ss -ti`: SFTP requests with the data),
 *   with, as extras, what the server wrote to its disk (its process tree's `write_bytes`)
 *   and what it sent back to the client during the checkpoint and during the restore (reads).
 *   (The tree's own `write_bytes` cannot tell the two modes apart: the kernel counts writes
 *   into a FUSE file there too.)
 * Caches are warm in both modes (the restore reads what the checkpoint just wrote; for the
 * shared FS through the server, from the server's page cache).
 * Requires root, runc, CRIU, sshfs, socat, openssh-sftp-server and dist/ built.
 */

import { runcArgv } from "../../src/runc/client.ts";
import { ARCH, ARCH_RUNC, RUNC } from "../integration/_env.ts";
import {
  type Lab,
  labTarget,
  makeBundle,
  makeLab,
  removeContainer,
  startWorkload,
  timed,
  unmountBundle,
} from "./checkpoint.ts";
import { addIo, type IoCounters, processIo, SftpMount } from "../harness/sftp_mount.ts";
import { mustRun, runCommand } from "../../src/process/exec.ts";

type Emit = (name: string, value: number, unit: string, baseline: number, extra?: Record<string, unknown>) => void;

const MIB = 512;
const WORKDIR_IN_CONTAINER = "/work";

type Mode = "local" | "shared";

interface Round {
  checkpoint: number;
  restore: number;
  /** Size of the committed checkpoint directory, bytes. */
  committed: number;
  /** Bytes sent to the checkpoint's file system during the checkpoint (see the module doc). */
  sent: number;
  /** Shared FS: bytes the SFTP server dirtied on its disk during the checkpoint. */
  serverDisk: number;
  /** Shared FS: bytes the SFTP server sent to the client during the checkpoint (reads). */
  checkpointReceived: number;
  /** Shared FS: bytes the SFTP server sent to the client during the restore (reads). */
  restoreReceived: number;
  /** ARCH's own phase timings (ms): the manifest's for the checkpoint, the log's for the restore. */
  checkpointPhases: Record<string, number>;
  restorePhases: Record<string, number>;
}

type NumericField = Exclude<keyof Round, "checkpointPhases" | "restorePhases">;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** Total size of the regular files below `dir` (apparent sizes, symlinks not followed). */
function treeSize(dir: string): number {
  let total = 0;
  for (const entry of Deno.readDirSync(dir)) {
    const path = `${dir}/${entry.name}`;
    if (entry.isDirectory) total += treeSize(path);
    else if (entry.isFile) total += Deno.lstatSync(path).size;
  }
  return total;
}

function addEnv(bundle: string, env: Record<string, string>): void {
  const spec = JSON.parse(Deno.readTextFileSync(`${bundle}/config.json`));
  spec.process.env.push(...Object.entries(env).map(([k, v]) => `${k}=${v}`));
  Deno.writeTextFileSync(`${bundle}/config.json`, JSON.stringify(spec));
}

class SharedFsLab {
  readonly scope: string;
  readonly containers = new Set<string>();
  readonly sharedPath: string;

  constructor(readonly lab: Lab, readonly mount: SftpMount) {
    // The lab drives runc directly: ARCH's engine namespace is the runc root's last element.
    this.scope = lab.root.split("/").pop()!;
    this.sharedPath = `${mount.mountPoint}/arch`;
  }

  /** Where a key's data lives as the host sees it (for the shared FS: the server's directory). */
  keyDirs(mode: Mode, key: string): string[] {
    if (mode === "local") return [`${this.lab.dir}/ckpt/${this.scope}/${key}`];
    const served = `${this.mount.exportDir}/arch`;
    return [`${served}/checkpoint/${this.scope}/${key}`, `${served}/work/${this.scope}/${key}`];
  }

  env(mode: Mode): Record<string, string> {
    return mode === "local" ? {} : {
      ARCH_SHAREDFS_HOST_PATH: this.sharedPath,
      ARCH_WORKDIR_CONTAINER_PATH: WORKDIR_IN_CONTAINER,
    };
  }

  async bundle(name: string, key: string, mode: Mode): Promise<string> {
    const bundle = await makeBundle(this.lab, name, MIB, key);
    addEnv(bundle, this.env(mode));
    return bundle;
  }

  async round(mode: Mode, n: number): Promise<Round> {
    const { lab } = this;
    const key = `sfs-${mode}-${n}`;
    const first = `${key}-a`, second = `${key}-b`;
    const io = async () => ({
      self: processIo("self"),
      server: this.mount.serverIo(),
      wire: await this.mount.serverTraffic(),
    });
    const delta = (a: IoCounters, b: IoCounters) => addIo(b, a, -1);

    const bundleA = await this.bundle(first, key, mode);
    this.containers.add(first);
    await startWorkload(lab, ARCH_RUNC, bundleA, first);
    const before = await io();
    const checkpoint = await timed(() => mustRun({ cmd: ARCH, args: ["checkpoint", first], env: lab.env }));
    const after = await io();
    const [keyDir] = this.keyDirs(mode, key);
    const current = Deno.readLinkSync(`${keyDir}/current`);
    const committed = treeSize(`${keyDir}/${current}`);
    const checkpointPhases = JSON.parse(Deno.readTextFileSync(`${keyDir}/${current}/manifest.json`)).timings;
    await mustRun({ cmd: ARCH_RUNC, args: runcArgv.forceDelete(labTarget(lab, first)), env: lab.env });
    this.containers.delete(first);
    await unmountBundle(bundleA);

    const bundleB = await this.bundle(second, key, mode);
    this.containers.add(second);
    const beforeRestore = await io();
    const restore = await timed(async () => {
      await mustRun({
        cmd: ARCH_RUNC,
        args: runcArgv.create(labTarget(lab, second), bundleB, `${bundleB}/pid`),
        env: lab.env,
        stdio: "null", // the restored process keeps the create's stdout: a pipe to us would never end
      });
      await mustRun({ cmd: ARCH_RUNC, args: runcArgv.start(labTarget(lab, second)), env: lab.env });
    });
    const afterRestore = await io();
    const state = JSON.parse((await mustRun({ cmd: RUNC, args: runcArgv.state(labTarget(lab, second)) })).stdout);
    if (state.status !== "running") throw new Error(`restored container ${second} is ${state.status}`);
    // Restored, not started afresh after a failed restore: the checkpoint is marked consumed.
    try {
      Deno.statSync(`${keyDir}/${current}/consumed`);
    } catch {
      throw new Error(
        `container ${second} runs, but checkpoint ${keyDir}/${current} was not restored (see ${lab.dir}/log/arch.log)`,
      );
    }
    await mustRun({ cmd: ARCH_RUNC, args: runcArgv.forceDelete(labTarget(lab, second)), env: lab.env });
    this.containers.delete(second);
    await unmountBundle(bundleB);
    for (const dir of this.keyDirs(mode, key)) Deno.removeSync(dir, { recursive: true });

    const restored = Deno.readTextFileSync(`${lab.dir}/log/arch.log`).split("\n")
      .flatMap((l) => {
        try {
          return [JSON.parse(l)];
        } catch {
          return [];
        }
      })
      .findLast((r) => r.msg === "restored from checkpoint" && r.id === second);
    return {
      checkpoint,
      restore,
      checkpointPhases,
      restorePhases: restored?.timings ?? {},
      committed,
      sent: mode === "local" ? delta(before.self, after.self).writeBytes : after.wire.received - before.wire.received,
      serverDisk: delta(before.server, after.server).writeBytes,
      checkpointReceived: after.wire.sent - before.wire.sent,
      restoreReceived: afterRestore.wire.sent - beforeRestore.wire.sent,
    };
  }
}

/** Unmounts (lazily) whatever is still mounted below `dir`, deepest first. */
async function unmountBelow(dir: string): Promise<void> {
  const points = Deno.readTextFileSync("/proc/self/mountinfo").split("\n")
    .map((l) => l.split(" ")[4] ?? "")
    .filter((p) => p.startsWith(`${dir}/`))
    .sort((a, b) => b.length - a.length);
  for (const point of points) await runCommand({ cmd: "umount", args: ["-l", point] });
}

export async function sharedFsBench(rounds: number, emit: Emit): Promise<void> {
  const lab = await makeLab();
  let mount: SftpMount | undefined;
  let bench: SharedFsLab | undefined;
  try {
    const options = Deno.env.get("ARCH_BENCH_SSHFS_OPTIONS");
    mount = await SftpMount.start({
      export: `${lab.dir}/export`,
      mountPoint: `${lab.dir}/shared`,
      logDir: lab.dir,
      ...(options !== undefined ? { sshfsOptions: options.split(",").filter((o) => o !== "") } : {}),
    });
    // ARCH_SHAREDFS_HOST_PATH: a directory on the shared FS only root can change.
    Deno.mkdirSync(`${mount.mountPoint}/arch`, { mode: 0o755 });
    Deno.chmodSync(`${mount.mountPoint}/arch`, 0o755);
    const config = JSON.parse(Deno.readTextFileSync(lab.config));
    Deno.writeTextFileSync(lab.config, JSON.stringify({ ...config, sharedFsRoots: [mount.mountPoint] }));
    bench = new SharedFsLab(lab, mount);

    const results: Record<Mode, Round[]> = { local: [], shared: [] };
    for (let n = 0; n < rounds; n++) {
      for (const mode of ["local", "shared"] as const) results[mode].push(await bench.round(mode, n));
    }
    const m = (mode: Mode, field: NumericField) => median(results[mode].map((r) => r[field]));
    const phases = (field: "checkpointPhases" | "restorePhases") => {
      const of = (mode: Mode) => {
        const names = [...new Set(results[mode].flatMap((r) => Object.keys(r[field])))];
        return Object.fromEntries(names.map((k) => [k, median(results[mode].map((r) => r[field][k] ?? NaN))]));
      };
      return { localPhasesMs: of("local"), sharedPhasesMs: of("shared") };
    };
    const mib = (bytes: number) => bytes / 2 ** 20;
    const common = { rounds, fs: "sshfs over SFTP on 127.0.0.1", sshfsOptions: mount.sshfsOptions.join(",") };
    const runs = (field: NumericField, scale = (x: number) => x) => ({
      localRuns: results.local.map((r) => Math.round(scale(r[field]) * 1000) / 1000),
      sharedRuns: results.shared.map((r) => Math.round(scale(r[field]) * 1000) / 1000),
    });
    emit(
      `checkpoint ${MIB} MiB, shared FS vs local disk (arch checkpoint)`,
      m("shared", "checkpoint"),
      "s",
      m("local", "checkpoint"),
      { ...common, ...runs("checkpoint"), ...phases("checkpointPhases") },
    );
    emit(
      `restore ${MIB} MiB, shared FS vs local disk (create through ARCH until running)`,
      m("shared", "restore"),
      "s",
      m("local", "restore"),
      {
        ...common,
        ...runs("restore"),
        ...phases("restorePhases"),
        sharedMiBReadOverNetwork: Math.round(mib(m("shared", "restoreReceived"))),
      },
    );
    emit(
      `checkpoint ${MIB} MiB bytes committed, shared FS vs local disk`,
      mib(m("shared", "committed")),
      "MiB",
      mib(m("local", "committed")),
      { ...common, ...runs("committed", mib) },
    );
    emit(
      `checkpoint ${MIB} MiB bytes sent to the file system, shared FS vs local disk`,
      mib(m("shared", "sent")),
      "MiB",
      mib(m("local", "sent")),
      {
        ...common,
        ...runs("sent", mib),
        sharedServerDiskMiB: Math.round(mib(m("shared", "serverDisk"))),
        sharedMiBReadOverNetwork: Math.round(mib(m("shared", "checkpointReceived"))),
        note: "local: write_bytes of the checkpoint's process tree; shared: bytes the SFTP server received " +
          "over TCP (sharedServerDiskMiB: what it wrote to its disk; sharedMiBReadOverNetwork: what it sent back)",
      },
    );
  } finally {
    for (const id of bench?.containers ?? []) await removeContainer(lab, id);
    const problems = mount === undefined ? [] : await mount.stop();
    if (problems.length > 0) console.error(`shared FS bench: SFTP mount cleanup incomplete: ${problems.join("; ")}`);
    await unmountBelow(lab.dir);
    if (Deno.env.get("ARCH_BENCH_KEEP") !== "1") await Deno.remove(lab.dir, { recursive: true }).catch(() => {});
  }
}
