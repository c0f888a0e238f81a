/**
 * The identity of a container's image, recorded in each checkpoint and compared on restore:
 * a checkpoint is restored only into a container of the same image.
 *
 * The image is what lies below the writable layer: the overlay's `lowerdir` layers. Each
 * layer's identity is a sha256 over its tree's metadata (path, type, mode, owner, size,
 * mtime, link target) in sorted order: engines extract image layers from the same tar files
 * on every node, with the same metadata, so the figure is the same on any node and under
 * Docker and containerd alike, but changes with any file added, removed, resized or
 * retouched. Docker's per-container init layer (`<id>-init`: /etc/hosts, /etc/resolv.conf)
 * is not part of the image and is left out. Layers are immutable, so each layer's figure is
 * cached in the state directory by path and inode.
 *
 * What it is not: a content hash. It tells images apart (an updated job image, another
 * job's image under a reused key), it does not stop a tenant who crafts an image with the
 * same metadata: that boundary is the key scope, which a tenant cannot choose.
 */

import { sha256Hex, streamingSha256 } from "../util/digest.ts";
import { overlayFromMountinfo, resolveOverlayPaths } from "./upperdir.ts";

/** Docker's per-container init layer, which is not part of the image. */
const isDockerInitLayer = (layer: string) => /-init\/diff\/?$/.test(layer);

/** Metadata lines hashed in one call while they fit; past this many characters they are streamed. */
const WHOLE_LISTING = 8 << 20;

/** The digest of one layer's tree metadata (see the module doc); `whole`: for tests of the streamed case. */
export async function treeDigest(dir: string, whole = WHOLE_LISTING): Promise<string> {
  let batch: string[] = [];
  let length = 0;
  let stream: Awaited<ReturnType<typeof streamingSha256>> | undefined;
  // A tenant's image can hold millions of files: memory stays bounded by the batch.
  const flush = async () => {
    stream ??= await streamingSha256();
    stream.update(new TextEncoder().encode(batch.join("")));
    batch = [];
    length = 0;
  };
  const walk = async (rel: string) => {
    const names = [...Deno.readDirSync(rel === "" ? dir : `${dir}/${rel}`)].map((e) => e.name).sort();
    for (const name of names) {
      const path = rel === "" ? name : `${rel}/${name}`;
      const info = Deno.lstatSync(`${dir}/${path}`);
      const type = info.isDirectory ? "d" : info.isSymlink ? "l" : info.isFile ? "f" : "o";
      const target = info.isSymlink ? Deno.readLinkSync(`${dir}/${path}`) : "";
      const size = info.isFile ? info.size : 0;
      const mtime = info.isDirectory ? 0 : Math.floor((info.mtime?.getTime() ?? 0) / 1000);
      const line = `${path}\0${type}\0${info.mode}\0${info.uid}:${info.gid}\0${size}\0${mtime}\0${target}\n`;
      batch.push(line);
      length += line.length;
      if (length > whole) await flush();
      if (info.isDirectory) await walk(path);
    }
  };
  await walk("");
  if (stream === undefined) return await sha256Hex(batch.join(""));
  await flush();
  return stream.digest();
}

async function cachedLayerDigest(layer: string, cacheDir: string | undefined): Promise<string> {
  const info = Deno.statSync(layer);
  const cacheKey = await sha256Hex(`${layer}\0${info.dev}\0${info.ino}\0${info.birthtime?.getTime()}`);
  const cached = cacheDir === undefined ? undefined : `${cacheDir}/${cacheKey}`;
  if (cached !== undefined) {
    try {
      const value = Deno.readTextFileSync(cached).trim();
      if (/^[0-9a-f]{64}$/.test(value)) return value;
    } catch { /* not cached yet */ }
  }
  const digest = await treeDigest(layer);
  if (cached !== undefined) {
    try {
      Deno.mkdirSync(cacheDir!, { recursive: true, mode: 0o700 });
      Deno.writeTextFileSync(`${cached}.${Deno.pid}`, digest + "\n", { mode: 0o600 });
      Deno.renameSync(`${cached}.${Deno.pid}`, cached);
    } catch { /* a cache only */ }
  }
  return digest;
}

/**
 * The image identity of the container whose rootfs is mounted at `rootfs` (`sha256:` of its
 * layers' digests), or `undefined` when its rootfs is not an overlay with absolute layers.
 * `stateDir` holds the per-layer cache.
 */
export async function imageIdentity(rootfs: string, stateDir: string | undefined): Promise<string | undefined> {
  const overlay = overlayFromMountinfo(Deno.readTextFileSync("/proc/self/mountinfo"), Deno.realPathSync(rootfs));
  if (overlay === undefined) return undefined;
  const layers = resolveOverlayPaths(overlay).lowerdirs; // Docker's long option strings use relative layers
  const cacheDir = stateDir === undefined ? undefined : `${stateDir}/layers`;
  let digests = "";
  for (const given of layers) {
    const layer = Deno.realPathSync(given); // Docker names layers by short links (overlay2/l/<id>)
    if (isDockerInitLayer(layer)) continue;
    digests += (await cachedLayerDigest(layer, cacheDir)) + "\n";
  }
  return `sha256:${await sha256Hex(digests)}`;
}
