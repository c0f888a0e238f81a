/**
 * The two-nodes infrastructure of the migration tests (tests/harness/nodes.ts) does what those
 * tests rely on: two nodes, each with its own engines and namespaces, share one network file
 * system at the same path (which the host does not see mounted); containers of both engines
 * on both nodes use it through bind mounts; CRIU dumps a container with such a bind mount;
 * one node's shared file system can be broken and brought back; and teardown leaves no
 * process, mount or namespace behind, also after the test process was killed (the test
 * runner's sweep). Runs on the system's engines only: what it proves is
 * the infrastructure, not the engines. Prints its timings as one JSON line.
 */

import { deepEqual as assertEquals, ok } from "node:assert/strict";
import { type Node, SERVER_ADDRESS, TwoNodes } from "../harness/nodes.ts";
import { processesMentioning, sweepScratch } from "../harness/stack.ts";
import { describeEngines, systemEngines } from "../harness/engines.ts";
import { ARCH, ARCH_RUNC, archDockerRun, eventually, ROOT, SKIP, uniqueName } from "./_env.ts";

const IMAGE = "docker.io/library/arch-test:latest";

function startNodes(): Promise<TwoNodes> {
  return TwoNodes.start({
    archRunc: ARCH_RUNC,
    engines: systemEngines(),
    workloadSource: `${ROOT}/tests/fixtures/workload.c`,
    imageCache: `${ROOT}/.cache/image`,
    keep: Deno.env.get("ARCH_KEEP_STACK") === "1",
  });
}

/** Mount points of the host's own mount table (this process's) at or below `dir`. */
const hostMountsUnder = (dir: string) =>
  Deno.readTextFileSync("/proc/self/mountinfo").split("\n").map((l) => l.split(" ")[4] ?? "")
    .filter((p) => p === dir || p.startsWith(`${dir}/`));

/** Processes in one of these namespaces (`net:[...]`, as `/proc/<pid>/ns/*` links read). */
function processesIn(namespaces: readonly string[]): number[] {
  const pids: number[] = [];
  for (const entry of Deno.readDirSync("/proc")) {
    const pid = Number(entry.name);
    if (!Number.isInteger(pid)) continue;
    for (const kind of ["mnt", "net", "uts"]) {
      try {
        if (namespaces.includes(Deno.readLinkSync(`/proc/${pid}/ns/${kind}`))) pids.push(pid);
      } catch { /* gone */ }
    }
  }
  return pids;
}

const exists = (path: string) => Deno.stat(path).then(() => true, () => false);

async function timed<T>(timings: Record<string, number>, name: string, step: () => Promise<T>): Promise<T> {
  const began = performance.now();
  try {
    return await step();
  } finally {
    timings[name] = Math.round(performance.now() - began);
  }
}

Deno.test({
  name: SKIP ? "two nodes on one machine" : `two nodes on one machine [${describeEngines(systemEngines())}]`,
  ignore: SKIP,
  sanitizeResources: false,
  sanitizeOps: false,
}, async (t) => {
  const timings: Record<string, number> = {};
  const nodes = await timed(timings, "startTotal", startNodes);
  const { a, b, shared } = nodes;
  const stacks = [a.stack.scratch, b.stack.scratch];
  const namespaces = nodes.namespaceIds();
  try {
    await t.step("both nodes run their own engines under their own hostname", async () => {
      assertEquals(namespaces.length, 7, namespaces.join(" "));
      for (const node of [a, b]) {
        assertEquals((await node.run({ cmd: "hostname", args: [] })).stdout.trim(), node.hostname);
        ok((await node.docker(["version", "-f", "{{.Server.Version}}"])).stdout.trim() !== "");
        ok((await node.ctr(["version"])).stdout.includes("Server:"));
      }
      assertEquals(JSON.parse(Deno.readTextFileSync(a.archConfig)).sharedFsRoots, [shared]);
      ok(a.archConfig !== b.archConfig && a.stack.archStateDir !== b.stack.archStateDir);
      assertEquals(
        Deno.readFileSync(`${a.stack.scratch}/arch/secret`),
        Deno.readFileSync(`${b.stack.scratch}/arch/secret`),
        "both nodes hold the same checkpoint secret",
      );
    });

    await t.step("a file written through node A's mount is read through node B's at the same path", async () => {
      const text = `${uniqueName("hello")}\n`;
      await timed(timings, "writeThroughA", () => a.writeText(`${shared}/hello`, text));
      assertEquals(await timed(timings, "readThroughB", () => b.readText(`${shared}/hello`)), text);
      // B rewrites it: A sees the change at once (no cache across nodes)
      await b.writeText(`${shared}/hello`, `${text}again\n`);
      assertEquals(await a.readText(`${shared}/hello`), `${text}again\n`);
      assertEquals(Deno.readTextFileSync(`${nodes.export}/hello`), `${text}again\n`, "it is on the server");
      // the shared root is as ARCH requires it: root-owned, not writable by group or others
      assertEquals((await a.run({ cmd: "stat", args: ["-c", "%u %a", shared] })).stdout.trim(), "0 755");
    });

    await t.step("the host does not see the nodes' mounts; each node sees its own", () => {
      assertEquals(hostMountsUnder(shared), []);
      assertEquals([...Deno.readDirSync(shared)], [], "the host's directory stays empty");
      const host = Deno.readTextFileSync("/proc/self/mountinfo");
      ok(!host.includes(`${SERVER_ADDRESS}:${nodes.export}`), "no mount of the server's directory on the host");
      for (const node of [a, b]) {
        const table = Deno.readTextFileSync(`/proc/${node.sshfsPid}/mountinfo`).split("\n");
        ok(table.some((l) => l.split(" ")[4] === shared && l.includes(" - fuse.sshfs ")), node.hostname);
        ok(table.some((l) => l.split(" ")[4] === "/run"), `${node.hostname} has its own /run`);
      }
    });

    await t.step("containers of both engines on each node share files through a bind mount", async () => {
      const pairs: [Node, Node][] = [[a, b], [b, a]];
      for (const [writer, reader] of pairs) {
        const dir = `${shared}/x-${writer.hostname}`;
        const docker = uniqueName("docker");
        await timed(timings, `dockerRunRm-${writer.hostname}`, () =>
          writer.docker([
            "run",
            "--rm",
            "--network",
            "none",
            "--runtime",
            "arch",
            "-v",
            `${dir}:/data`,
            "arch-test",
            "sh",
            "-c",
            `echo ${docker} > /data/docker`,
          ]));
        assertEquals(await reader.readText(`${dir}/docker`), `${docker}\n`);
        const ctr = uniqueName("ctr");
        await timed(timings, `ctrRunRm-${writer.hostname}`, () =>
          writer.ctr([
            "run",
            "--rm",
            "--runc-binary",
            ARCH_RUNC,
            "--mount",
            `type=bind,src=${dir},dst=/data,options=rbind:rw`,
            IMAGE,
            ctr,
            "sh",
            "-c",
            `echo ${ctr} > /data/ctr`,
          ]));
        assertEquals(await reader.readText(`${dir}/ctr`), `${ctr}\n`);
      }
    });

    await t.step("arch finalize on node A dumps a container with a bind mount of the shared FS", async () => {
      const key = uniqueName("k");
      const name = uniqueName("c");
      const workload = ["workload", "--interval-ms", "50", "--state-file", "/data/state"];
      await a.docker(archDockerRun(name, key, ["-v", `${shared}/ck:/data`], workload));
      await eventually("ticks on the shared FS", async () => {
        const state = await b.readText(`${shared}/ck/state`).catch(() => "");
        return Number(/^tick (\d+)$/m.exec(state)?.[1] ?? 0) >= 5 ? true : undefined;
      });
      const r = await timed(timings, "finalizeA", () => a.run({ cmd: ARCH, args: ["finalize"] }, false));
      assertEquals(r.code, 0, r.stdout + r.stderr);
      ok(r.stdout.startsWith("ok "), r.stdout);
      ok(Deno.readLinkSync(`${a.stack.checkpointRoot}/moby/${key}/current`).startsWith("ckpt-"));
      assertEquals((await a.docker(["inspect", "-f", "{{.State.Running}}", name])).stdout.trim(), "false");
    });

    await t.step("node A's shared FS disappears (ENOTCONN) and comes back; node B's goes on", async () => {
      await a.killSharedFs();
      ok(!(await a.sharedFsAnswers()), "node A's mount is dead");
      const dead = await a.run({ cmd: "cat", args: [`${shared}/hello`] }, false);
      ok(dead.stderr.includes("Transport endpoint is not connected"), dead.stderr);
      ok(await b.sharedFsAnswers(), "node B's mount lives");
      await timed(timings, "remountA", () => a.remountSharedFs());
      ok((await a.readText(`${shared}/hello`)).includes("again"));
    });

    await t.step("node B's link is cut: its shared FS blocks, then goes on once the link is back", async () => {
      await b.setLink(false);
      let done = false;
      const read = b.readText(`${shared}/hello`).finally(() => done = true);
      await new Promise((r) => setTimeout(r, 1000));
      ok(!done, "a read blocks while the link is cut");
      await b.setLink(true);
      ok((await timed(timings, "readAfterLinkBack", () => read)).includes("again"));
    });
  } finally {
    const problems = await nodes.stop();
    timings.stop = nodes.timings.stop ?? 0;
    console.log(JSON.stringify({ twoNodes: { start: nodes.timings, test: timings } }));
    await t.step("teardown leaves no process, mount or namespace behind", async () => {
      assertEquals(problems, []);
      for (const dir of [nodes.scratch, ...stacks]) {
        assertEquals(processesMentioning(dir), [], dir);
        assertEquals(hostMountsUnder(dir), [], dir);
        if (Deno.env.get("ARCH_KEEP_STACK") !== "1") ok(!(await exists(dir)), `${dir} is removed`);
      }
      await eventually(
        "the namespaces' last processes to end",
        () => Promise.resolve(processesIn(namespaces).length === 0 ? true : undefined),
        5_000,
      );
      const nsfs = Deno.readTextFileSync("/proc/self/mountinfo").split("\n")
        .filter((l) => namespaces.some((ns) => l.includes(ns)));
      assertEquals(nsfs, [], "no namespace file is mounted");
    });
  }
});

/**
 * What a test process that dies with two nodes running leaves behind: started by `deno eval`,
 * it prints its directories and namespaces and waits to be killed.
 */
const ORPHAN = (marker: string) => `
import { TwoNodes } from ${JSON.stringify(new URL("../harness/nodes.ts", import.meta.url).href)};
import { systemEngines } from ${JSON.stringify(new URL("../harness/engines.ts", import.meta.url).href)};
const nodes = await TwoNodes.start({
  archRunc: ${JSON.stringify(ARCH_RUNC)},
  engines: systemEngines(),
  workloadSource: ${JSON.stringify(`${ROOT}/tests/fixtures/workload.c`)},
  imageCache: ${JSON.stringify(`${ROOT}/.cache/image`)},
});
const sleeper = ["sh", "-c", "sleep 1000; echo ${marker}"];
for (const node of nodes.nodes) {
  await node.docker(["run", "-d", "--network", "none", "-v", nodes.shared + "/o:/data", "arch-test", ...sleeper]);
  const bind = "type=bind,src=" + nodes.shared + "/o,dst=/data,options=rbind:rw";
  await node.ctr(["run", "-d", "--mount", bind, ${JSON.stringify(IMAGE)}, "${marker}-" + node.name, ...sleeper]);
}
const stacks = nodes.nodes.map((n) => n.stack.scratch);
console.log(JSON.stringify({ scratch: nodes.scratch, stacks, namespaces: nodes.namespaceIds() }));
await new Promise((r) => setTimeout(r, 600_000));
`;

Deno.test({
  name: "two nodes: the test runner's sweep removes what a killed test process left",
  ignore: SKIP,
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  const registry = Deno.makeTempFileSync({ prefix: "arch-nodes-registry-" });
  const marker = uniqueName("orphan");
  const child = new Deno.Command(Deno.execPath(), {
    args: ["eval", ORPHAN(marker)],
    cwd: ROOT,
    env: { ARCH_TEST_STACKS: registry },
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const registered = () => Deno.readTextFileSync(registry).split("\n").filter(Boolean);
  let swept = false;
  try {
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let out = "";
    while (!out.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) break;
      out += value;
    }
    const outer = Deno.env.get("ARCH_TEST_STACKS");
    // Should this test die too, the run's own sweep still finds them.
    if (outer !== undefined) Deno.writeTextFileSync(outer, Deno.readTextFileSync(registry), { append: true });
    const left: { scratch: string; stacks: string[]; namespaces: string[] } = JSON.parse(out);
    // the containers' shells (once runc's init has exec'd them), and the ctr containers' shims
    await eventually(
      "a container of each engine on each node",
      () => Promise.resolve(processesMentioning(marker).length >= 6 ? true : undefined),
    );
    child.kill("SIGKILL");
    await child.status;
    await reader.cancel();
    ok(processesMentioning(left.scratch).length > 0, "the killed process left its FUSE clients and server running");
    ok(processesIn(left.namespaces).length > 0, "and its nodes' daemons");

    // what scripts/test.ts does after a run: sweep every directory registered, in order
    const dirs = registered();
    assertEquals(new Set(dirs), new Set([left.scratch, ...left.stacks]), "all of them were registered");
    swept = true;
    for (const dir of dirs) assertEquals(await sweepScratch(dir, "/usr/sbin/runc"), [], dir);
    assertEquals(processesMentioning(marker), [], "the containers are gone");
    for (const dir of dirs) {
      assertEquals(processesMentioning(dir), [], dir);
      assertEquals(hostMountsUnder(dir), [], dir);
      ok(!(await exists(dir)), `${dir} is removed`);
    }
    await eventually(
      "the namespaces' last processes to end",
      () => Promise.resolve(processesIn(left.namespaces).length === 0 ? true : undefined),
      5_000,
    );
  } finally {
    // a failed check must not leave the orphan running
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
    await child.status;
    if (!swept) { for (const dir of registered()) await sweepScratch(dir, "/usr/sbin/runc"); }
    Deno.removeSync(registry);
  }
});
