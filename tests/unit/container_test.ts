import { deepEqual as assertEquals } from "node:assert/strict";
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
      key: "aws-batch_0f3a",
      source: "AWS_BATCH_JOB_ID",
    }],
    ["aws batch array child", [["AWS_BATCH_JOB_ID", "0f3a:7"], ["AWS_BATCH_JOB_ARRAY_INDEX", "7"]], {}, {
      ok: true,
      key: "aws-batch_0f3a_7",
      source: "AWS_BATCH_JOB_ID",
    }],
    ["kubernetes pod", [], k8s, { ok: true, key: "k8s_batch_job-7-x2_main", source: "kubernetes" }],
    ["container id", [], {}, { ok: true, key: "c1", source: "container-id" }],
  ];
  for (const [name, env, annotations, expected] of cases) {
    await t.step(name, () => assertEquals(resolveKey(new Map(env), annotations, "c1"), expected));
  }
  for (const bad of ["../etc", "a/b", "..", "", "x y", "a\u0000b"]) {
    await t.step(`refuses ARCH_CHECKPOINT_ID=${JSON.stringify(bad)}`, () => {
      const r = resolveKey(new Map([["ARCH_CHECKPOINT_ID", bad]]), {}, "c1");
      assertEquals(r.ok, false);
      if (!r.ok) assertEquals(r.error.startsWith(`ARCH_CHECKPOINT_ID="${bad}" is not a valid checkpoint id`), true);
    });
  }
});
