/**
 * `arch install --print ecs-userdata` and `--print batch-env`: text for ECS and AWS Batch on
 * EC2 (nothing is applied). The userdata script downloads the ARCH release artifact with
 * curl, checks its sha256 with `sha256sum -c`, runs its self-install into /usr/local, makes
 * ARCH Docker's default runtime (ECS and Batch cannot choose a runtime per task), installs
 * the spot-notice watcher and restarts Docker and the ECS agent. The job definition then
 * only sets environment variables; `AWS_BATCH_JOB_ID` gives a retried job its checkpoint
 * key. Pure.
 */

import { shellQuote } from "./kubernetes.ts";

/** Options of {@link ecsUserData}. */
export interface EcsOptions {
  readonly artifactUrl: string;
  readonly artifactSha256: string;
  /** The watcher's provider (default aws). */
  readonly provider?: string;
}

/**
 * The EC2 userdata script (POSIX sh). Pure.
 *
 * @example
 * ```ts
 * import { ecsUserData } from "./ecs.ts";
 * const sh = ecsUserData({ artifactUrl: "https://x/arch.run", artifactSha256: "ab" });
 * if (!sh.includes("sha256sum -c") || !sh.includes("arch install docker --default")) throw new Error();
 * ```
 */
export function ecsUserData(opts: EcsOptions): string {
  if (!/^[0-9a-fA-F]+$/.test(opts.artifactSha256) && opts.artifactSha256 !== "SHA256") {
    throw new Error(`artifact sha256 "${opts.artifactSha256}" is not hexadecimal: pass the artifact's sha256`);
  }
  const provider = opts.provider ?? "aws";
  return `#!/bin/sh
# ARCH on ECS / AWS Batch (EC2 launch template userdata), printed by arch install --print ecs-userdata.
set -eu
ARCH_URL=${shellQuote(opts.artifactUrl)}
ARCH_SHA256=${shellQuote(opts.artifactSha256)}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
curl -fsSL --retry 5 -o "$tmp/arch.run" "$ARCH_URL"
echo "$ARCH_SHA256  $tmp/arch.run" | sha256sum -c -
sh "$tmp/arch.run" install --prefix /usr/local
/usr/local/bin/arch install docker --default --arch-runc /usr/local/bin/arch-runc
/usr/local/bin/arch install watch --provider ${shellQuote(provider)} --arch /usr/local/bin/arch
# Docker reads daemon.json at start; the ECS agent runs as a container of it.
if [ -d /run/systemd/system ]; then
  systemctl restart docker
  if systemctl list-unit-files ecs.service >/dev/null 2>&1; then systemctl restart --no-block ecs; fi
else
  echo "arch: systemd does not run this machine: restart Docker and the ECS agent yourself" >&2
fi
`;
}

/** The job-definition environment of an ARCH job (AWS Batch / ECS task), as `{name, value}` pairs. */
export function batchEnvironment(opts: { checkpointPath?: string; sharedFsPath?: string; workdir?: string } = {}) {
  const env: { name: string; value: string }[] = [{ name: "ARCH_ENABLE", value: "1" }];
  if (opts.sharedFsPath !== undefined) {
    env.push({ name: "ARCH_SHAREDFS_HOST_PATH", value: opts.sharedFsPath });
    env.push({ name: "ARCH_WORKDIR_CONTAINER_PATH", value: opts.workdir ?? "/work" });
  } else if (opts.checkpointPath !== undefined) {
    env.push({ name: "ARCH_CHECKPOINT_HOST_PATH", value: opts.checkpointPath });
  }
  return { environment: env };
}
