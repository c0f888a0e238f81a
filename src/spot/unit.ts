/**
 * The systemd unit of the spot-notice watcher (`arch-watch.service`), as text. Pure: builds
 * the unit, writes nothing. `arch install watch` installs it.
 *
 * Hardening is limited on purpose: the watcher runs `arch finalize`, which runs runc and CRIU
 * as root against containers in the host's namespaces. Mount-namespace sandboxing
 * (ProtectSystem, ProtectHome, PrivateTmp, ...) would hide or freeze paths CRIU and runc must
 * see, and seccomp filters (SystemCallFilter, LockPersonality, ...) are inherited by CRIU,
 * which needs ptrace and many rare syscalls. What remains: a private umask, high OOM
 * protection, no start limit (the watcher must always come back) and a stop that lets a
 * running finalize end.
 */

/** The unit's file name. */
export const WATCH_UNIT_NAME = "arch-watch.service";

const SAFE_ARG = /^[A-Za-z0-9_@%+=:,./-]+$/;

/**
 * Returns the text of `arch-watch.service` running `<archPath> watch --provider <provider>`.
 * Throws when `archPath` is not absolute or either value holds characters that systemd would
 * interpret (spaces, quotes, `$`, `%` specifiers are refused).
 *
 * @example
 * ```ts
 * import { watchUnitText } from "./unit.ts";
 * const text = watchUnitText("/usr/local/bin/arch", "aws");
 * if (!text.includes("ExecStart=/usr/local/bin/arch watch --provider aws\n")) throw new Error();
 * ```
 */
export function watchUnitText(archPath: string, provider: string): string {
  if (!archPath.startsWith("/") || !SAFE_ARG.test(archPath) || archPath.includes("%")) {
    throw new Error(
      `Cannot build ${WATCH_UNIT_NAME}: arch path "${archPath}" must be absolute, without spaces or quotes`,
    );
  }
  if (!["aws", "gcp", "azure", "auto"].includes(provider)) {
    throw new Error(`Cannot build ${WATCH_UNIT_NAME}: provider "${provider}" must be aws, gcp, azure or auto`);
  }
  return [
    "# Installed by ARCH (arch install watch): runs `arch finalize` on a spot/preemption notice.",
    "[Unit]",
    "Description=ARCH spot-notice watcher (checkpoints ARCH containers before the node is reclaimed)",
    "Wants=network-online.target",
    "After=network-online.target containerd.service docker.service",
    "StartLimitIntervalSec=0",
    "",
    "[Service]",
    "Type=simple",
    `ExecStart=${archPath} watch --provider ${provider}`,
    "Restart=always",
    "RestartSec=2",
    "# SIGTERM to the watcher only; a finalize it started gets time to end before SIGKILL.",
    "KillMode=mixed",
    "TimeoutStopSec=150",
    "UMask=0077",
    "OOMScoreAdjust=-900",
    "Nice=-5",
    "",
    "[Install]",
    "WantedBy=multi-user.target",
    "",
  ].join("\n");
}
