/**
 * `arch install --print kubernetes`: the manifests that bring ARCH to a Kubernetes node pool
 * (text only, nothing applied): a RuntimeClass `arch` (handler `arch`, the containerd runtime
 * `arch install containerd` declares) and a DaemonSet whose init containers download the
 * ARCH release artifact (`arch-<version>-linux-<arch>.run`), check its sha256, copy it to the
 * host's /var/lib/arch/release, and run its self-install and `arch install containerd` in the
 * host's own mount namespace (`nsenter --target 1 --mount`, hence `hostPID`): every path the
 * installers write into the launchers and containerd's config is the host's own, as on a
 * node installed by hand (a `/host/...` path from inside the pod would make containerd fail to
 * start on its next restart: a missing import is fatal). A pause container then keeps the pod.
 * containerd reads the drop-in when it starts: run the DaemonSet before containerd starts
 * (node bootstrap), set RESTART_CONTAINERD=true in the manifest, or restart it yourself. Pure.
 */

/** Options of {@link kubernetesManifests}. */
export interface KubernetesOptions {
  readonly artifactUrl: string;
  readonly artifactSha256: string;
  /** `key=value` of the nodes to install on (spot nodes, e.g. `karpenter.sh/capacity-type=spot`). */
  readonly nodeSelector?: string;
  /** An image with `sh`, `cp` and `nsenter` (util-linux) for the install step. */
  readonly image?: string;
  /** `arch install containerd --default` (every pod through ARCH; ARCH passes through non-ARCH ones). */
  readonly makeDefault?: boolean;
}

const q = (s: string) => JSON.stringify(s); // a JSON string is a valid YAML scalar

/**
 * The RuntimeClass and DaemonSet manifests (YAML, two documents). Pure.
 *
 * @example
 * ```ts
 * import { kubernetesManifests } from "./kubernetes.ts";
 * const yaml = kubernetesManifests({ artifactUrl: "https://x/arch.run", artifactSha256: "ab" });
 * if (!yaml.includes("kind: RuntimeClass") || !yaml.includes("handler: arch")) throw new Error();
 * ```
 */
export function kubernetesManifests(opts: KubernetesOptions): string {
  const [selKey, selValue] = (opts.nodeSelector ?? "karpenter.sh/capacity-type=spot").split("=", 2);
  if (!selKey || selValue === undefined) throw new Error(`node selector "${opts.nodeSelector}" must be key=value`);
  if (!/^[0-9a-fA-F]+$/.test(opts.artifactSha256) && opts.artifactSha256 !== "SHA256") {
    throw new Error(`artifact sha256 "${opts.artifactSha256}" is not hexadecimal: pass the artifact's sha256`);
  }
  const image = opts.image ?? "debian:12-slim";
  const fetch = [
    "set -eu",
    `curl -fsSL --retry 5 -o /artifact/arch.run ${shellQuote(opts.artifactUrl)}`,
    `echo ${shellQuote(`${opts.artifactSha256}  /artifact/arch.run`)} | sha256sum -c -`,
  ].join("\n");
  const install = [
    "set -eu",
    // The artifact goes to the host; everything else runs in the host's mount namespace, so the
    // paths in the launchers, containerd's config and the install record are the host's own.
    "mkdir -p /host/var/lib/arch/release",
    "cp /artifact/arch.run /host/var/lib/arch/release/arch.run.new",
    "mv -f /host/var/lib/arch/release/arch.run.new /host/var/lib/arch/release/arch.run",
    'host() { nsenter --target 1 --mount -- "$@"; }',
    "host sh /var/lib/arch/release/arch.run install --prefix /usr/local",
    "host /usr/local/bin/arch install containerd" + (opts.makeDefault ? " --default" : ""),
    'if [ "$RESTART_CONTAINERD" = true ]; then host systemctl restart containerd; else',
    '  echo "ARCH installed: restart containerd on this node if it was running before (it reads the drop-in at start)"',
    "fi",
  ].join("\n");
  const block = (text: string, indent: string) => text.split("\n").map((l) => `${indent}${l}`).join("\n");
  return `# ARCH on Kubernetes (printed by arch install --print kubernetes).
# Pods opt in with runtimeClassName: arch and the env ARCH_ENABLE=1 (see README).
# The installers run in the host's mount namespace (nsenter, hostPID): to remove ARCH from a node,
# run "arch uninstall containerd" there (e.g. kubectl debug node/<node> -it --image=debian:12-slim
# -- chroot /host /usr/local/bin/arch uninstall containerd), then restart containerd.
apiVersion: node.k8s.io/v1
kind: RuntimeClass
metadata:
  name: arch
handler: arch
scheduling:
  nodeSelector:
    ${q(selKey)}: ${q(selValue)}
---
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: arch-installer
  namespace: kube-system
  labels:
    app.kubernetes.io/name: arch-installer
spec:
  selector:
    matchLabels:
      app.kubernetes.io/name: arch-installer
  template:
    metadata:
      labels:
        app.kubernetes.io/name: arch-installer
    spec:
      nodeSelector:
        ${q(selKey)}: ${q(selValue)}
      hostPID: true # nsenter --target 1: the installers see the host's own paths
      tolerations:
        - operator: Exists
      initContainers:
        - name: fetch
          image: curlimages/curl:8.11.1
          command: ["/bin/sh", "-c"]
          args:
            - |
${block(fetch, "              ")}
          volumeMounts:
            - { name: artifact, mountPath: /artifact }
        - name: install
          image: ${q(image)}
          securityContext:
            privileged: true
          env:
            - { name: RESTART_CONTAINERD, value: "false" } # "true": restart containerd to load the runtime now
          command: ["/bin/sh", "-c"]
          args:
            - |
${block(install, "              ")}
          volumeMounts:
            - { name: artifact, mountPath: /artifact }
            - { name: var-lib-arch, mountPath: /host/var/lib/arch }
      containers:
        - name: pause
          image: registry.k8s.io/pause:3.10
          resources:
            requests: { cpu: 1m, memory: 8Mi }
      volumes:
        - { name: artifact, emptyDir: {} }
        - { name: var-lib-arch, hostPath: { path: /var/lib/arch, type: DirectoryOrCreate } }
`;
}

/** `s` quoted for a POSIX shell (single quotes). */
export function shellQuote(s: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}
