/**
 * ARCH through Kubernetes' path, for real: containerd's CRI plugin driven by a CRI client as
 * a kubelet drives it (pod sandbox, container, RuntimeClass handler `arch`), with real runc
 * and CRIU. A pod's container that opts in with `ARCH_ENABLE=1` and no `ARCH_CHECKPOINT_ID`
 * gets its key from the pod's namespace and name and the container's name (the annotations
 * the CRI plugin writes into config.json), scoped to the pod's namespace: a rescheduled pod
 * (same namespace/name, new uid) resumes where the checkpoint stopped it; another pod does
 * not. Without `ARCH_ENABLE=1` the handler behaves as plain runc. Pods run on the node's
 * network, and one with its own (CNI) network namespace resumes in the new pod's namespace.
 */

import { deepEqual as assertEquals, ok } from "node:assert/strict";
import type { EmbeddedStack } from "../harness/stack.ts";
import { nodePath, TEST_IMAGE } from "../harness/stack.ts";
import {
  type ContainerConfig,
  type ContainerStatus,
  CriClient,
  criLogText,
  HOST_NETWORK,
  type PodSandboxConfig,
} from "../harness/cri.ts";
import type { Engines } from "../harness/engines.ts";
import { mustRun } from "../../src/process/exec.ts";
import { ARCH, ARCH_RUNC, archCli, eventually, stackTest, uniqueName } from "./_env.ts";
import { parseProgress, type Progress } from "./_workload.ts";

/** The RuntimeClass handler ARCH is installed as. */
const HANDLER = "arch";
const WORKLOAD = ["workload", "--interval-ms", "50", "--verify-every", "10"];

/**
 * Adds the `arch` runtime handler to the stack's containerd configuration before containerd
 * starts, as an admin does: `arch install containerd` (drop-in + `imports`).
 */
async function installHandler(scratch: string, engines: Engines): Promise<void> {
  // In the node, on containerd's default configuration path, as an admin does.
  await mustRun({
    cmd: "nsenter",
    args: [
      `--mount=${scratch}/ns/mnt`,
      "--",
      ARCH,
      "install",
      "containerd",
      "--arch-runc",
      ARCH_RUNC,
      "--containerd",
      engines.containerd,
      "--record",
      `${scratch}/arch/install.json`,
    ],
  });
  const dropIn = Deno.readTextFileSync(nodePath(scratch, "/etc/containerd/conf.d/arch.toml"));
  ok(dropIn.includes(`BinaryName = "${ARCH_RUNC}"`), dropIn);
}

/** A running pod sandbox, as a kubelet makes it. */
interface Sandbox {
  readonly id: string;
  readonly config: PodSandboxConfig;
}

/** A container of a sandbox, and where the CRI plugin writes its output. */
interface Pod {
  readonly sandboxId: string;
  readonly containerId: string;
  readonly config: PodSandboxConfig;
  readonly logFile: string;
}

interface ContainerSpec {
  readonly name: string;
  readonly env?: Record<string, string>;
  readonly command?: string[];
}

/** The node's network (no CNI), or a network namespace of the pod's own (CNI). */
type Network = "node" | "pod";

const namespaceOptions = (
  network: Network,
) => ({ ...HOST_NETWORK, network: network === "node" ? "NODE" : "POD" } as const);

async function runSandbox(
  stack: EmbeddedStack,
  cri: CriClient,
  pod: { namespace: string; name: string; handler: string; network?: Network },
): Promise<Sandbox> {
  const uid = crypto.randomUUID();
  const logDirectory = `${stack.scratch}/pods/${pod.namespace}_${pod.name}_${uid}`;
  Deno.mkdirSync(logDirectory, { recursive: true });
  const config: PodSandboxConfig = {
    metadata: { name: pod.name, namespace: pod.namespace, uid, attempt: 0 },
    logDirectory,
    linux: { securityContext: { namespaceOptions: namespaceOptions(pod.network ?? "node") } },
  };
  return { id: await cri.runPodSandbox(config, pod.handler), config };
}

/** Creates and starts a container in `sandbox`; `attempt` > 0 is the kubelet's restart of it. */
async function runContainer(cri: CriClient, sandbox: Sandbox, container: ContainerSpec, attempt = 0): Promise<Pod> {
  const logPath = `${container.name}/${attempt}.log`;
  const config: ContainerConfig = {
    metadata: { name: container.name, attempt },
    image: { image: TEST_IMAGE },
    command: container.command ?? WORKLOAD,
    envs: Object.entries(container.env ?? {}).map(([key, value]) => ({ key, value })),
    logPath,
    linux: { securityContext: sandbox.config.linux!.securityContext! },
  };
  const containerId = await cri.createContainer(sandbox.id, config, sandbox.config);
  const pod = {
    sandboxId: sandbox.id,
    containerId,
    config: sandbox.config,
    logFile: `${sandbox.config.logDirectory}/${logPath}`,
  };
  await cri.startContainer(containerId);
  return pod;
}

async function runPod(
  stack: EmbeddedStack,
  cri: CriClient,
  pod: { namespace: string; name: string; handler: string; network?: Network },
  container: ContainerSpec,
): Promise<Pod> {
  return await runContainer(cri, await runSandbox(stack, cri, pod), container);
}

async function removePod(cri: CriClient, pod: Pod): Promise<void> {
  await cri.stopPodSandbox(pod.sandboxId);
  await cri.removePodSandbox(pod.sandboxId);
}

const podProgress = async (pod: Pod) => parseProgress(criLogText(await Deno.readTextFile(pod.logFile).catch(() => "")));

const waitTicks = (pod: Pod, atLeast: number): Promise<Progress & { ticks: number[] }> =>
  eventually(`${pod.config.metadata.name} at tick ${atLeast}`, async () => {
    const p = await podProgress(pod);
    return p.lastTick >= atLeast ? p : undefined;
  }, 30_000);

const exited = (cri: CriClient, id: string): Promise<ContainerStatus> =>
  eventually(`container ${id} exited`, async () => {
    const s = await cri.containerStatus(id);
    return s.state === "CONTAINER_EXITED" ? s : undefined;
  }, 20_000);

interface LsRecord {
  readonly namespace: string;
  readonly id: string;
  readonly key: string;
}

async function archLs(stack: EmbeddedStack): Promise<LsRecord[]> {
  const r = await archCli(stack, ["ls", "--json"]);
  assertEquals(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as LsRecord[];
}

const exists = (path: string) => Deno.lstat(path).then(() => true, () => false);

stackTest("Kubernetes (CRI): a rescheduled pod resumes its container", async (t, stack) => {
  using cri = new CriClient(stack.containerdSock);
  const namespace = "team-a";
  const name = uniqueName("job");
  const key = `k8s_${namespace}_${name}_main`;
  const keyDir = `${stack.checkpointRoot}/k8s.io+${namespace}/${key}`;
  let lastTick = 0;

  await t.step("the CRI plugin answers and has the pause and test images", async () => {
    const v = await cri.version();
    assertEquals([v.runtimeName, v.runtimeApiVersion], ["containerd", "v1"]);
    ok(v.runtimeVersion.startsWith(stack.engines.versions.containerd!.slice(0, 3)), v.runtimeVersion);
    ok(await cri.imageId(TEST_IMAGE));
  });

  const main = { name: "main", env: { ARCH_ENABLE: "1" } };
  let sandbox: Sandbox | undefined;
  let running: Pod | undefined;

  await t.step(
    "an ARCH_ENABLE=1 container of a pod with handler arch is keyed by pod namespace/name/container",
    async () => {
      sandbox = await runSandbox(stack, cri, { namespace, name, handler: HANDLER });
      const pod = await runContainer(cri, sandbox, main);
      await waitTicks(pod, 10);
      const record = (await archLs(stack)).find((r) => r.id === pod.containerId);
      ok(record !== undefined, "arch ls lists the container");
      assertEquals([record.namespace, record.key], ["k8s.io", key]);

      const r = await archCli(stack, ["checkpoint", pod.containerId]);
      assertEquals(r.code, 0, r.stdout + r.stderr);
      ok(r.stdout.includes(`key=${key}`), r.stdout);
      ok(Deno.readLinkSync(`${keyDir}/current`).startsWith("ckpt-"), "committed under <root>/k8s.io+<ns>/<key>");
      assertEquals((await exited(cri, pod.containerId)).state, "CONTAINER_EXITED");
      lastTick = (await podProgress(pod)).lastTick;
      ok(lastTick >= 10);
    },
  );

  await t.step("the kubelet's restart of the container in the same pod (attempt 1) resumes it", async () => {
    const pod = await runContainer(cri, sandbox!, main, 1);
    const p = await waitTicks(pod, lastTick + 5);
    assertEquals([p.starts, p.ticks[0], p.verifyFailures], [0, lastTick + 1, 0]);
    running = pod;
  });

  await t.step("arch finalize checkpoints it; a restart on the draining node is refused, the pod removed", async () => {
    const r = await archCli(stack, ["finalize"]);
    assertEquals(r.code, 0, r.stdout + r.stderr);
    ok(r.stdout.includes(`key=${key}`), r.stdout);
    await exited(cri, running!.containerId);
    lastTick = (await podProgress(running!)).lastTick;
    const refused = await runContainer(cri, sandbox!, main, 2).then(() => "started", (e: Error) => e.message);
    ok(refused.includes('node is draining after "arch finalize"'), refused);
    assertEquals((await archCli(stack, ["finalize", "--undo"])).code, 0);
    assertEquals((await cri.listContainers(sandbox!.id)).map((c) => c.metadata.attempt).sort(), [0, 1, 2]);
    await removePod(cri, running!);
    assertEquals((await cri.listPodSandbox()).filter((p) => p.id === sandbox!.id), []);
    assertEquals(await cri.listContainers(sandbox!.id), []);
    ok(await exists(`${keyDir}/current`), "the checkpoint outlives the pod");
  });

  await t.step("another pod (other name, or same name in another namespace) starts fresh", async () => {
    for (const other of [{ namespace, name: uniqueName("other") }, { namespace: "team-b", name }]) {
      const pod = await runPod(stack, cri, { ...other, handler: HANDLER }, { name: "main", env: { ARCH_ENABLE: "1" } });
      const p = await waitTicks(pod, 3);
      assertEquals([p.starts, p.ticks[0]], [1, 1], `${other.namespace}/${other.name} started fresh`);
      await removePod(cri, pod);
    }
    ok(await exists(`${keyDir}/current`), "the first pod's checkpoint is untouched");
  });

  await t.step("the same pod namespace/name with a new uid resumes the container: tick N+1", async () => {
    const pod = await runPod(stack, cri, { namespace, name, handler: HANDLER }, {
      name: "main",
      env: { ARCH_ENABLE: "1" },
    });
    const p = await waitTicks(pod, lastTick + 10);
    assertEquals(p.starts, 0, "no fresh start: restored");
    assertEquals(p.ticks[0], lastTick + 1);
    assertEquals(p.verifyFailures, 0);
    assertEquals((await cri.containerStatus(pod.containerId)).state, "CONTAINER_RUNNING");
    await removePod(cri, pod);
  });
}, { cri: true, prepare: installHandler });

stackTest("Kubernetes (CRI): handler arch without ARCH_ENABLE=1 runs as plain runc", async (_t, stack) => {
  using cri = new CriClient(stack.containerdSock);
  const command = ["workload", "--interval-ms", "10", "--exit-after", "3", "--exit-code", "7"];
  const observe = async (handler: string) => {
    const pod = await runPod(stack, cri, { namespace: "plain", name: uniqueName("p"), handler }, {
      name: "main",
      command,
    });
    const status = await exited(cri, pod.containerId);
    const text = criLogText(await Deno.readTextFile(pod.logFile));
    const listed = (await archLs(stack)).some((r) => r.id === pod.containerId);
    await removePod(cri, pod);
    return { exitCode: status.exitCode, reason: status.reason, stdout: text, listed };
  };
  const runc = await observe("");
  const arch = await observe(HANDLER);
  assertEquals(runc.exitCode, 7);
  assertEquals(arch, runc);
}, { cri: true, prepare: installHandler });

stackTest(
  "Kubernetes (CRI): a pod with its own network (CNI) resumes there, its listener at the new address",
  async (t, stack) => {
    using cri = new CriClient(stack.containerdSock);
    const pod = { namespace: "team-net", name: uniqueName("srv"), handler: HANDLER, network: "pod" as const };
    const port = 8080;
    const main = {
      name: "main",
      env: { ARCH_ENABLE: "1" },
      command: ["workload", "--listen", String(port), "--interval-ms", "50", "--verify-every", "10"],
    };
    /** What the workload's listener answers at the pod's address (`tick N`). */
    const ask = async (sandboxId: string) => {
      const ip = (await cri.podSandboxStatus(sandboxId)).network?.ip ?? "";
      ok(/^10\.\d+\.\d+\.\d+$/.test(ip), `the pod has an address of the stack's network: "${ip}"`);
      const conn = await Deno.connect({ hostname: ip, port });
      try {
        const buf = new Uint8Array(64);
        const n = await conn.read(buf);
        return new TextDecoder().decode(buf.subarray(0, n ?? 0)).trim();
      } finally {
        conn.close();
      }
    };
    let lastTick = 0;

    await t.step("checkpoint of the container in a pod network namespace", async () => {
      const first = await runPod(stack, cri, pod, main);
      await waitTicks(first, 5);
      ok(/^tick \d+$/.test(await ask(first.sandboxId)), "the listener answers before the checkpoint");
      const r = await archCli(stack, ["checkpoint", first.containerId]);
      assertEquals(r.code, 0, r.stdout + r.stderr);
      await exited(cri, first.containerId);
      lastTick = (await podProgress(first)).lastTick;
      await removePod(cri, first);
    });

    await t.step("the pod created again resumes in its new network namespace and answers at its address", async () => {
      const second = await runPod(stack, cri, pod, main);
      const p = await waitTicks(second, lastTick + 5);
      assertEquals([p.starts, p.ticks[0], p.verifyFailures], [0, lastTick + 1, 0]);
      const answer = await ask(second.sandboxId);
      ok(/^tick \d+$/.test(answer) && Number(answer.split(" ")[1]) > lastTick, `restored listener: "${answer}"`);
      await removePod(cri, second);
    });
  },
  { cri: true, prepare: installHandler },
);
