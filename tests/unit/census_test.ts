/**
 * The node census (`registry/census.ts`): runc's roots say what runs, the container's own
 * config.json says whether it opted in, ARCH's registry only adds what runc cannot tell. Every
 * way an opted-in container can escape protection shows as `unprotected` with its reason, in
 * `arch ls`'s rows, `arch doctor`'s check and the metrics. runc is replaced by a lister over
 * temporary directories laid out as runc leaves them.
 */

import { deepEqual as assertEquals, ok } from "node:assert/strict";
import { nodeCensus, type NodeContainer, type RuncListEntry, type RuncLister } from "../../src/registry/census.ts";
import { noteUnprotected } from "../../src/registry/unprotected.ts";
import { Registry } from "../../src/registry/registry.ts";
import { containerRows } from "../../src/cli/ls.ts";
import { protectionCheck } from "../../src/cli/doctor.ts";
import { applyEvent, emptyState, renderProm } from "../../src/observe/metrics.ts";

/** A node: `<top>/run/docker/runtime-runc/moby` reached as `<top>/var/run/...`, bundles, a state dir. */
class Node implements Disposable {
  readonly top = Deno.realPathSync(Deno.makeTempDirSync({ prefix: "arch-census-" }));
  readonly root = `${this.top}/run/docker/runtime-runc/moby`;
  /** The engine's spelling of the root (through the link), as the wrapper records it. */
  readonly givenRoot = `${this.top}/var/run/docker/runtime-runc/moby`;
  readonly stateDir = `${this.top}/state`;
  readonly criuConfigDir = `${this.top}/criu`;
  readonly registry = new Registry(this.stateDir);
  readonly listed: RuncListEntry[] = [];

  constructor() {
    Deno.mkdirSync(this.root, { recursive: true });
    Deno.mkdirSync(`${this.top}/var`);
    Deno.symlinkSync("../run", `${this.top}/var/run`);
  }

  /** A container runc runs, with `env` in its bundle's config.json. */
  container(id: string, env: string[], opts: { prepared?: boolean; status?: string } = {}): string {
    const bundle = `${this.top}/run/docker/containerd/daemon/moby/${id}`;
    Deno.mkdirSync(bundle, { recursive: true });
    const annotations = opts.prepared ? { "org.criu.config": `${this.criuConfigDir}/runc.conf` } : {};
    Deno.writeTextFileSync(`${bundle}/config.json`, JSON.stringify({ process: { env }, annotations }));
    Deno.mkdirSync(`${this.root}/${id}`);
    Deno.writeTextFileSync(
      `${this.root}/${id}/state.json`,
      JSON.stringify({ config: { labels: [`bundle=${bundle}`] } }),
    );
    this.listed.push({ id, status: opts.status ?? "running", bundle, pid: 4242 });
    return bundle;
  }

  record(id: string, bundle: string, root = this.givenRoot): void {
    this.registry.put({ namespace: "moby", id, root, bundle, key: `k-${id}`, createdAt: "2026-12-07T00:00:00Z" });
  }

  lister(broken?: string): RuncLister {
    return (root) =>
      Promise.resolve(
        root === broken
          ? { ok: false, error: "runc said no" }
          : { ok: true, list: root === this.root ? this.listed : [] },
      );
  }

  async census(broken?: string) {
    return await nodeCensus(this, this.lister(broken), [this.givenRoot]);
  }

  [Symbol.dispose](): void {
    Deno.removeSync(this.top, { recursive: true });
  }
}

const by = (cs: readonly NodeContainer[], id: string) => cs.find((c) => c.id === id);

Deno.test("census: each way an opted-in container escapes protection is named", async (t) => {
  using node = new Node();
  const enabled = ["ARCH_ENABLE=1", "ARCH_CHECKPOINT_ID=job-1"];
  const good = node.container("good", enabled, { prepared: true });
  node.record("good", good.replace(`${node.top}/run/`, `${node.top}/var/run/`)); // the engine's spelling
  node.container("plain", ["PATH=/bin"]);
  node.container("off", ["ARCH_ENABLE=0"]);
  node.container("norecord", enabled);
  node.container("lost", enabled, { prepared: true });
  node.container("other", enabled, { prepared: true });
  node.record("other", `${node.top}/run/docker/containerd/daemon/moby/good`); // a bundle of another container
  node.container("failopen", enabled);
  noteUnprotected(node.stateDir, "moby", "failopen", "ARCH failed while creating it: boom");
  const census = await node.census();

  const cases: [string, string, RegExp | undefined][] = [
    ["good", "protected", undefined],
    ["plain", "not-enabled", undefined],
    ["off", "not-enabled", undefined],
    ["norecord", "unprotected", /^no ARCH record: .*not created through arch-runc/],
    ["lost", "unprotected", /^ARCH prepared this container but has no record of it/],
    ["other", "unprotected", /describes another container/],
    ["failopen", "unprotected", /^ARCH failed while creating it: boom$/],
  ];
  for (const [id, protection, reason] of cases) {
    await t.step(`${id}: ${protection}`, () => {
      const c = by(census.containers, id);
      assertEquals(c?.protection, protection);
      assertEquals(c.namespace, "moby");
      if (reason !== undefined) ok(reason.test(c.reason ?? ""), c.reason ?? "no reason");
    });
  }
  assertEquals(by(census.containers, "norecord")?.requestedKey, "job-1");
  // The root is listed once, although named through the link and resolved.
  assertEquals(census.containers.filter((c) => c.id === "good").length, 1);
  assertEquals(census.problems, []);
});

Deno.test("census: a root runc cannot list is a problem, not silence", async () => {
  using node = new Node();
  node.container("a", ["ARCH_ENABLE=1"]);
  const census = await node.census(node.root);
  assertEquals(census.containers, []);
  assertEquals(census.problems, [`cannot list the containers of runc root "${node.root}": runc said no`]);
  const check = protectionCheck(census);
  assertEquals(check.map((c) => c.status), ["warn"], 'never "all protected" when a root was not read');
});

Deno.test("arch ls rows, doctor and metrics show an unprotected container with its reason", async () => {
  using node = new Node();
  const bundle = node.container("good", ["ARCH_ENABLE=1"], { prepared: true });
  node.record("good", bundle);
  node.container("bad", ["ARCH_ENABLE=1", "ARCH_CHECKPOINT_ID=\u001b[2Jjob"]);
  node.container("exited", ["ARCH_ENABLE=1"], { status: "stopped" });
  const census = await node.census();

  const rows = containerRows(node.registry.list(), ["running"], census);
  assertEquals(rows.map((r) => [r.id, r.state, r.protection]), [
    ["bad", "running", "unprotected"],
    ["exited", "stopped", "unprotected"],
    ["good", "running", "protected"],
  ]);
  ok(rows[0]!.reason?.startsWith("no ARCH record"), rows[0]!.reason ?? "no reason");

  const check = protectionCheck(census);
  assertEquals(check.map((c) => c.status), ["fail"], "a stopped container is not at risk");
  ok(check[0]!.detail.startsWith("moby/bad is not protected: no ARCH record"), check[0]!.detail);

  const prom = renderProm(
    applyEvent(emptyState(), { kind: "census", result: "ok", containers: { protected: 1, unprotected: 1 } }),
  );
  ok(prom.includes("\narch_unprotected_containers 1\n"), prom);
  ok(prom.includes("\narch_protected_containers 1\n"), prom);
});

Deno.test("census: a damaged record is a reason, not a crash; notes of gone containers are dropped", async () => {
  using node = new Node();
  node.container("damaged", ["ARCH_ENABLE=1"], { prepared: true });
  Deno.mkdirSync(`${node.stateDir}/registry/moby/damaged.json`, { recursive: true }); // not a file
  noteUnprotected(node.stateDir, "moby", "gone", "an old note");
  const census = await node.census();
  ok(/cannot be read \(damaged\)/.test(by(census.containers, "damaged")?.reason ?? ""), JSON.stringify(census));
  ok(!(await Deno.stat(`${node.stateDir}/unprotected/moby/gone.json`).then(() => true, () => false)));
});
