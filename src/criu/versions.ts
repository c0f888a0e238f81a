/** Versions recorded in a manifest and compared on restore. */

import { runCommand } from "../process/exec.ts";
import { ARCH_VERSION } from "../version.ts";
import { missingCpuFeatures, nodeCpuFeatures } from "./cpu_features.ts";

/** The CPU architecture, kernel, and ARCH, runc and CRIU versions of a node (recorded in a checkpoint's manifest). */
export interface ToolVersions {
  readonly arch: { readonly version: string };
  readonly runc: { readonly version: string };
  readonly criu: { readonly version: string };
  readonly kernel: string;
  readonly cpuArch: string;
  /** The CPU's instruction-set extensions (`cpu_features.ts`); absent in checkpoints of older ARCH versions. */
  readonly cpuFeatures?: string[] | undefined;
}

const asked = new Map<string, Promise<ToolVersions>>();

/** Bound for `runc --version` and `criu --version` (a checkpoint reads them while its container is paused). */
const VERSION_TIMEOUT_MS = 10_000;

/**
 * This node's {@link ToolVersions}; a version it cannot read is `unknown`. Asked once per
 * process and runc (`arch finalize` checkpoints hundreds of containers: two process starts
 * each saved). Requires runc and CRIU.
 */
export function toolVersions(runcPath: string): Promise<ToolVersions> {
  let versions = asked.get(runcPath);
  if (versions === undefined) {
    versions = readToolVersions(runcPath);
    versions.catch(() => asked.delete(runcPath)); // a failure is asked again next time
    asked.set(runcPath, versions);
  }
  return versions;
}

async function readToolVersions(runcPath: string): Promise<ToolVersions> {
  const [runc, criu] = await Promise.all([
    runCommand({ cmd: runcPath, args: ["--version"], timeoutMs: VERSION_TIMEOUT_MS }),
    runCommand({ cmd: "criu", args: ["--version"], timeoutMs: VERSION_TIMEOUT_MS }),
  ]);
  const features = nodeCpuFeatures();
  return {
    arch: { version: ARCH_VERSION },
    runc: { version: /runc version (\S+)/.exec(runc.stdout)?.[1] ?? "unknown" },
    criu: { version: /Version: (\S+)/.exec(criu.stdout)?.[1] ?? "unknown" },
    kernel: Deno.osRelease(),
    cpuArch: Deno.build.arch,
    ...(features !== undefined ? { cpuFeatures: features } : {}),
  };
}

/** Why a checkpoint made with `saved` cannot be restored here, or `undefined`. */
export function incompatibility(
  saved: ToolVersions,
  here: ToolVersions,
  { cpuFeatureCheck = true } = {},
): string | undefined {
  if (saved.cpuArch !== here.cpuArch) return `it was made on ${saved.cpuArch}, this node is ${here.cpuArch}`;
  const missing = cpuFeatureCheck ? missingCpuFeatures(saved.cpuFeatures, here.cpuFeatures) : [];
  if (missing.length > 0) {
    return `it was made on a CPU with instruction-set extensions this one lacks (${missing.join(", ")}), which ` +
      `its processes may use and would die of (SIGILL): restore it on a node that has them, or set host config ` +
      `"cpuFeatureCheck" to "off" if the job is known not to use them`;
  }
  const major = (v: string) => Number(v.split(".")[0]);
  if (major(saved.criu.version) > major(here.criu.version)) {
    return `it was made with CRIU ${saved.criu.version}, this node has ${here.criu.version}`;
  }
  return undefined;
}
