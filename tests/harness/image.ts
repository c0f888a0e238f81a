/**
 * Builds the ARCH test image offline: busybox-static plus the stateful test workload
 * (`tests/fixtures/workload.c`, compiled static), as an OCI image-layout tar that both
 * `ctr images import` and `docker load` accept.
 *
 * Guarantees: deterministic layer (sorted names, mtime 0, root ownership); the result is
 * cached by the sha256 of its inputs, so a second build is a hash and a copy. Requires
 * gcc, GNU tar and /usr/bin/busybox (Debian busybox-static).
 */

import { mustRun } from "../../src/process/exec.ts";

export const TEST_IMAGE = "docker.io/library/arch-test:latest";

/** Hex sha256 of `data`. */
export async function sha256Hex(data: Uint8Array<ArrayBuffer>): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", data);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

const json = (value: unknown) => new TextEncoder().encode(JSON.stringify(value));

const TAR_DETERMINISTIC = ["--sort=name", "--mtime=@0", "--owner=0", "--group=0", "--numeric-owner"];

/** What {@link packOciArchive} packs: a rootfs tree as a one-layer image named `name`. */
export interface OciImage {
  readonly rootfs: string;
  /** A scratch directory for the layer and the layout. */
  readonly work: string;
  /** The archive to write (atomically: `<out>.tmp`, then renamed). */
  readonly out: string;
  /** The image name containerd records (`io.containerd.image.name`). */
  readonly name: string;
  /** The image config's `config` (Env, Cmd, Entrypoint, WorkingDir). */
  readonly config: Readonly<Record<string, unknown>>;
  /** Also write Docker's legacy `manifest.json` with this tag (`docker load` of Docker 26 reads only that). */
  readonly dockerTag?: string;
  readonly createdBy?: string;
}

/**
 * Packs `rootfs` as a deterministic one-layer OCI image-layout tar (sorted names, mtime 0,
 * root ownership) that `ctr images import` (and, with `dockerTag`, `docker load`) accept.
 */
export async function packOciArchive(image: OciImage): Promise<void> {
  const { work } = image;
  await mustRun({ cmd: "tar", args: [...TAR_DETERMINISTIC, "-C", image.rootfs, "-cf", `${work}/layer.tar`, "."] });
  const layer = Deno.readFileSync(`${work}/layer.tar`);
  const layerDigest = await sha256Hex(layer);
  const config = json({
    architecture: Deno.build.arch === "x86_64" ? "amd64" : "arm64",
    os: "linux",
    config: image.config,
    rootfs: { type: "layers", diff_ids: [`sha256:${layerDigest}`] },
    ...(image.createdBy !== undefined ? { history: [{ created_by: image.createdBy }] } : {}),
  });
  const configDigest = await sha256Hex(config);
  const manifest = json({
    schemaVersion: 2,
    mediaType: "application/vnd.oci.image.manifest.v1+json",
    config: {
      mediaType: "application/vnd.oci.image.config.v1+json",
      digest: `sha256:${configDigest}`,
      size: config.length,
    },
    layers: [{
      mediaType: "application/vnd.oci.image.layer.v1.tar",
      digest: `sha256:${layerDigest}`,
      size: layer.length,
    }],
  });
  const manifestDigest = await sha256Hex(manifest);
  const layout = `${work}/layout`;
  Deno.mkdirSync(`${layout}/blobs/sha256`, { recursive: true });
  Deno.writeFileSync(`${layout}/blobs/sha256/${layerDigest}`, layer);
  Deno.writeFileSync(`${layout}/blobs/sha256/${configDigest}`, config);
  Deno.writeFileSync(`${layout}/blobs/sha256/${manifestDigest}`, manifest);
  if (image.dockerTag !== undefined) {
    Deno.writeFileSync(
      `${layout}/manifest.json`,
      json([{
        Config: `blobs/sha256/${configDigest}`,
        RepoTags: [image.dockerTag],
        Layers: [`blobs/sha256/${layerDigest}`],
      }]),
    );
  }
  Deno.writeFileSync(`${layout}/oci-layout`, json({ imageLayoutVersion: "1.0.0" }));
  Deno.writeFileSync(
    `${layout}/index.json`,
    json({
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.index.v1+json",
      manifests: [{
        mediaType: "application/vnd.oci.image.manifest.v1+json",
        digest: `sha256:${manifestDigest}`,
        size: manifest.length,
        annotations: { "io.containerd.image.name": image.name, "org.opencontainers.image.ref.name": "latest" },
      }],
    }),
  );
  await mustRun({ cmd: "tar", args: [...TAR_DETERMINISTIC, "-C", layout, "-cf", `${image.out}.tmp`, "."] });
  Deno.renameSync(`${image.out}.tmp`, image.out);
}

/** Creates the rootfs tree: busybox applets, the workload, /etc/passwd, /tmp. */
async function makeRootfs(dir: string, workloadSource: string): Promise<void> {
  for (const d of ["bin", "usr/local/bin", "etc", "tmp", "proc", "sys", "dev", "root", "data"]) {
    Deno.mkdirSync(`${dir}/${d}`, { recursive: true });
  }
  Deno.chmodSync(`${dir}/tmp`, 0o1777);
  Deno.copyFileSync("/usr/bin/busybox", `${dir}/bin/busybox`);
  const { stdout } = await mustRun({ cmd: "/usr/bin/busybox", args: ["--list"] });
  for (const applet of stdout.split("\n").map((s) => s.trim()).filter((s) => s && s !== "busybox")) {
    Deno.symlinkSync("busybox", `${dir}/bin/${applet}`);
  }
  await mustRun({ cmd: "gcc", args: ["-static", "-O2", "-o", `${dir}/usr/local/bin/workload`, workloadSource] });
  Deno.writeTextFileSync(`${dir}/etc/passwd`, "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n");
  Deno.writeTextFileSync(`${dir}/etc/group`, "root:x:0:\nnogroup:x:65534:\n");
  Deno.writeTextFileSync(`${dir}/etc/image-file`, "shipped with the image\n");
  Deno.mkdirSync(`${dir}/opt/lower`, { recursive: true });
  Deno.writeTextFileSync(`${dir}/opt/lower/a`, "a\n");
  Deno.writeTextFileSync(`${dir}/opt/lower/b`, "b\n");
}

/**
 * Builds (or reuses) the OCI archive at `<cacheDir>/arch-test.oci.tar` and returns its path.
 */
export async function buildTestImage(cacheDir: string, workloadSource: string): Promise<string> {
  Deno.mkdirSync(cacheDir, { recursive: true });
  const inputs = new Uint8Array([
    ...Deno.readFileSync(workloadSource),
    ...Deno.readFileSync("/usr/bin/busybox"),
    ...new TextEncoder().encode("v4"),
  ]);
  const stamp = await sha256Hex(inputs);
  const out = `${cacheDir}/arch-test.oci.tar`;
  try {
    if (Deno.readTextFileSync(`${out}.inputs`) === stamp) return out;
  } catch { /* not built yet */ }

  const work = Deno.makeTempDirSync({ dir: cacheDir, prefix: "image-" });
  try {
    const rootfs = `${work}/rootfs`;
    await makeRootfs(rootfs, workloadSource);
    await packOciArchive({
      rootfs,
      work,
      out,
      name: TEST_IMAGE,
      dockerTag: "arch-test:latest",
      config: {
        Env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        Cmd: ["/usr/local/bin/workload"],
        WorkingDir: "/",
      },
      createdBy: "arch test image (tests/harness/image.ts)",
    });
    Deno.writeTextFileSync(`${out}.inputs`, stamp);
    return out;
  } finally {
    Deno.removeSync(work, { recursive: true });
  }
}
