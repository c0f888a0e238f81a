/**
 * Kubernetes' path into containerd for the tests, without a kubelet: a small CRI client
 * (gRPC over containerd's unix socket, `@grpc/grpc-js` + `@grpc/proto-loader` with the CRI
 * proto of Debian's `golang-github-kubernetes-cri-api-dev`), the containerd configuration
 * that turns the CRI plugin on for a machine without internet (both config generations:
 * containerd 1.7 `version = 2`, containerd 2.x `version = 3`), and the pod sandbox ("pause")
 * image, built offline from a tiny static C program.
 *
 * Guarantees: every call has a deadline (no test hangs on a stuck daemon); the pause image is
 * deterministic and cached by the sha256 of its inputs; the configuration never reads or
 * writes the machine's own CNI configuration or IPAM state: pods with their own network get a
 * `ptp` veth pair and an address of a /24 chosen per stack, whose state lives in the scratch
 * directory (no bridge, no iptables rule: when a pod's network namespace goes, its veth pair
 * goes with it); host-network pods skip CNI. The one thing outside the scratch directory is
 * libcni's result cache (`/var/lib/cni/results`, which containerd does not let one move):
 * the network is named after the scratch directory, and the stack's sweep removes its
 * entries there (`stack.ts`). Requires the proto package, Debian's
 * `containernetworking-plugins` (for pods with their own network), gcc and GNU tar.
 */

import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { mustRun } from "../../src/process/exec.ts";
import { packOciArchive, sha256Hex } from "./image.ts";

/** Where Debian's `golang-github-kubernetes-cri-api-dev` puts the CRI proto (and its gogo import). */
export const CRI_PROTO_ROOT = "/usr/share/gocode/src";
/** The CRI v1 API, relative to {@link CRI_PROTO_ROOT}. */
export const CRI_PROTO = "k8s.io/cri-api/pkg/apis/runtime/v1/api.proto";
/** The pod sandbox image the CRI-enabled stack configures and imports. */
export const PAUSE_IMAGE = "docker.io/library/arch-pause:latest";
/** containerd's namespace for Kubernetes. */
export const CRI_NAMESPACE = "k8s.io";
/** How long one CRI call may take. */
const CALL_DEADLINE_MS = 60_000;

/** CRI `NamespaceMode`: `POD` shares the sandbox's, `CONTAINER` is the container's own, `NODE` the host's. */
export type NamespaceMode = "POD" | "CONTAINER" | "NODE" | "TARGET";

/** The namespace options the tests use: the node's network (no CNI), own pid namespace, IPC of the pod (kubelet's default). */
export const HOST_NETWORK = { network: "NODE", pid: "CONTAINER", ipc: "POD" } as const satisfies Record<
  string,
  NamespaceMode
>;

/** CRI `PodSandboxMetadata`. */
export interface PodMetadata {
  readonly name: string;
  readonly namespace: string;
  readonly uid: string;
  readonly attempt?: number;
}

/** The part of a CRI `PodSandboxConfig` the tests set. */
export interface PodSandboxConfig {
  readonly metadata: PodMetadata;
  readonly logDirectory: string;
  readonly hostname?: string;
  readonly labels?: Record<string, string>;
  readonly annotations?: Record<string, string>;
  readonly linux?: {
    readonly cgroupParent?: string;
    readonly securityContext?: {
      readonly namespaceOptions?: {
        readonly network?: NamespaceMode;
        readonly pid?: NamespaceMode;
        ipc?: NamespaceMode;
      };
    };
  };
}

/** The part of a CRI `ContainerConfig` the tests set. */
export interface ContainerConfig {
  readonly metadata: { readonly name: string; readonly attempt?: number };
  readonly image: { readonly image: string };
  readonly command?: readonly string[];
  readonly args?: readonly string[];
  readonly envs?: readonly { readonly key: string; readonly value: string }[];
  /** Relative to the sandbox's `logDirectory`. */
  readonly logPath?: string;
  readonly labels?: Record<string, string>;
  readonly annotations?: Record<string, string>;
  readonly linux?: PodSandboxConfig["linux"];
}

/** CRI `ContainerStatus` (the fields the tests read). */
export interface ContainerStatus {
  readonly id: string;
  readonly metadata: { readonly name: string; readonly attempt: number };
  /** `CONTAINER_CREATED`, `CONTAINER_RUNNING`, `CONTAINER_EXITED`, `CONTAINER_UNKNOWN`. */
  readonly state: string;
  readonly exitCode: number;
  readonly reason: string;
  readonly message: string;
  readonly logPath: string;
  readonly annotations: Record<string, string>;
}

/** One entry of CRI `ListContainers`. */
export interface ContainerSummary {
  readonly id: string;
  readonly podSandboxId: string;
  readonly metadata: { readonly name: string; readonly attempt: number };
  readonly state: string;
}

/** One entry of CRI `ListPodSandbox`. */
export interface PodSummary {
  readonly id: string;
  readonly metadata: PodMetadata;
  /** `SANDBOX_READY` or `SANDBOX_NOTREADY`. */
  readonly state: string;
  readonly runtimeHandler: string;
}

type Callback = (error: grpc.ServiceError | null, response: unknown) => void;
type Stub = grpc.Client & Record<string, (request: unknown, options: grpc.CallOptions, cb: Callback) => void>;

let services: { runtime: grpc.ServiceClientConstructor; image: grpc.ServiceClientConstructor } | undefined;

function loadServices() {
  if (services !== undefined) return services;
  const definition = protoLoader.loadSync(CRI_PROTO, {
    includeDirs: [CRI_PROTO_ROOT],
    longs: Number,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  // deno-lint-ignore no-explicit-any
  const v1 = (grpc.loadPackageDefinition(definition) as any).runtime.v1;
  services = { runtime: v1.RuntimeService, image: v1.ImageService };
  return services;
}

/**
 * A CRI client on a containerd socket: the calls a kubelet makes to run, inspect and remove
 * pods and their containers. Every call fails after {@link CALL_DEADLINE_MS}; a gRPC error
 * becomes an `Error` naming the call and the daemon's message.
 */
export class CriClient implements Disposable {
  readonly #runtime: Stub;
  readonly #image: Stub;

  /** Connects (lazily) to `unix://<socket>`; loads the proto on first use. */
  constructor(readonly socket: string) {
    const { runtime, image } = loadServices();
    const creds = grpc.credentials.createInsecure();
    this.#runtime = new runtime(`unix://${socket}`, creds) as unknown as Stub;
    this.#image = new image(`unix://${socket}`, creds) as unknown as Stub;
  }

  #call<T>(stub: Stub, method: string, request: unknown): Promise<T> {
    return new Promise((resolve, reject) => {
      stub[method]!.call(stub, request, { deadline: Date.now() + CALL_DEADLINE_MS }, (error, response) => {
        if (error) reject(new Error(`CRI ${method} failed: ${error.details || error.message}`));
        else resolve(response as T);
      });
    });
  }

  /** `Version`: the runtime's name and version. */
  version(): Promise<{ runtimeName: string; runtimeVersion: string; runtimeApiVersion: string }> {
    return this.#call(this.#runtime, "Version", { version: "v1" });
  }

  /** `RunPodSandbox` with the runtime handler (a RuntimeClass's `handler`); returns the sandbox id. */
  async runPodSandbox(config: PodSandboxConfig, runtimeHandler = ""): Promise<string> {
    const r = await this.#call<{ podSandboxId: string }>(this.#runtime, "RunPodSandbox", { config, runtimeHandler });
    return r.podSandboxId;
  }

  /** `StopPodSandbox`: stops the sandbox and every container in it. */
  async stopPodSandbox(podSandboxId: string): Promise<void> {
    await this.#call(this.#runtime, "StopPodSandbox", { podSandboxId });
  }

  /** `RemovePodSandbox`: removes the (stopped) sandbox and its containers. */
  async removePodSandbox(podSandboxId: string): Promise<void> {
    await this.#call(this.#runtime, "RemovePodSandbox", { podSandboxId });
  }

  /** `PodSandboxStatus`: the sandbox's state and (with its own network) its IP address. */
  async podSandboxStatus(podSandboxId: string): Promise<{ state: string; network: { ip: string } | null }> {
    return (await this.#call<{ status: { state: string; network: { ip: string } | null } }>(
      this.#runtime,
      "PodSandboxStatus",
      { podSandboxId },
    )).status;
  }

  /** `ListPodSandbox`: every sandbox the runtime knows. */
  async listPodSandbox(): Promise<PodSummary[]> {
    return (await this.#call<{ items: PodSummary[] }>(this.#runtime, "ListPodSandbox", {})).items;
  }

  /** `CreateContainer` in a sandbox (its config is needed again, as the kubelet passes it); returns the container id. */
  async createContainer(podSandboxId: string, config: ContainerConfig, sandboxConfig: PodSandboxConfig) {
    const r = await this.#call<{ containerId: string }>(this.#runtime, "CreateContainer", {
      podSandboxId,
      config,
      sandboxConfig,
    });
    return r.containerId;
  }

  /** `StartContainer`. */
  async startContainer(containerId: string): Promise<void> {
    await this.#call(this.#runtime, "StartContainer", { containerId });
  }

  /** `StopContainer` (SIGTERM, SIGKILL after `timeout` seconds). */
  async stopContainer(containerId: string, timeout = 0): Promise<void> {
    await this.#call(this.#runtime, "StopContainer", { containerId, timeout });
  }

  /** `ContainerStatus`. */
  async containerStatus(containerId: string): Promise<ContainerStatus> {
    return (await this.#call<{ status: ContainerStatus }>(this.#runtime, "ContainerStatus", { containerId })).status;
  }

  /** `ListContainers`, optionally of one sandbox. */
  async listContainers(podSandboxId?: string): Promise<ContainerSummary[]> {
    const filter = podSandboxId !== undefined ? { podSandboxId } : {};
    return (await this.#call<{ containers: ContainerSummary[] }>(this.#runtime, "ListContainers", { filter }))
      .containers;
  }

  /** `ImageStatus`: the image's id, or `undefined` when the runtime does not have it. */
  async imageId(image: string): Promise<string | undefined> {
    const r = await this.#call<{ image: { id: string } | null }>(this.#image, "ImageStatus", { image: { image } });
    return r.image?.id || undefined;
  }

  /** Stops and removes every pod sandbox (what a kubelet's drain does); returns what failed. */
  async removeAllPods(): Promise<string[]> {
    const problems: string[] = [];
    for (const pod of await this.listPodSandbox()) {
      try {
        await this.stopPodSandbox(pod.id);
        await this.removePodSandbox(pod.id);
      } catch (error) {
        problems.push(error instanceof Error ? error.message : String(error));
      }
    }
    return problems;
  }

  /** Closes both channels. */
  close(): void {
    this.#runtime.close();
    this.#image.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * The text of a container's CRI log file (`<timestamp> <stream> <P|F> <text>` lines), as the
 * container wrote it: partial lines (`P`) joined with their continuation.
 *
 * @example
 * ```ts
 * import { criLogText } from "./cri.ts";
 * const log = "2026-01-01T00:00:00Z stdout P tick \n2026-01-01T00:00:00Z stdout F 5\n";
 * if (criLogText(log) !== "tick 5\n") throw new Error();
 * ```
 */
export function criLogText(log: string): string {
  let out = "";
  for (const line of log.split("\n")) {
    const m = /^\S+ (?:stdout|stderr) ([PF]) ?(.*)$/.exec(line);
    if (m === null) continue;
    out += m[2]! + (m[1] === "F" ? "\n" : "");
  }
  return out;
}

/**
 * The configuration version a containerd of package version `containerdVersion` reads
 * natively: 3 for containerd 2.x, 2 for 1.x.
 *
 * @example
 * ```ts
 * import { containerdConfigVersion } from "./cri.ts";
 * if (containerdConfigVersion("2.1.9+ds1-5") !== 3 || containerdConfigVersion("1.7.24~ds1-6+b4") !== 2) throw new Error();
 * ```
 */
export function containerdConfigVersion(containerdVersion: string): 2 | 3 {
  return /^[2-9]\./.test(containerdVersion) ? 3 : 2;
}

/** Where Debian's `containernetworking-plugins` installs the CNI plugins. */
export const CNI_BIN_DIR = "/usr/lib/cni";

/** Where the CRI-enabled containerd keeps what it needs. */
export interface CriPaths {
  /** Scratch directory of the stack; CNI configuration, IPAM state and network namespaces stay below it. */
  readonly scratch: string;
  /** CNI plugins (default {@link CNI_BIN_DIR}). */
  readonly cniBinDir?: string;
}

/** The CNI configuration file of a stack: `<scratch>/cni/net.d/10-arch-test.conflist`. */
export function cniConfigPath(scratch: string): string {
  return `${scratch}/cni/net.d/10-arch-test.conflist`;
}

/**
 * The CNI network of a stack's pods (JSON of a `.conflist`), named after the scratch
 * directory: `ptp` (a veth pair per pod, a host route to its address, no masquerading) with
 * `host-local` addresses from `subnet`, its state under `<scratch>/cni/ipam`.
 *
 * @example
 * ```ts
 * import { cniNetwork } from "./cri.ts";
 * const net = JSON.parse(cniNetwork("/tmp/arch-stack-1", "10.77.3.0/24"));
 * if (net.name !== "arch-stack-1" || net.plugins[0].ipam.dataDir !== "/tmp/arch-stack-1/cni/ipam") throw new Error();
 * ```
 */
export function cniNetwork(scratch: string, subnet: string): string {
  return JSON.stringify(
    {
      cniVersion: "1.0.0",
      name: scratch.slice(scratch.lastIndexOf("/") + 1),
      plugins: [{
        type: "ptp",
        ipMasq: false,
        ipam: { type: "host-local", dataDir: `${scratch}/cni/ipam`, ranges: [[{ subnet }]] },
      }],
    },
    null,
    2,
  );
}

/** A random /24 in 10.64.0.0/10 for one stack's pods (stacks running at once should not share one). */
export function randomPodSubnet(): string {
  const [a, b] = crypto.getRandomValues(new Uint8Array(2));
  return `10.${64 + (a! % 64)}.${b}.0/24`;
}

/**
 * The CRI sections of a containerd configuration (appended to the stack's base config) for a
 * containerd that reads config `version` 2 (1.7) or 3 (2.x): the sandbox image is
 * {@link PAUSE_IMAGE} (imported, never pulled); the streaming server on loopback with a random
 * port; no AppArmor; no `oom_score_adj` below containerd's own (the pause container asks for
 * -998, which needs CAP_SYS_RESOURCE, missing in CI sandboxes like this one); CNI
 * configuration in `<scratch>/cni/net.d` (see {@link cniNetwork}); network namespaces under
 * the scratch state. The `arch` runtime handler is not here: `arch install containerd`
 * (or the test) adds it.
 */
export function criConfigSections(version: 2 | 3, paths: CriPaths): string[] {
  const cniConf = `${paths.scratch}/cni/net.d`;
  const cniBin = paths.cniBinDir ?? CNI_BIN_DIR;
  const grpcCri = '[plugins."io.containerd.grpc.v1.cri"]';
  const stream = ['  stream_server_address = "127.0.0.1"', '  stream_server_port = "0"'];
  if (version === 2) {
    return [
      grpcCri,
      `  sandbox_image = "${PAUSE_IMAGE}"`,
      ...stream,
      "  disable_apparmor = true",
      "  restrict_oom_score_adj = true",
      "  netns_mounts_under_state_dir = true",
      '  [plugins."io.containerd.grpc.v1.cri".cni]',
      `    bin_dir = "${cniBin}"`,
      `    conf_dir = "${cniConf}"`,
      '  [plugins."io.containerd.grpc.v1.cri".containerd]',
      '    default_runtime_name = "runc"',
      '    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]',
      '      runtime_type = "io.containerd.runc.v2"',
    ];
  }
  return [
    grpcCri,
    ...stream,
    '[plugins."io.containerd.cri.v1.images"]',
    '  [plugins."io.containerd.cri.v1.images".pinned_images]',
    `    sandbox = "${PAUSE_IMAGE}"`,
    '[plugins."io.containerd.cri.v1.runtime"]',
    "  disable_apparmor = true",
    "  restrict_oom_score_adj = true",
    "  netns_mounts_under_state_dir = true",
    '  [plugins."io.containerd.cri.v1.runtime".cni]',
    `    bin_dirs = ["${cniBin}"]`,
    `    conf_dir = "${cniConf}"`,
    '  [plugins."io.containerd.cri.v1.runtime".containerd]',
    '    default_runtime_name = "runc"',
    '    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]',
    '      runtime_type = "io.containerd.runc.v2"',
  ];
}

/** The pause program: waits for SIGTERM/SIGINT, reaps children (as Kubernetes' pause does). */
const PAUSE_C = `#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
static void quit(int sig) { (void)sig; _exit(0); }
static void reap(int sig) { (void)sig; while (waitpid(-1, 0, WNOHANG) > 0) {} }
int main(void) {
  signal(SIGTERM, quit);
  signal(SIGINT, quit);
  signal(SIGCHLD, reap);
  for (;;) pause();
}
`;

/**
 * Builds (or reuses) the pause image `PAUSE_IMAGE` as an OCI archive at
 * `<cacheDir>/arch-pause.oci.tar` (for `ctr images import`) and returns its path: one layer
 * holding the static `/pause` program.
 */
export async function buildPauseImage(cacheDir: string): Promise<string> {
  Deno.mkdirSync(cacheDir, { recursive: true });
  const stamp = await sha256Hex(new TextEncoder().encode(`pause v2\n${PAUSE_C}`));
  const out = `${cacheDir}/arch-pause.oci.tar`;
  try {
    if (Deno.readTextFileSync(`${out}.inputs`) === stamp) return out;
  } catch { /* not built yet */ }
  const work = Deno.makeTempDirSync({ dir: cacheDir, prefix: "pause-" });
  try {
    Deno.mkdirSync(`${work}/rootfs`);
    Deno.writeTextFileSync(`${work}/pause.c`, PAUSE_C);
    await mustRun({ cmd: "gcc", args: ["-static", "-O2", "-s", "-o", `${work}/rootfs/pause`, `${work}/pause.c`] });
    await packOciArchive({
      rootfs: `${work}/rootfs`,
      work,
      out,
      name: PAUSE_IMAGE,
      config: { Entrypoint: ["/pause"], WorkingDir: "/" },
    });
    Deno.writeTextFileSync(`${out}.inputs`, stamp);
    return out;
  } finally {
    Deno.removeSync(work, { recursive: true });
  }
}
