/**
 * A container's files as the checkpoint and restore code sees them, without an engine: a
 * bundle whose rootfs is a real overlay mount (lower with one file, upper with `progress`),
 * a state directory with the container's record, and a checkpoint root. Requires root.
 */
import { Registry } from "../../src/registry/registry.ts";
import type { ContainerRecord } from "../../src/registry/registry.ts";

export const isRoot = Deno.uid() === 0;
export const must = (cmd: string, ...args: string[]) => {
  const out = new Deno.Command(cmd, { args, stderr: "piped" }).outputSync();
  if (!out.success) throw new Error(`${cmd} ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
};

/**
 * A bundle whose rootfs is an overlay mount, a state dir and a checkpoint root. `lower`:
 * another lab's image layer (same image), else a new one; `progress`: the upper layer's one
 * file (`null`: an empty upper layer, a container that just started).
 */
export function lab(
  options: { lower?: string; progress?: string | null } = {},
): {
  dir: string;
  lower: string;
  record: ContainerRecord;
  registry: Registry;
  state: string;
  [Symbol.dispose](): void;
} {
  const dir = Deno.makeTempDirSync({ prefix: "arch-ckpt-phases-" });
  for (const d of ["lower/etc", "upper", "work", "bundle/rootfs", "state", "roots/ckpt"]) {
    Deno.mkdirSync(`${dir}/${d}`, { recursive: true, mode: 0o700 });
  }
  const lower = options.lower ?? `${dir}/lower`;
  if (options.lower === undefined) Deno.writeTextFileSync(`${dir}/lower/etc/os-release`, "ID=test\n");
  if (options.progress !== null) Deno.writeTextFileSync(`${dir}/upper/progress`, options.progress ?? "41\n");
  must(
    "mount",
    "-t",
    "overlay",
    "overlay",
    "-o",
    `lowerdir=${lower},upperdir=${dir}/upper,workdir=${dir}/work`,
    `${dir}/bundle/rootfs`,
  );
  Deno.writeTextFileSync(
    `${dir}/bundle/config.json`,
    JSON.stringify({ ociVersion: "1.0.2", root: { path: "rootfs" } }),
  );
  const record: ContainerRecord = {
    namespace: "moby",
    id: "c1",
    root: "/run/fake",
    bundle: `${dir}/bundle`,
    key: "job-1",
    createdAt: new Date().toISOString(),
    checkpointRoot: `${dir}/roots/ckpt`,
    scope: "tenant-a",
  };
  const registry = new Registry(`${dir}/state`);
  registry.put(record);
  return {
    dir,
    lower,
    record,
    registry,
    state: `${dir}/state`,
    [Symbol.dispose]() {
      must("umount", `${dir}/bundle/rootfs`);
      Deno.removeSync(dir, { recursive: true });
    },
  };
}
