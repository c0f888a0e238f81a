/**
 * Checkpoint/restore benchmark: ARCH against raw runc, same workload, same bundle, same
 * runc root, in one run.
 *
 * For each memory size, a bundle whose rootfs is an overlay of the test image runs the
 * workload with that much memory. "raw" (the floor) is `runc checkpoint` + `sync` / `runc restore -d` by hand;
 * "arch" is `arch checkpoint` (pause, writable layer, dump, sha256, fsync, commit, kill)
 * and a `create` through the ARCH wrapper that restores (verify, apply layer, restore).
 * Also: `arch finalize` of N containers, in parallel versus one at a time.
 * Requires root, runc, CRIU, and dist/ built.
 */

import { runcArgv, type RuncTarget } from "../../src/runc/client.ts";
import { parseRuncArgv } from "../../src/runc/argv.ts";
import { ARCH, ARCH_RUNC, ROOT, RUNC } from "../integration/_env.ts";
import { buildTestImage } from "../harness/image.ts";
import { mustRun } from "../../src/process/exec.ts";

const dec = new TextDecoder();

export interface Lab {
  readonly dir: string;
  readonly root: string;
  readonly config: string;
  readonly env: Record<string, string>;
  readonly lower: string;
}

/** A private runc root, ARCH config and checkpoint root, and the test image unpacked. */
export async function makeLab(): Promise<Lab> {
  const dir = Deno.makeTempDirSync({ prefix: "arch-bench-" });
  const image = await buildTestImage(`${ROOT}/.cache/image`, `${ROOT}/tests/fixtures/workload.c`);
  const lower = `${dir}/lower`;
  const layout = `${dir}/layout`;
  Deno.mkdirSync(lower);
  Deno.mkdirSync(layout);
  await mustRun({ cmd: "tar", args: ["-C", layout, "-xf", image] });
  const manifest = JSON.parse(Deno.readTextFileSync(`${layout}/manifest.json`))[0] as { Layers: string[] };
  await mustRun({ cmd: "tar", args: ["-C", lower, "-xpf", `${layout}/${manifest.Layers[0]}`] });
  Deno.mkdirSync(`${dir}/ckpt`, { mode: 0o700 });
  const config = `${dir}/config.json`;
  Deno.writeTextFileSync(
    config,
    JSON.stringify({
      runc: RUNC,
      stateDir: `${dir}/state`,
      // each in a directory of its own: ARCH refuses checkpoint roots that nest with its log or secret directory
      logFile: `${dir}/log/arch.log`,
      secretFile: `${dir}/etc/secret`,
      metricsFile: `${dir}/metrics/arch.prom`,
      criuConfigDir: `${dir}/criu`,
      checkpointRoots: [`${dir}/ckpt`],
      defaultCheckpointRoot: `${dir}/ckpt`,
    }),
  );
  Deno.chmodSync(config, 0o644);
  return { dir, root: `${dir}/runc`, config, env: { ARCH_CONFIG: config }, lower };
}

/** The container `id` of the lab's runc root, as the runc client names it. */
export const labTarget = (lab: Lab, id: string): RuncTarget => ({ runc: RUNC, global: { root: lab.root }, id });

/** `runc restore --detach` of `images` into `bundle` (the floor's restore), as argv after the binary. */
export function rawRestoreArgs(lab: Lab, bundle: string, images: string, id: string): string[] {
  const create = parseRuncArgv(runcArgv.create(labTarget(lab, id), bundle, `${bundle}/pid`));
  if (!create.ok) throw new Error(create.reason);
  return runcArgv.restore(create.call, images, `${images}-rw`);
}

/** A bundle with an overlay rootfs running `workload --mem <mib>`. */
export async function makeBundle(lab: Lab, name: string, mib: number, key: string): Promise<string> {
  const b = `${lab.dir}/${name}`;
  for (const d of ["upper", "work", "rootfs"]) Deno.mkdirSync(`${b}/${d}`, { recursive: true });
  await mustRun({
    cmd: "mount",
    args: [
      "-t",
      "overlay",
      "overlay",
      "-o",
      `lowerdir=${lab.lower},upperdir=${b}/upper,workdir=${b}/work`,
      `${b}/rootfs`,
    ],
  });
  await mustRun({ cmd: RUNC, args: ["spec", "--bundle", b] });
  const spec = JSON.parse(Deno.readTextFileSync(`${b}/config.json`));
  spec.process.terminal = false;
  spec.process.args = ["workload", "--mem", String(mib), "--interval-ms", "1000", "--verify-every", "0"];
  spec.process.env = ["PATH=/usr/local/bin:/bin", "ARCH_ENABLE=1", `ARCH_CHECKPOINT_ID=${key}`];
  spec.root = { path: "rootfs", readonly: false };
  spec.linux.cgroupsPath = `/arch-bench/${lab.dir.split("-").pop()}/${name}`;
  Deno.writeTextFileSync(`${b}/config.json`, JSON.stringify(spec));
  return b;
}

/** Starts the container (through `runc` or the ARCH wrapper) and waits until its memory is filled. */
export async function startWorkload(lab: Lab, runc: string, bundle: string, id: string): Promise<Deno.ChildProcess> {
  // runc create keeps our pipes as the container's stdout; "start mem" means it is ready.
  const create = new Deno.Command(runc, {
    args: runcArgv.create(labTarget(lab, id), bundle, `${bundle}/pid`),
    env: lab.env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped", // a host file as stdio would make CRIU refuse the dump
  }).spawn();
  create.stderr.pipeTo(new WritableStream()).catch(() => {});
  const created = await create.status;
  if (!created.success) throw new Error(`create of ${id} failed with ${created.code}`);
  await mustRun({ cmd: runc, args: runcArgv.start(labTarget(lab, id)), env: lab.env });
  await waitForLine(create.stdout, "verify ok");
  return create;
}

async function waitForLine(stream: ReadableStream<Uint8Array>, prefix: string): Promise<void> {
  const reader = stream.getReader();
  let text = "";
  while (!text.split("\n").some((l) => l.startsWith(prefix))) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`stream ended before "${prefix}"`);
    text += dec.decode(value);
  }
  reader.releaseLock();
  stream.pipeTo(new WritableStream()).catch(() => {}); // keep draining
}

export async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return (performance.now() - t0) / 1000;
}

export async function removeContainer(lab: Lab, id: string): Promise<void> {
  await new Deno.Command(RUNC, { args: runcArgv.forceDelete(labTarget(lab, id)), stdout: "null", stderr: "null" })
    .output();
}

export async function unmountBundle(bundle: string): Promise<void> {
  await new Deno.Command("umount", { args: [`${bundle}/rootfs`], stderr: "null" }).output();
}

/** One raw round: runc checkpoint + sync, then runc restore -d. Seconds. */
export async function rawRound(lab: Lab, mib: number, n: number) {
  const id = `raw-${mib}-${n}`;
  const bundle = await makeBundle(lab, id, mib, id);
  await startWorkload(lab, RUNC, bundle, id);
  const images = `${lab.dir}/${id}-img`;
  // The floor: CRIU's dump, then the bytes made durable (syncfs of the images' file system).
  const checkpoint = await timed(async () => {
    await mustRun({
      cmd: RUNC,
      args: runcArgv.checkpoint(labTarget(lab, id), images, `${images}-w`, { leaveRunning: false }),
    });
    await mustRun({ cmd: "sync", args: ["--file-system", images] });
  });
  const restore = await timed(() =>
    mustRun({
      cmd: RUNC,
      args: rawRestoreArgs(lab, bundle, images, id),
      stdio: "null", // the restored process keeps runc's stdout: a pipe to us would never end
    })
  );
  await removeContainer(lab, id);
  await unmountBundle(bundle);
  await Deno.remove(images, { recursive: true });
  return { checkpoint, restore };
}

/** One ARCH round: arch checkpoint, then a create through the wrapper that restores. Seconds. */
export async function archRound(lab: Lab, mib: number, n: number) {
  const id = `arch-${mib}-${n}`;
  const bundle = await makeBundle(lab, id, mib, id);
  await startWorkload(lab, ARCH_RUNC, bundle, id);
  const checkpoint = await timed(() => mustRun({ cmd: ARCH, args: ["checkpoint", id], env: lab.env }));
  await mustRun({ cmd: ARCH_RUNC, args: runcArgv.forceDelete(labTarget(lab, id)), env: lab.env });
  const restore = await timed(async () => {
    await mustRun({
      cmd: ARCH_RUNC,
      args: runcArgv.create(labTarget(lab, id), bundle, `${bundle}/pid`),
      env: lab.env,
      stdio: "null",
    });
    await mustRun({ cmd: ARCH_RUNC, args: runcArgv.start(labTarget(lab, id)), env: lab.env });
  });
  const state = JSON.parse((await mustRun({ cmd: RUNC, args: runcArgv.state(labTarget(lab, id)) })).stdout);
  if (state.status !== "running") throw new Error(`restored container is ${state.status}`);
  await mustRun({ cmd: ARCH_RUNC, args: runcArgv.forceDelete(labTarget(lab, id)), env: lab.env });
  await unmountBundle(bundle);
  return { checkpoint, restore };
}
