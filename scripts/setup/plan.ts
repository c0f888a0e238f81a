/**
 * What installing ARCH's system stack takes on a Debian 12 machine, decided from an
 * observed state (pure, so it is unit-tested and shown by `install.ts --dry-run`).
 *
 * - runc, containerd, Docker (daemon and CLI) come from Debian 13 "trixie", through an apt
 *   source pinned at priority 100: nothing moves to trixie unless asked (`-t trixie`).
 * - CRIU must fit the running kernel (see `criu/compat.ts`): from trixie (4.1) below
 *   Linux 6.16, else from Debian sid (4.2+). The sid source is pinned at -1 for every package
 *   except CRIU and its three libraries, so nothing else can ever come from sid.
 * - Every other program ARCH, CRIU or the tests run comes from the machine's own suite
 *   (`tests/unit/programs_test.ts` proves each one is provided by a package here or by an
 *   Essential package).
 * - With `testEngines`, the newer engine generation (runc 1.3, containerd 2.x, Docker 28
 *   from sid) is downloaded and unpacked into a private prefix for the tests, without
 *   touching the system's packages.
 */

import { criuProblem, minimumCriu, type Version } from "../../src/criu/compat.ts";

/**
 * Packages taken from trixie (`apt-get install -t trixie`): the engines, and the network file
 * system of the shared-FS tests (sshfs over an SFTP server on loopback). The latter come from
 * trixie too because the engines' install moves shared libraries and openssh-client to trixie,
 * and Debian 12's openssh-sftp-server then no longer installs. And the CRI API's proto
 * (`golang-github-kubernetes-cri-api-dev`, trixie only), which the Kubernetes tests' CRI
 * client loads (`tests/harness/cri.ts`).
 */
export const TRIXIE_PACKAGES = [
  "runc",
  "containerd",
  "docker.io",
  "docker-cli",
  "podman",
  "sshfs",
  "socat",
  "openssh-sftp-server",
  "golang-github-kubernetes-cri-api-dev",
] as const;
/** CRIU from sid, for kernels >= 6.16: CRIU and the libraries it needs newer than trixie's. */
export const SID_CRIU_PACKAGES = ["criu", "libcompel1", "libnet9", "libnl-3-200"] as const;
/**
 * Packages from the machine's own suite. `iproute2`: CRIU runs `ip` to dump a network namespace.
 * `containernetworking-plugins`: the CNI plugins containerd's CRI plugin runs for the
 * Kubernetes tests' pods.
 */
export const BASE_PACKAGES = [
  "iptables",
  "iproute2",
  "zstd",
  "curl",
  "busybox-static",
  "tar",
  "gcc",
  "libc6-dev",
  // libsqlite3.a: the SQLite job of the workload tests is static, like the test image
  "libsqlite3-dev",
  "util-linux",
  "mount",
  "containernetworking-plugins",
] as const;
/** The newer engine generation the tests also run on, unpacked into {@link TEST_ENGINES_DIR}. */
export const TEST_ENGINE_PACKAGES = ["runc", "containerd", "docker.io", "docker-cli"] as const;
/** Where the test engines live (a cache shared by every clone on the machine). */
export const TEST_ENGINES_DIR = "/var/cache/arch-test/engines/sid";

/** The apt source of Debian trixie that the installer writes. */
export const TRIXIE_SOURCE_PATH = "/etc/apt/sources.list.d/arch-trixie.sources";
/** The apt preferences file that pins trixie. */
export const TRIXIE_PIN_PATH = "/etc/apt/preferences.d/arch-trixie";
/** The apt source of Debian sid that the installer writes (CRIU for Linux >= 6.16, the test engines). */
export const SID_SOURCE_PATH = "/etc/apt/sources.list.d/arch-sid.sources";
/** The apt preferences file that pins sid. */
export const SID_PIN_PATH = "/etc/apt/preferences.d/arch-sid";

const source = (suite: string, why: string) =>
  `# Added by ARCH's install.ts: ${why}.
Types: deb
URIs: http://deb.debian.org/debian
Suites: ${suite}
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
`;

/** Content of {@link TRIXIE_SOURCE_PATH}: trixie's `main` from deb.debian.org, signed by Debian's archive key. */
export const TRIXIE_SOURCE = source("trixie", "CRIU >= 4 and a matching runc/containerd/Docker");
/** Content of {@link TRIXIE_PIN_PATH}: trixie at priority 100, so a package comes from it only when asked for. */
export const TRIXIE_PIN = `# Added by ARCH's install.ts: trixie only when asked for (apt-get -t trixie).
Package: *
Pin: release n=trixie
Pin-Priority: 100
`;
/** Content of {@link SID_SOURCE_PATH}: sid's `main` from deb.debian.org, signed by Debian's archive key. */
export const SID_SOURCE = source("sid", "CRIU >= 4.2 for Linux >= 6.16, and nothing else");
/** Content of {@link SID_PIN_PATH}: CRIU and its three libraries at priority 500, every other sid package at -1. */
export const SID_PIN = `# Added by ARCH's install.ts: only CRIU and its libraries may come from sid.
Package: criu libcompel1 libnet9 libnl-3-200
Pin: release n=sid
Pin-Priority: 500

Package: *
Pin: release n=sid
Pin-Priority: -1
`;

/** What the installer observed. */
export interface ObservedState {
  /** Installed package name to version (`dpkg-query`). */
  readonly installed: ReadonlyMap<string, string>;
  /** Content of the apt files this plan manages, by path (absent: no such file). */
  readonly files: ReadonlyMap<string, string>;
  /** `criu --version` output, if criu runs. */
  readonly criuVersion: string | undefined;
  /** The running kernel's release (`uname -r`). */
  readonly kernel: string;
  /** Whether the test engines are wanted, and whether they are already unpacked. */
  readonly testEngines?: { readonly wanted: boolean; readonly present: boolean };
}

/** One step of an install plan ({@link describeStep} says it in one line). */
export type Step =
  | { readonly kind: "write-file"; readonly path: string; readonly content: string }
  | { readonly kind: "apt-update" }
  | { readonly kind: "apt-install"; readonly packages: readonly string[]; readonly suite?: string }
  | {
    readonly kind: "unpack-engines";
    readonly dir: string;
    readonly packages: readonly string[];
    readonly suite: string;
  }
  | { readonly kind: "criu-check" };

/**
 * The steps to reach a working stack; only `criu-check` when everything is there.
 *
 * @example
 * ```ts
 * import { BASE_PACKAGES, planInstall, SID_CRIU_PACKAGES, TRIXIE_PACKAGES } from "./plan.ts";
 * const all = new Map([...TRIXIE_PACKAGES, ...BASE_PACKAGES, ...SID_CRIU_PACKAGES].map((p) => [p, "1"]));
 * const steps = planInstall({ installed: all, files: new Map(), criuVersion: "Version: 4.2.1", kernel: "6.18.0" });
 * if (steps.length !== 1 || steps[0]!.kind !== "criu-check") throw new Error();
 * ```
 */
export function planInstall(state: ObservedState): Step[] {
  const steps: Step[] = [];
  const missing = (names: readonly string[]) => names.filter((p) => !state.installed.has(p));
  const criuOk = state.criuVersion !== undefined && criuProblem(state.criuVersion, state.kernel) === undefined;
  const criuFromSid = (minimumCriu(state.kernel) as Version)[1] >= 2;
  const sid = criuOk ? [] : criuFromSid ? [...SID_CRIU_PACKAGES] : [];
  // CRIU from sid needs libraries newer than Debian 12's (libgnutls30t64, ...) that its pin
  // may not take from sid: trixie's CRIU is installed first (-t trixie brings them from
  // trixie), then replaced by sid's. Asked for alone, apt keeps Debian 12's and gives up.
  const trixie = [...missing(TRIXIE_PACKAGES), ...(!criuOk ? ["criu"] : [])];
  const base = missing(BASE_PACKAGES);
  const engines = state.testEngines?.wanted === true && !state.testEngines.present;
  const ensure = (path: string, content: string) => {
    if (state.files.get(path) !== content) steps.push({ kind: "write-file", path, content });
  };
  if (trixie.length > 0) {
    ensure(TRIXIE_SOURCE_PATH, TRIXIE_SOURCE);
    ensure(TRIXIE_PIN_PATH, TRIXIE_PIN);
  }
  if (sid.length > 0 || engines) {
    ensure(SID_SOURCE_PATH, SID_SOURCE);
    ensure(SID_PIN_PATH, SID_PIN);
  }
  if (trixie.length > 0 || sid.length > 0 || base.length > 0 || engines) steps.push({ kind: "apt-update" });
  if (base.length > 0) steps.push({ kind: "apt-install", packages: base });
  if (trixie.length > 0) steps.push({ kind: "apt-install", packages: trixie, suite: "trixie" });
  if (sid.length > 0) steps.push({ kind: "apt-install", packages: sid });
  if (engines) {
    steps.push({ kind: "unpack-engines", dir: TEST_ENGINES_DIR, packages: [...TEST_ENGINE_PACKAGES], suite: "sid" });
  }
  steps.push({ kind: "criu-check" });
  return steps;
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
    case "unpack-engines":
      return `unpack ${step.packages.map((p) => `${p}/${step.suite}`).join(" ")} into ${step.dir}`;
    case "criu-check":
      return "criu check";
  }
}

/** Every package the plan may install (for the programs test). */
export const ALL_PLANNED_PACKAGES: readonly string[] = [
  ...TRIXIE_PACKAGES,
  "criu",
  ...SID_CRIU_PACKAGES,
  ...BASE_PACKAGES,
];

/** What the installer itself needs, present on every Debian system (Priority: required). */
export const PREREQUISITE_PACKAGES: readonly string[] = ["apt"];
