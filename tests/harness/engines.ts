/**
 * The engine generations the embedded stack can run: the system's packages (runc 1.1,
 * containerd 1.7, Docker 26 from trixie) and the newer generation install.ts unpacks into a
 * private prefix with `--test-engines` (runc 1.3, containerd 2.x, Docker 28 from sid), which
 * never replaces the system's packages.
 */

import { SEARCH_PATH } from "../../src/process/programs.ts";
import { TEST_ENGINES_DIR } from "../../scripts/setup/plan.ts";

export interface Engines {
  /** Short name used in test names: `trixie`, `sid`. */
  readonly name: string;
  /** Package versions, for test names and the closing report. */
  readonly versions: Readonly<Record<string, string>>;
  readonly runc: string;
  readonly containerd: string;
  readonly dockerd: string;
  readonly docker: string;
  readonly ctr: string;
  /** PATH for the daemons: containerd finds its shim and dockerd its runc there. */
  readonly path: string;
}

function dpkgVersions(packages: readonly string[]): Record<string, string> {
  const out = new Deno.Command("dpkg-query", { args: ["-W", "-f", "${Package} ${Version}\\n", ...packages] })
    .outputSync();
  return Object.fromEntries(
    new TextDecoder().decode(out.stdout).split("\n").filter(Boolean).map((l) => l.split(" ") as [string, string]),
  );
}

const PACKAGES = ["runc", "containerd", "docker.io", "docker-cli"] as const;

/** The installed packages. */
export function systemEngines(): Engines {
  return {
    name: "trixie",
    versions: dpkgVersions(PACKAGES),
    runc: "/usr/sbin/runc",
    containerd: "/usr/bin/containerd",
    dockerd: "/usr/sbin/dockerd",
    docker: "/usr/bin/docker",
    ctr: "/usr/bin/ctr",
    path: SEARCH_PATH,
  };
}

/** The generation unpacked under `dir` (install.ts --test-engines), or `undefined` if absent. */
export function unpackedEngines(dir = TEST_ENGINES_DIR, name = "sid"): Engines | undefined {
  let versions: Record<string, string>;
  try {
    versions = JSON.parse(Deno.readTextFileSync(`${dir}/engines.json`));
  } catch {
    return undefined;
  }
  return {
    name,
    versions,
    runc: `${dir}/usr/sbin/runc`,
    containerd: `${dir}/usr/bin/containerd`,
    dockerd: `${dir}/usr/sbin/dockerd`,
    docker: `${dir}/usr/bin/docker`,
    ctr: `${dir}/usr/bin/ctr`,
    path: `${dir}/usr/sbin:${dir}/usr/bin:${SEARCH_PATH}`,
  };
}

/** `runc 1.1.15, containerd 1.7.24, docker 26.1.5` */
export function describeEngines(e: Engines): string {
  const short = (p: string) => (e.versions[p] ?? "?").replace(/[~+].*$/, "");
  return `runc ${short("runc")}, containerd ${short("containerd")}, docker ${short("docker.io")}`;
}
