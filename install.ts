/**
 * Installs ARCH's system stack on a Debian 12 machine (see `scripts/setup/plan.ts` for what
 * and why): runc, containerd and Docker from trixie, a CRIU that fits the running kernel,
 * and every program ARCH, CRIU and the tests run. Idempotent and fast when everything is
 * there (one dpkg query). Requires root.
 *
 *     deno run -A install.ts                 # install what is missing
 *     deno run -A install.ts --dry-run       # print the plan only
 *     deno run -A install.ts --test-engines  # also unpack the newer engine generation for the tests
 */

import { runCommand } from "./src/process/exec.ts";
import {
  ALL_PLANNED_PACKAGES,
  describeStep,
  parseDpkgQuery,
  planInstall,
  SID_PIN_PATH,
  SID_SOURCE_PATH,
  type Step,
  TEST_ENGINES_DIR,
  TRIXIE_PIN_PATH,
  TRIXIE_SOURCE_PATH,
} from "./scripts/setup/plan.ts";
import { unpackEngines } from "./scripts/setup/engines.ts";

const readOrUndefined = (path: string) => {
  try {
    return Deno.readTextFileSync(path);
  } catch {
    return undefined;
  }
};

async function observe(testEngines: boolean) {
  const dpkg = await runCommand({
    cmd: "dpkg-query",
    args: ["-W", "-f", "${Package} ${db:Status-Abbrev} ${Version}\\n", ...new Set(ALL_PLANNED_PACKAGES)],
  });
  const criu = readOrUndefined("/usr/sbin/criu") !== undefined
    ? await runCommand({ cmd: "/usr/sbin/criu", args: ["--version"] })
    : undefined;
  const files = new Map<string, string>();
  for (const path of [TRIXIE_SOURCE_PATH, TRIXIE_PIN_PATH, SID_SOURCE_PATH, SID_PIN_PATH]) {
    const content = readOrUndefined(path);
    if (content !== undefined) files.set(path, content);
  }
  return {
    installed: parseDpkgQuery(dpkg.stdout),
    files,
    criuVersion: criu?.code === 0 ? criu.stdout : undefined,
    kernel: Deno.osRelease(),
    testEngines: { wanted: testEngines, present: readOrUndefined(`${TEST_ENGINES_DIR}/engines.json`) !== undefined },
  };
}

async function apply(step: Step): Promise<void> {
  const env = { DEBIAN_FRONTEND: "noninteractive", PATH: "/usr/sbin:/usr/bin:/sbin:/bin" };
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
    case "unpack-engines":
      await unpackEngines(step.dir, step.packages, step.suite);
      return;
    case "criu-check": {
      result = await runCommand({ cmd: "/usr/sbin/criu", args: ["check"] });
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
  const steps = planInstall(await observe(Deno.args.includes("--test-engines")));
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
