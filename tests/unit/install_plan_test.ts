import { deepEqual as assertEquals } from "node:assert/strict";
import {
  BASE_PACKAGES,
  describeStep,
  parseCriuVersion,
  parseDpkgQuery,
  planInstall,
  TRIXIE_PACKAGES,
} from "../../src/install/plan.ts";

const all = () => new Map<string, string>([...TRIXIE_PACKAGES, ...BASE_PACKAGES].map((p) => [p, "1"]));

Deno.test("planInstall", async (t) => {
  await t.step("fresh Debian 12: trixie source, pin, update, installs, check", () => {
    const steps = planInstall({ installed: new Map(), trixieSource: false, trixiePin: false, criuVersion: undefined });
    assertEquals(steps.map(describeStep), [
      "write /etc/apt/sources.list.d/arch-trixie.sources",
      "write /etc/apt/preferences.d/arch-trixie",
      "apt-get update",
      `apt-get install ${BASE_PACKAGES.join(" ")}`,
      `apt-get install -t trixie ${TRIXIE_PACKAGES.join(" ")}`,
      "criu check",
    ]);
  });
  await t.step("everything there: only the check", () => {
    const steps = planInstall({ installed: all(), trixieSource: true, trixiePin: true, criuVersion: [4, 1] });
    assertEquals(steps.map(describeStep), ["criu check"]);
  });
  await t.step("Debian 12's criu 3.17 is replaced from trixie", () => {
    const steps = planInstall({ installed: all(), trixieSource: true, trixiePin: true, criuVersion: [3, 17] });
    assertEquals(steps.map(describeStep), ["apt-get update", "apt-get install -t trixie criu", "criu check"]);
  });
});

Deno.test("parsers", () => {
  assertEquals(parseCriuVersion("Version: 4.1.1\n"), [4, 1]);
  assertEquals(parseCriuVersion("nope"), undefined);
  assertEquals(
    [...parseDpkgQuery("criu ii 4.1.1-1\nrunc un <none>\ndocker.io:amd64 ii 26.1.5\n")],
    [["criu", "4.1.1-1"], ["docker.io", "26.1.5"]],
  );
});
