/**
 * Installs ARCH's system stack on a Debian 12 machine: runc, containerd, Docker, CRIU >= 4
 * (from trixie, pinned), iptables, zstd, busybox-static and a C compiler for the test
 * workload. Idempotent and fast when everything is there (one dpkg query). Requires root.
 *
 *     deno run -A install.ts            # install what is missing
 *     deno run -A install.ts --dry-run  # print the plan only
 */

import { runCommand } from "./src/process/exec.ts";
import {
  BASE_PACKAGES,
  describeStep,
  parseCriuVersion,
  parseDpkgQuery,
  planInstall,
  type Step,
  TRIXIE_PACKAGES,
  TRIXIE_PIN_PATH,
  TRIXIE_SOURCE_PATH,
} from "./src/install/plan.ts";

const exists = (path: string) => {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
};

async function observe() {
  const dpkg = await runCommand({
    cmd: "dpkg-query",
    args: ["-W", "-f", "${Package} ${db:Status-Abbrev} ${Version}\\n", ...TRIXIE_PACKAGES, ...BASE_PACKAGES],
  });
  const criu = exists("/usr/sbin/criu") ? await runCommand({ cmd: "criu", args: ["--version"] }) : undefined;
  return {
    installed: parseDpkgQuery(dpkg.stdout),
    trixieSource: exists(TRIXIE_SOURCE_PATH),
    trixiePin: exists(TRIXIE_PIN_PATH),
    criuVersion: criu === undefined ? undefined : parseCriuVersion(criu.stdout),
  };
}

async function apply(step: Step): Promise<void> {
  const env = { DEBIAN_FRONTEND: "noninteractive", PATH: Deno.env.get("PATH") ?? "/usr/sbin:/usr/bin:/sbin:/bin" };
  let result;
  switch (step.kind) {
    case "write-file":
      Deno.writeTextFileSync(step.path, step.content, { mode: 0o644 });
      return;
    case "apt-update":
      result = await runCommand({ cmd: "apt-get", args: ["update", "-qq"], env, stdio: "inherit" });
      break;
    case "apt-install":
      result = await runCommand({
        cmd: "apt-get",
        args: [
          "install",
          "-y",
          "-qq",
          "--no-install-recommends",
          ...(step.suite ? ["-t", step.suite] : []),
          ...step.packages,
        ],
        env,
        stdio: "inherit",
      });
      break;
    case "criu-check": {
      result = await runCommand({ cmd: "criu", args: ["check"] });
      if (result.code !== 0) {
        throw new Error(`"criu check" failed on this kernel: ${result.stderr.trim().split("\n").slice(-2).join(" ")}`);
      }
      return;
    }
  }
  if (result.code !== 0) throw new Error(`"${describeStep(step)}" failed with exit code ${result.code}`);
}

if (import.meta.main) {
  const dryRun = Deno.args.includes("--dry-run");
  if (!dryRun && Deno.uid() !== 0) {
    console.error("install.ts: run as root (it installs Debian packages)");
    Deno.exit(1);
  }
  const steps = planInstall(await observe());
  for (const step of steps) {
    console.error(`install: ${describeStep(step)}`);
    if (dryRun) continue;
    try {
      await apply(step);
    } catch (error) {
      console.error(`install: ${(error as Error).message}`);
      Deno.exit(1);
    }
  }
}
