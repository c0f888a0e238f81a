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

import { sha256Hex } from "../util/digest.ts";
import { overlayFromMountinfo, resolveOverlayPaths } from "../rootfs/upperdir.ts";

/** Docker's per-container init layer, which is not part of the image. */
const isDockerInitLayer = (layer: string) => /-init\/diff\/?$/.test(layer);

function treeDigest(dir: string): Promise<string> {
  const lines: string[] = [];
  const walk = (rel: string) => {
    const names = [...Deno.readDirSync(rel === "" ? dir : `${dir}/${rel}`)].map((e) => e.name).sort();
    for (const name of names) {
      const path = rel === "" ? name : `${rel}/${name}`;
      const info = Deno.lstatSync(`${dir}/${path}`);
      const type = info.isDirectory ? "d" : info.isSymlink ? "l" : info.isFile ? "f" : "o";
      const target = info.isSymlink ? Deno.readLinkSync(`${dir}/${path}`) : "";
      const size = info.isFile ? info.size : 0;
      const mtime = info.isDirectory ? 0 : Math.floor((info.mtime?.getTime() ?? 0) / 1000);
      lines.push(`${path}\0${type}\0${info.mode}\0${info.uid}:${info.gid}\0${size}\0${mtime}\0${target}\n`);
      if (info.isDirectory) walk(path);
    }
  };
  walk("");
  return sha256Hex(lines.join(""));
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
