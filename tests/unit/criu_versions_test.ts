/** src/criu/versions.ts: when a checkpoint's tool versions cannot be restored on this host. */

import { deepEqual as assertEquals, ok } from "node:assert/strict";
import { incompatibility, type ToolVersions } from "../../src/criu/versions.ts";

Deno.test("incompatibility", () => {
  const v = (criu: string, cpuArch = "x86_64"): ToolVersions => ({
    arch: { version: "0.1.0" },
    runc: { version: "1.1.15" },
    criu: { version: criu },
    kernel: "6.18",
    cpuArch,
  });
  assertEquals(incompatibility(v("4.1.1"), v("4.1.1")), undefined);
  assertEquals(incompatibility(v("4.0"), v("4.1.1")), undefined);
  ok(incompatibility(v("5.0"), v("4.1.1"))?.includes("CRIU 5.0"));
  ok(incompatibility(v("4.1", "aarch64"), v("4.1"))?.includes("aarch64"));
});
