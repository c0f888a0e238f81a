/**
 * Containers with network state, checkpointed and restored into a NEW container with the same
 * key, with real CRIU (>= 4.2: Linux >= 6.16 broke every TCP/UDP dump of older CRIU):
 * a TCP listener, an established loopback connection and a UDP socket. ARCH's policy (see
 * criu/config.ts): the dump never fails because of a connection; after the restore the
 * connection is closed, so the workload sees an error and reconnects, never a hang; the
 * listener and the UDP socket work as before. Through `ctr run` (a network namespace runc
 * made, whose loopback CRIU brings back down), Docker without a network, and Docker on a real
 * bridge network with requests from the host.
 */

import { deepEqual as assertEquals, ok } from "node:assert/strict";
import type { EmbeddedStack } from "../harness/stack.ts";
import { archCli, archCtrRun, archDockerRun, eventually, stackTest, uniqueName } from "./_env.ts";

const PORT = "8080";
const NET_WORKLOAD = ["workload", "--listen", PORT, "--interval-ms", "100", "--verify-every", "10"];

interface NetProgress {
  readonly starts: number;
  readonly ticks: number[];
  readonly lines: string[];
}

function parse(text: string): NetProgress {
  const lines = text.split("\n").filter(Boolean);
  return {
    starts: lines.filter((l) => l.startsWith("start ")).length,
    ticks: lines.filter((l) => l.startsWith("tick ")).map((l) => Number(l.split(" ")[1])),
    lines,
  };
}

/** Waits until `read` shows at least `n` ticks after `after`. */
async function ticksPast(read: () => Promise<NetProgress>, after: number, n: number): Promise<NetProgress> {
  return await eventually(`tick ${after + n}`, async () => {
    const p = await read();
    return (p.ticks.at(-1) ?? 0) >= after + n ? p : undefined;
  });
}

/** What a restored network workload must show: continuity, a closed-then-reopened connection, no hang, UDP fine. */
function assertNetworkResumed(before: NetProgress, after: NetProgress): void {
  const last = before.ticks.at(-1)!;
  assertEquals(after.starts, 0, "restored, not started fresh");
  assertEquals(after.ticks[0], last + 1, "the counter goes on from the checkpoint");
  ok(after.lines.some((l) => l.startsWith("conn closed")), "the restored connection is closed");
  ok(after.lines.some((l) => l === "conn reopened"), "the workload reconnected");
  assertEquals(
    after.lines.filter((l) => l === "conn hang" || l.startsWith("udp FAIL") || l.startsWith("verify FAIL")),
    [],
  );
  const rt = (line: string) => Number(line.split(" ")[7]);
  const tickLines = after.lines.filter((l) => l.startsWith("tick "));
  ok(rt(tickLines.at(-1)!) > rt(tickLines[0]!), "round trips over the new connection");
}

async function checkpoint(stack: EmbeddedStack, id: string): Promise<void> {
  const r = await archCli(stack, ["checkpoint", id]);
  assertEquals(r.code, 0, r.stdout + r.stderr);
}

stackTest("network state survives a restore", async (t, stack) => {
  await t.step("ctr (runc's own network namespace): loopback back up, listener, connection, UDP", async () => {
    const key = uniqueName("net-ctr");
    const [a, b] = [uniqueName("a"), uniqueName("b")];
    const [logA, logB] = [`${stack.scratch}/${a}.log`, `${stack.scratch}/${b}.log`];
    const read = (log: string) => async () => parse(await Deno.readTextFile(log).catch(() => ""));
    await stack.ctr(archCtrRun(a, key, NET_WORKLOAD, logA));
    await ticksPast(read(logA), 0, 10);
    await checkpoint(stack, a);
    const before = await read(logA)();
    await stack.ctr(["tasks", "delete", a], { check: false });
    await stack.ctr(["containers", "delete", a]);

    await stack.ctr(archCtrRun(b, key, NET_WORKLOAD, logB));
    const after = await ticksPast(read(logB), before.ticks.at(-1)!, 10);
    assertNetworkResumed(before, after);
    const probe = await stack.ctr(["tasks", "exec", "--exec-id", "probe", b, "nc", "127.0.0.1", PORT]);
    ok(/^tick \d+$/.test(probe.stdout.trim()), `the restored listener answers on 127.0.0.1: ${probe.stdout}`);
    const lo = await stack.ctr(["tasks", "exec", "--exec-id", "lo", b, "ip", "addr", "show", "lo"]);
    ok(lo.stdout.includes("UP") && lo.stdout.includes("127.0.0.1/8"), lo.stdout);
    await stack.ctr(["tasks", "kill", "--signal", "SIGKILL", b]);
    await eventually(
      "b stopped",
      async () => (await stack.ctr(["tasks", "delete", b], { check: false })).code === 0 || undefined,
    );
    await stack.ctr(["containers", "delete", b]);
  });

  const dockerRead = (name: string) => async () => parse((await stack.docker(["logs", name])).stdout);
  const dockerCase = async (network: string[], probe: (name: string) => Promise<string>) => {
    const key = uniqueName("net-docker");
    const [a, b] = [uniqueName("a"), uniqueName("b")];
    await stack.docker(archDockerRun(a, key, network, NET_WORKLOAD));
    await ticksPast(dockerRead(a), 0, 10);
    ok(/^tick \d+$/.test((await probe(a)).trim()), "the listener answers before the checkpoint");
    await checkpoint(stack, (await stack.docker(["inspect", "-f", "{{.Id}}", a])).stdout.trim());
    const before = await dockerRead(a)();
    await stack.docker(["rm", "-f", a]);
    await stack.docker(archDockerRun(b, key, network, NET_WORKLOAD));
    const after = await ticksPast(dockerRead(b), before.ticks.at(-1)!, 10);
    assertNetworkResumed(before, after);
    const answer = Number((await probe(b)).trim().split(" ")[1]);
    ok(answer > before.ticks.at(-1)!, `the restored listener answers (tick ${answer})`);
    await stack.docker(["rm", "-f", b]);
  };

  await t.step("docker --network none: listener, connection, UDP", async () => {
    await dockerCase([], async (name) => (await stack.docker(["exec", name, "nc", "127.0.0.1", PORT])).stdout);
  });

  await t.step("docker on a bridge network: the restored container serves requests from the host", async () => {
    const net = uniqueName("archnet");
    const subnet = `10.${200 + Math.floor(Math.random() * 50)}.${Math.floor(Math.random() * 250)}.0/24`;
    await stack.docker(["network", "create", "--driver", "bridge", "--subnet", subnet, net]);
    try {
      await dockerCase(["--network", net], async (name) => {
        const ip =
          (await stack.docker(["inspect", "-f", `{{(index .NetworkSettings.Networks "${net}").IPAddress}}`, name]))
            .stdout.trim();
        const conn = await Deno.connect({ hostname: ip, port: Number(PORT) });
        try {
          const buf = new Uint8Array(64);
          const n = await conn.read(buf);
          return new TextDecoder().decode(buf.subarray(0, n ?? 0));
        } finally {
          conn.close();
        }
      });
    } finally {
      await stack.docker(["network", "rm", net], { check: false });
    }
  });

  await t.step("a CRIU configuration chosen by the container (org.criu.config) is never used", async () => {
    const marker = `${stack.scratch}/tenant-script-ran`;
    const evil = `${stack.scratch}/tenant-criu.conf`;
    Deno.writeTextFileSync(`${stack.scratch}/tenant.sh`, `#!/bin/sh\ntouch ${marker}\n`, { mode: 0o755 });
    Deno.writeTextFileSync(evil, `action-script ${stack.scratch}/tenant.sh\n`);
    const name = uniqueName("annot");
    await stack.docker(archDockerRun(name, uniqueName("k"), ["--annotation", `org.criu.config=${evil}`]));
    await eventually("ticks", async () => (await dockerRead(name)()).ticks.length > 3 || undefined);
    await checkpoint(stack, (await stack.docker(["inspect", "-f", "{{.Id}}", name])).stdout.trim());
    ok(!(await Deno.stat(marker).then(() => true, () => false)), "the tenant's action script did not run");
    await stack.docker(["rm", "-f", name]);
  });
});
