/**
 * `arch install --print`: the ECS/AWS Batch userdata is valid POSIX shell (`sh -n`) that
 * downloads, verifies (`sha256sum -c`) and self-installs the release artifact, then installs
 * Docker's default runtime and the watcher; the Kubernetes manifests hold the RuntimeClass
 * (handler `arch`) and an installer DaemonSet with the expected fields; the job environment
 * opts in.
 */

import { deepEqual as assertEquals, ok, throws } from "node:assert/strict";
import { batchEnvironment, ecsUserData } from "../../src/install/ecs.ts";
import { kubernetesManifests, shellQuote } from "../../src/install/kubernetes.ts";

const URL = "https://example.com/releases/arch-0.1.0-linux-amd64.run?sig=a&b=c";
const SHA = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

Deno.test("ecs userdata", async (t) => {
  const script = ecsUserData({ artifactUrl: URL, artifactSha256: SHA });
  await t.step("is valid sh (sh -n)", async () => {
    const out = await new Deno.Command("sh", { args: ["-n", "-c", script], stderr: "piped" }).output();
    assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
  });
  await t.step("downloads, verifies, self-installs, installs docker --default and the watcher", () => {
    const lines = script.split("\n");
    const at = (re: RegExp) => lines.findIndex((l) => re.test(l));
    ok(lines[0] === "#!/bin/sh" && lines.includes("set -eu"));
    ok(script.includes(`ARCH_URL=${shellQuote(URL)}`) && script.includes(`ARCH_SHA256=${SHA}`));
    const order = [
      at(/^curl -fsSL .*"\$ARCH_URL"$/),
      at(/^echo "\$ARCH_SHA256 {2}\$tmp\/arch\.run" \| sha256sum -c -$/),
      at(/^sh "\$tmp\/arch\.run" install --prefix \/usr\/local$/),
      at(/^\/usr\/local\/bin\/arch install docker --default /),
      at(/^\/usr\/local\/bin\/arch install watch --provider aws /),
      at(/systemctl restart docker$/),
    ];
    ok(order.every((i, k) => i >= 0 && (k === 0 || i > order[k - 1]!)), order.join(","));
  });
  await t.step("a URL with shell characters stays one quoted word", () => {
    assertEquals(shellQuote("a b'c"), `'a b'\\''c'`);
  });
  await t.step("a non-hex sha256 is refused", () => {
    throws(() => ecsUserData({ artifactUrl: URL, artifactSha256: "$(reboot)" }), /not hexadecimal/);
  });
  await t.step("job environment", () => {
    assertEquals(batchEnvironment(), { environment: [{ name: "ARCH_ENABLE", value: "1" }] });
    assertEquals(batchEnvironment({ sharedFsPath: "/mnt/efs/arch" }).environment.map((e) => e.name), [
      "ARCH_ENABLE",
      "ARCH_SHAREDFS_HOST_PATH",
      "ARCH_WORKDIR_CONTAINER_PATH",
    ]);
    assertEquals(batchEnvironment({ checkpointPath: "/var/lib/arch/jobs" }).environment[1], {
      name: "ARCH_CHECKPOINT_HOST_PATH",
      value: "/var/lib/arch/jobs",
    });
  });
});

Deno.test("kubernetes manifests", async (t) => {
  const yaml = kubernetesManifests({ artifactUrl: URL, artifactSha256: SHA, nodeSelector: "node.example/spot=true" });
  const [runtimeClass, daemonSet] = yaml.split("\n---\n");
  await t.step("RuntimeClass arch, handler arch, scheduled on the selected nodes", () => {
    ok(/^apiVersion: node\.k8s\.io\/v1$/m.test(runtimeClass!) && /^kind: RuntimeClass$/m.test(runtimeClass!));
    ok(/^metadata:\n {2}name: arch$/m.test(runtimeClass!));
    ok(/^handler: arch$/m.test(runtimeClass!));
    ok(runtimeClass!.includes('"node.example/spot": "true"'));
  });
  await t.step("DaemonSet: fetch + verify, then both installers in the host's mount namespace; pause", () => {
    ok(/^kind: DaemonSet$/m.test(daemonSet!) && /^apiVersion: apps\/v1$/m.test(daemonSet!));
    ok(/^ {6}hostPID: true/m.test(daemonSet!), "hostPID, for nsenter --target 1");
    ok(daemonSet!.includes('nodeSelector:\n        "node.example/spot": "true"'));
    ok(daemonSet!.includes("initContainers:\n        - name: fetch") && daemonSet!.includes("        - name: install"));
    ok(/securityContext:\n {12}privileged: true/.test(daemonSet!));
    ok(daemonSet!.includes(`echo '${SHA}  /artifact/arch.run' | sha256sum -c -`));
    ok(daemonSet!.includes('host() { nsenter --target 1 --mount -- "$@"; }'));
    ok(daemonSet!.includes("host sh /var/lib/arch/release/arch.run install --prefix /usr/local"));
    ok(daemonSet!.includes("host /usr/local/bin/arch install containerd"));
    // Nothing the installers write may name a path as the pod sees it: containerd would not start.
    const installers = daemonSet!.split("\n").filter((l) => /^\s*host /.test(l));
    assertEquals(installers.length, 2);
    ok(daemonSet!.includes('if [ "$RESTART_CONTAINERD" = true ]; then host systemctl restart containerd; else'));
    ok(installers.every((l) => !l.includes("/host/")), installers.join("\n"));
    ok(daemonSet!.includes("containers:\n        - name: pause\n          image: registry.k8s.io/pause"));
    ok(daemonSet!.includes("hostPath: { path: /var/lib/arch,"));
  });
  await t.step("the install step's script is valid sh", async () => {
    const script = daemonSet!.split("- name: install")[1]!.split("args:\n            - |\n")[1]!.split(
      "\n          volumeMounts",
    )[0]!;
    const out = await new Deno.Command("sh", { args: ["-n", "-c", script], stderr: "piped" }).output();
    assertEquals(out.code, 0, script);
    ok(script.includes("arch install containerd"));
  });
  await t.step("a node selector without = is refused", () => {
    throws(() => kubernetesManifests({ artifactUrl: URL, artifactSha256: SHA, nodeSelector: "spot" }), /key=value/);
  });
});
