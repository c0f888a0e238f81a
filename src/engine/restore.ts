/**
 * Restores a committed checkpoint into a container being created.
 *
 *     verify manifest + sha256 + compatibility → apply the writable layer to the new,
 *     mounted rootfs → runc restore --detach with the create's options, stdio untouched
 *
 * Guarantees: nothing is changed before the checkpoint is verified; a checkpoint that fails
 * verification or restore is moved aside (quarantine) so it is never tried again, and the
 * caller decides between a fresh start and a refusal. The restored process keeps the
 * engine's stdio: runc inherits this process's stdin/stdout/stderr. Requires root, runc
 * and CRIU.
 */

import { formatOptions, type RuncCall, stringOption } from "../runc/argv.ts";
import type { KeyStore } from "../store/store.ts";
import { verifyCheckpoint } from "../store/manifest.ts";
import { applyToRootfs } from "../rootfs/diff.ts";
import { incompatibility, toolVersions } from "./versions.ts";
import { bundleRootfs } from "./checkpoint.ts";
import { runCommand } from "../process/exec.ts";
import { keepCriuLog } from "../log/criu_logs.ts";

/** Options of `runc create` that `runc restore` takes too; the others are dropped. */
const CARRIED = ["bundle", "console-socket", "pid-file", "no-pivot"] as const;

/**
 * The `runc restore` argv for a `runc create` call (pure).
 *
 * @example
 * ```ts
 * import { restoreArgv } from "./restore.ts";
 * const argv = restoreArgv(
 *   { global: { root: "/r" }, command: "create", options: { bundle: "/b", "no-new-keyring": true }, args: ["c1"] },
 *   "/img",
 *   "/work",
 * );
 * if (argv.join(" ") !== "--root /r restore --detach --bundle /b --image-path /img --work-path /work c1") throw new Error();
 * ```
 */
export function restoreArgv(create: RuncCall, imagePath: string, workPath: string): string[] {
  const options: Record<string, string | boolean> = { detach: true };
  for (const name of CARRIED) {
    const value = create.options[name];
    if (typeof value === "string" || value === true) options[name] = value;
  }
  options["image-path"] = imagePath;
  options["work-path"] = workPath;
  return [...formatOptions(create.global), "restore", ...formatOptions(options), create.args[0]!];
}

export type RestoreOutcome =
  | { kind: "restored"; from: string; timings: Record<string, number> }
  | { kind: "failed"; reason: string; quarantined: string | undefined };

/** Restores `store`'s current checkpoint for the container `create` describes. */
export async function restoreContainer(
  create: RuncCall,
  store: KeyStore,
  runcPath: string,
  criuLogs?: string,
): Promise<RestoreOutcome> {
  const dir = store.currentPath()!;
  const bundle = stringOption(create.options, "bundle") ?? Deno.cwd();
  const fail = (reason: string): RestoreOutcome => ({ kind: "failed", reason, quarantined: store.quarantine() });
  const timings: Record<string, number> = {};
  let t = performance.now();
  const lap = (name: string) => {
    const now = performance.now();
    timings[name] = Math.round(now - t);
    t = now;
  };
  let manifest;
  try {
    const here = toolVersions(runcPath);
    manifest = await verifyCheckpoint(dir);
    lap("verify");
    const why = incompatibility(manifest, await here);
    if (why !== undefined) return fail(`checkpoint ${dir} cannot be restored here: ${why}`);
  } catch (error) {
    return fail(`checkpoint ${dir} failed verification: ${(error as Error).message}`);
  }
  try {
    if (manifest.rootfs.archive !== null) {
      await applyToRootfs(`${dir}/${manifest.rootfs.archive}`, bundleRootfs(bundle), bundle);
    }
  } catch (error) {
    return fail(`cannot apply the saved writable layer: ${(error as Error).message}`);
  }
  lap("rootfs");
  const work = Deno.makeTempDirSync({ dir: bundle, prefix: "arch-restore-" });
  const result = await runCommand({ cmd: runcPath, args: restoreArgv(create, `${dir}/criu`, work), stdio: "inherit" });
  const kept = criuLogs === undefined
    ? undefined
    : keepCriuLog(criuLogs, store.namespace, store.key, "restore", result.code === 0, `${work}/restore.log`);
  if (result.code !== 0) {
    let log = "";
    try {
      const errors = Deno.readTextFileSync(`${work}/restore.log`).split("\n").filter((l) => l.includes("Error"));
      log = errors.at(-1)?.trim() ?? "";
    } catch { /* no log */ }
    // Whatever runc left of the half-restored container must go, or a fresh create of the
    // same id would fail.
    const root = typeof create.global.root === "string" ? ["--root", create.global.root] : [];
    await runCommand({ cmd: runcPath, args: [...root, "delete", "--force", create.args[0]!] });
    return fail(`runc restore exited with ${result.code}${log ? `: ${log}` : ""} (CRIU log: ${kept ?? "not kept"})`);
  }
  lap("restore");
  return { kind: "restored", from: dir, timings };
}
