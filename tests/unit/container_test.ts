import { deepEqual as assertEquals, notDeepEqual as assertNotEquals, ok } from "node:assert/strict";
import { envOf, isArchEnabled, resolveKey } from "../../src/config/container.ts";

Deno.test("envOf keeps the last definition and ignores malformed entries", () => {
  const env = envOf({ process: { env: ["A=1", "B=x=y", "A=2", "NOEQ", "=bad"] } });
  assertEquals([...env], [["A", "2"], ["B", "x=y"]]);
});

Deno.test("only ARCH_ENABLE=1 enables ARCH", async (t) => {
  for (
    const [value, expected] of [["1", true], ["true", false], ["0", false], ["", false], [undefined, false]] as const
  ) {
    await t.step(String(value), () => {
      const env = new Map(value === undefined ? [] : [["ARCH_ENABLE", value]]);
      assertEquals(isArchEnabled(env), expected);
    });
  }
});

Deno.test("resolveKey follows the key rules", async (t) => {
  const k8s = {
    "io.kubernetes.cri.sandbox-namespace": "batch",
    "io.kubernetes.cri.sandbox-name": "job-7-x2",
    "io.kubernetes.cri.container-name": "main",
  };
  const cases: [string, [string, string][], Record<string, string>, unknown][] = [
    ["explicit id wins", [["ARCH_CHECKPOINT_ID", "train-42"], ["AWS_BATCH_JOB_ID", "j"]], k8s, {
      ok: true,
      key: "train-42",
      source: "ARCH_CHECKPOINT_ID",
    }],
    ["aws batch job", [["AWS_BATCH_JOB_ID", "0f3a"]], k8s, {
      ok: true,
      key: "aws-batch_0f3a_09612b07b5ecb5a5",
      source: "AWS_BATCH_JOB_ID",
    }],
    ["aws batch array child", [["AWS_BATCH_JOB_ID", "0f3a:7"], ["AWS_BATCH_JOB_ARRAY_INDEX", "7"]], {}, {
      ok: true,
      key: "aws-batch_0f3a_7_09612b07b5ecb5a5",
      source: "AWS_BATCH_JOB_ID",
    }],
    ["kubernetes pod", [], k8s, { ok: true, key: "k8s_batch_job-7-x2_main", source: "kubernetes" }],
    ["container id", [], {}, { ok: true, key: "c1", source: "container-id" }],
  ];
  for (const [name, env, annotations, expected] of cases) {
    await t.step(name, () => assertEquals(resolveKey(new Map(env), annotations, "c1"), expected));
  }
  await t.step("point 1: the containers of one AWS Batch job get keys of their own", () => {
    const env = new Map([["AWS_BATCH_JOB_ID", "0f3a"]]);
    const main = resolveKey(env, {}, "c1", ["/bin/train", "--epochs", "9"]);
    const sidecar = resolveKey(env, {}, "c2", ["/bin/uploader"]);
    const node1 = resolveKey(new Map([...env, ["AWS_BATCH_JOB_NODE_INDEX", "1"]]), {}, "c3", ["/bin/train"]);
    const node2 = resolveKey(new Map([...env, ["AWS_BATCH_JOB_NODE_INDEX", "2"]]), {}, "c4", ["/bin/train"]);
    ok(main.ok && sidecar.ok && node1.ok && node2.ok);
    if (main.ok && sidecar.ok && node1.ok && node2.ok) {
      assertNotEquals(main.key, sidecar.key);
      assertNotEquals(node1.key, node2.key);
      // and stable: the same container of the next attempt finds its checkpoint
      assertEquals(resolveKey(env, {}, "other-id", ["/bin/train", "--epochs", "9"]), main);
    }
  });
  for (const bad of ["../etc", "a/b", "..", "", "x y", "a\u0000b"]) {
    await t.step(`refuses ARCH_CHECKPOINT_ID=${JSON.stringify(bad)}`, () => {
      const r = resolveKey(new Map([["ARCH_CHECKPOINT_ID", bad]]), {}, "c1");
      assertEquals(r.ok, false);
      if (!r.ok) {
        assertEquals(
          r.error.startsWith(`ARCH_CHECKPOINT_ID=${JSON.stringify(bad)} is not a valid checkpoint id`),
          true,
        );
      }
    });
  }
});

Deno.test("point 1: the key scope comes from what the container cannot set", async (t) => {
  const { keyScope } = await import("../../src/config/container_config.ts");
  const pod = { "io.kubernetes.cri.sandbox-namespace": "team-a" };
  await t.step("engine namespace", () => assertEquals(keyScope("moby", {}, undefined), "moby"));
  await t.step("kubernetes: the pod's namespace, set by the CRI plugin", () => {
    assertEquals(keyScope("k8s.io", pod, undefined), "k8s.io+team-a");
  });
  await t.step("the same annotation outside containerd's CRI namespace is the tenant's: ignored", () => {
    assertEquals(keyScope("moby", pod, undefined), "moby");
    assertEquals(keyScope("default", pod, undefined), "default");
  });
  await t.step("admin scope first", () => assertEquals(keyScope("k8s.io", pod, "pool-1"), "pool-1+k8s.io+team-a"));
  await t.step("a malformed pod namespace is not used", () => {
    assertEquals(keyScope("k8s.io", { "io.kubernetes.cri.sandbox-namespace": "../x" }, undefined), "k8s.io");
  });
});

Deno.test("finding 1: a key never collides with the store's own entries", async (t) => {
  for (const bad of [".tmp-x", "ckpt-x", ".claim", "current", "quarantine-1", ".current-1", ".removed-1", ".hidden"]) {
    await t.step(`refuses ARCH_CHECKPOINT_ID=${bad}`, () => {
      const r = resolveKey(new Map([["ARCH_CHECKPOINT_ID", bad]]), {}, "c1");
      assertEquals(r.ok, false);
      if (!r.ok) {
        ok(r.error.startsWith(`ARCH_CHECKPOINT_ID="${bad}" is not a valid checkpoint id: it `), r.error);
        ok(r.error.includes("choose another id"), r.error);
      }
    });
  }
  await t.step("names that only look alike are keys", () => {
    for (const good of ["current-job", "ckpt", "job.tmp-1", "my-ckpt-1", "claim"]) {
      assertEquals(resolveKey(new Map([["ARCH_CHECKPOINT_ID", good]]), {}, "c1").ok, true, good);
    }
  });
  await t.step("a container id that is such a name is refused (set ARCH_CHECKPOINT_ID)", () => {
    const r = resolveKey(new Map(), {}, "ckpt-1");
    assertEquals(r.ok, false);
    if (!r.ok) ok(r.error.startsWith('container id "ckpt-1" cannot be used as a checkpoint id'), r.error);
  });
  await t.step("derived keys cannot be such names", () => {
    const batch = resolveKey(new Map([["AWS_BATCH_JOB_ID", ".tmp-1"]]), {}, "c1");
    ok(batch.ok && batch.key.startsWith("aws-batch_"));
    const pod = resolveKey(new Map(), {
      "io.kubernetes.cri.sandbox-namespace": ".claim",
      "io.kubernetes.cri.sandbox-name": "current",
      "io.kubernetes.cri.container-name": "ckpt-1",
    }, "c1");
    ok(pod.ok && pod.key.startsWith("k8s_"));
  });
});
