/**
 * What installing ARCH's system stack takes on a Debian 12 machine, decided from an
 * observed state (pure, so it is unit-tested and shown by `install.ts --dry-run`).
 *
 * CRIU must be 4.0 or later (Debian 12's 3.17 fails `criu check` on recent kernels), so
 * CRIU, runc, containerd and Docker come from Debian 13 "trixie" through an apt source
 * pinned at priority 100: nothing else on the machine moves to trixie unless asked.
 */

/** Packages taken from trixie (`apt-get install -t trixie`). */
export const TRIXIE_PACKAGES = ["criu", "runc", "containerd", "docker.io"] as const;
/** Packages from the machine's own suite. */
export const BASE_PACKAGES = ["iptables", "zstd", "busybox-static", "tar", "gcc", "libc6-dev", "util-linux"] as const;

export const TRIXIE_SOURCE_PATH = "/etc/apt/sources.list.d/arch-trixie.sources";
export const TRIXIE_PIN_PATH = "/etc/apt/preferences.d/arch-trixie";

export const TRIXIE_SOURCE = `# Added by ARCH's install.ts: CRIU >= 4 and a matching runc/containerd/Docker.
Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
`;

export const TRIXIE_PIN = `# Added by ARCH's install.ts: trixie only when asked for (apt-get -t trixie).
Package: *
Pin: release n=trixie
Pin-Priority: 100
`;

/** What the installer observed. */
export interface ObservedState {
  /** Installed package name to version (`dpkg-query`). */
  readonly installed: ReadonlyMap<string, string>;
  readonly trixieSource: boolean;
  readonly trixiePin: boolean;
  /** `criu --version` major.minor, if criu runs. */
  readonly criuVersion: readonly [number, number] | undefined;
}

export type Step =
  | { readonly kind: "write-file"; readonly path: string; readonly content: string }
  | { readonly kind: "apt-update" }
  | { readonly kind: "apt-install"; readonly packages: readonly string[]; readonly suite?: string }
  | { readonly kind: "criu-check" };

/**
 * The steps to reach a working stack; only `criu-check` when everything is there.
 *
 * @example
 * ```ts
 * import { BASE_PACKAGES, planInstall, TRIXIE_PACKAGES } from "./plan.ts";
 * const all = new Map([...TRIXIE_PACKAGES, ...BASE_PACKAGES].map((p) => [p, "1"]));
 * const steps = planInstall({ installed: all, trixieSource: true, trixiePin: true, criuVersion: [4, 1] });
 * if (steps.length !== 1 || steps[0]!.kind !== "criu-check") throw new Error();
 * ```
 */
export function planInstall(state: ObservedState): Step[] {
  const steps: Step[] = [];
  const criuTooOld = state.criuVersion === undefined || state.criuVersion[0] < 4;
  const missingTrixie = TRIXIE_PACKAGES.filter((p) => !state.installed.has(p));
  const missingBase = BASE_PACKAGES.filter((p) => !state.installed.has(p));
  const trixieInstall = criuTooOld ? [...new Set(["criu", ...missingTrixie])] : missingTrixie;
  if (trixieInstall.length > 0) {
    if (!state.trixieSource) steps.push({ kind: "write-file", path: TRIXIE_SOURCE_PATH, content: TRIXIE_SOURCE });
    if (!state.trixiePin) steps.push({ kind: "write-file", path: TRIXIE_PIN_PATH, content: TRIXIE_PIN });
  }
  if (trixieInstall.length > 0 || missingBase.length > 0) steps.push({ kind: "apt-update" });
  if (missingBase.length > 0) steps.push({ kind: "apt-install", packages: missingBase });
  if (trixieInstall.length > 0) steps.push({ kind: "apt-install", packages: trixieInstall, suite: "trixie" });
  steps.push({ kind: "criu-check" });
  return steps;
}

/** Parses `criu --version` output ("Version: 4.1.1"). */
export function parseCriuVersion(text: string): [number, number] | undefined {
  const m = /Version:\s*(\d+)\.(\d+)/.exec(text);
  return m === null ? undefined : [Number(m[1]), Number(m[2])];
}

/** Parses `dpkg-query -W -f '${Package} ${db:Status-Abbrev} ${Version}\n'` output. */
export function parseDpkgQuery(text: string): Map<string, string> {
  const installed = new Map<string, string>();
  for (const line of text.split("\n")) {
    const [name, status, version] = line.trim().split(/\s+/);
    if (name !== undefined && status === "ii" && version !== undefined) installed.set(name.split(":")[0]!, version);
  }
  return installed;
}

/** One line per step, for `--dry-run` and the install log. */
export function describeStep(step: Step): string {
  switch (step.kind) {
    case "write-file":
      return `write ${step.path}`;
    case "apt-update":
      return "apt-get update";
    case "apt-install":
      return `apt-get install${step.suite !== undefined ? ` -t ${step.suite}` : ""} ${step.packages.join(" ")}`;
    case "criu-check":
      return "criu check";
  }
}
