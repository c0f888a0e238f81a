import { deepEqual as assertEquals, ok } from "node:assert/strict";
import {
  BASE_PACKAGES,
  describeStep,
  parseDpkgQuery,
  planInstall,
  SID_CRIU_PACKAGES,
  SID_PIN,
  SID_PIN_PATH,
  SID_SOURCE,
  SID_SOURCE_PATH,
  TEST_ENGINES_DIR,
  TRIXIE_PACKAGES,
  TRIXIE_PIN,
  TRIXIE_PIN_PATH,
  TRIXIE_SOURCE,
  TRIXIE_SOURCE_PATH,
} from "../../scripts/setup/plan.ts";
import { criuProblem, minimumCriu } from "../../src/criu/compat.ts";

const all = () =>
  new Map<string, string>([...TRIXIE_PACKAGES, ...BASE_PACKAGES, ...SID_CRIU_PACKAGES].map((p) => [p, "1"]));
const aptFiles = new Map([
  [TRIXIE_SOURCE_PATH, TRIXIE_SOURCE],
  [TRIXIE_PIN_PATH, TRIXIE_PIN],
  [SID_SOURCE_PATH, SID_SOURCE],
  [SID_PIN_PATH, SID_PIN],
]);
const NEW_KERNEL = "6.18.44-fc-v782";

Deno.test("planInstall", async (t) => {
  await t.step("fresh Debian 12 on Linux 6.18: sources, pins, engines from trixie, CRIU from sid", () => {
    const steps = planInstall({ installed: new Map(), files: new Map(), criuVersion: undefined, kernel: NEW_KERNEL });
    assertEquals(steps.map(describeStep), [
      `write ${TRIXIE_SOURCE_PATH}`,
      `write ${TRIXIE_PIN_PATH}`,
      `write ${SID_SOURCE_PATH}`,
      `write ${SID_PIN_PATH}`,
      "apt-get update",
      `apt-get install ${BASE_PACKAGES.join(" ")}`,
      `apt-get install -t trixie ${[...TRIXIE_PACKAGES, "criu"].join(" ")}`,
      `apt-get install ${SID_CRIU_PACKAGES.join(" ")}`,
      "criu check",
    ]);
  });
  await t.step("fresh Debian 12 on an older kernel: CRIU from trixie, no sid source", () => {
    const steps = planInstall({ installed: new Map(), files: new Map(), criuVersion: undefined, kernel: "6.1.0-13" });
    assertEquals(steps.map(describeStep), [
      `write ${TRIXIE_SOURCE_PATH}`,
      `write ${TRIXIE_PIN_PATH}`,
      "apt-get update",
      `apt-get install ${BASE_PACKAGES.join(" ")}`,
      `apt-get install -t trixie ${[...TRIXIE_PACKAGES, "criu"].join(" ")}`,
      "criu check",
    ]);
  });
  await t.step("everything there: only the check", () => {
    const steps = planInstall({ installed: all(), files: aptFiles, criuVersion: "Version: 4.2.1", kernel: NEW_KERNEL });
    assertEquals(steps.map(describeStep), ["criu check"]);
  });
  await t.step("trixie's CRIU 4.1 on Linux >= 6.16 is replaced from sid", () => {
    const steps = planInstall({ installed: all(), files: aptFiles, criuVersion: "Version: 4.1.1", kernel: NEW_KERNEL });
    assertEquals(steps.map(describeStep), [
      "apt-get update",
      "apt-get install -t trixie criu",
      `apt-get install ${SID_CRIU_PACKAGES.join(" ")}`,
      "criu check",
    ]);
  });
  await t.step("the docker CLI missing (trixie's docker.io only recommends it) is installed", () => {
    const installed = all();
    installed.delete("docker-cli");
    const steps = planInstall({ installed, files: aptFiles, criuVersion: "Version: 4.2.1", kernel: NEW_KERNEL });
    assertEquals(steps.map(describeStep), ["apt-get update", "apt-get install -t trixie docker-cli", "criu check"]);
  });
  await t.step("the CRI proto missing (Kubernetes tests) is installed from trixie", () => {
    const installed = all();
    installed.delete("golang-github-kubernetes-cri-api-dev");
    const steps = planInstall({ installed, files: aptFiles, criuVersion: "Version: 4.2.1", kernel: NEW_KERNEL });
    assertEquals(steps.map(describeStep), [
      "apt-get update",
      "apt-get install -t trixie golang-github-kubernetes-cri-api-dev",
      "criu check",
    ]);
  });
  await t.step("an outdated pin file is rewritten", () => {
    const files = new Map(aptFiles);
    files.set(SID_PIN_PATH, "Package: *\nPin: release n=sid\nPin-Priority: 500\n");
    const steps = planInstall({ installed: all(), files, criuVersion: "Version: 4.1.1", kernel: NEW_KERNEL });
    ok(steps.map(describeStep).includes(`write ${SID_PIN_PATH}`));
  });
  await t.step("test engines are unpacked only when wanted and absent", () => {
    const base = { installed: all(), files: aptFiles, criuVersion: "Version: 4.2.1", kernel: NEW_KERNEL };
    const wanted = planInstall({ ...base, testEngines: { wanted: true, present: false } }).map(describeStep);
    assertEquals(wanted, [
      "apt-get update",
      `unpack runc/sid containerd/sid docker.io/sid docker-cli/sid into ${TEST_ENGINES_DIR}`,
      "criu check",
    ]);
    assertEquals(planInstall({ ...base, testEngines: { wanted: true, present: true } }).length, 1);
    assertEquals(planInstall({ ...base, testEngines: { wanted: false, present: false } }).length, 1);
  });
});

Deno.test("sid pin: only CRIU and its libraries may come from sid", () => {
  const blocks = SID_PIN.split("\n\n").map((b) => b.replace(/^#.*\n/gm, ""));
  assertEquals(blocks.length, 2);
  for (const p of SID_CRIU_PACKAGES) ok(blocks[0]!.split("\n")[0]!.split(" ").includes(p), p);
  ok(blocks[0]!.includes("Pin-Priority: 500"));
  ok(blocks[1]!.startsWith("Package: *") && blocks[1]!.includes("Pin-Priority: -1"));
});

Deno.test("CRIU against the kernel", () => {
  assertEquals(minimumCriu("6.16.0"), [4, 2]);
  assertEquals(minimumCriu("6.15.9"), [4, 0]);
  assertEquals(minimumCriu("7.0.1"), [4, 2]);
  assertEquals(criuProblem("Version: 4.2.1", "6.18.4"), undefined);
  assertEquals(criuProblem("Version: 4.1.1", "6.1.0"), undefined);
  assertEquals(
    criuProblem("Version: 4.1.1", "6.18.4"),
    "Linux 6.18.4 needs CRIU 4.2 or later to checkpoint any container with a TCP or UDP socket, found CRIU 4.1: " +
      "run install.ts (it installs CRIU from Debian sid, pinned)",
  );
  ok(criuProblem("Version: 3.17.1", "6.1.0")?.startsWith("Linux 6.1.0 needs CRIU 4.0 or later"));
});

Deno.test("parsers", () => {
  assertEquals(
    [...parseDpkgQuery("criu ii 4.1.1-1\nrunc un <none>\ndocker.io:amd64 ii 26.1.5\n")],
    [["criu", "4.1.1-1"], ["docker.io", "26.1.5"]],
  );
});
