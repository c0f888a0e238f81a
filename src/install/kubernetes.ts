/**
 * `arch install --print kubernetes`: the manifests that bring ARCH to a Kubernetes node pool
 * (text only, nothing applied): a RuntimeClass `arch` (handler `arch`, the containerd runtime
 * `arch install containerd` declares) and a DaemonSet whose init containers download the
 * ARCH release artifact (`arch-<version>-linux-<arch>.run`), check its sha256, run its
 * self-install into the host's /usr/local and `arch install containerd` against the host's
 * /etc/containerd, then a pause container keeps the pod. containerd reads the drop-in when
 * it starts: run the DaemonSet before containerd starts (node bootstrap) or restart
 * containerd on the node afterwards. Pure.
 */

/** Options of {@link kubernetesManifests}. */
export interface KubernetesOptions {
  readonly artifactUrl: string;
  readonly artifactSha256: string;
  /** `key=value` of the nodes to install on (spot nodes, e.g. `karpenter.sh/capacity-type=spot`). */
  readonly nodeSelector?: string;
  /** A glibc image with `sh` for the install step (the artifact's binaries need glibc). */
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
    "sh /artifact/arch.run install --prefix /host/usr/local",
    // Paths written into the config are the host's; the files are reached through /host.
    "/host/usr/local/bin/arch install containerd" + (opts.makeDefault ? " --default" : "") +
    " --arch-runc /usr/local/bin/arch-runc --containerd /host/usr/bin/containerd" +
    " --containerd-config /host/etc/containerd/config.toml --containerd-dropin /host/etc/containerd/conf.d/arch.toml" +
    " --record /host/var/lib/arch/install.json",
    'echo "ARCH installed: restart containerd on this node if it was running before (it reads the drop-in at start)"',
  ].join("\n");
  const block = (text: string, indent: string) => text.split("\n").map((l) => `${indent}${l}`).join("\n");
  return `# ARCH on Kubernetes (printed by arch install --print kubernetes).
# Pods opt in with runtimeClassName: arch and the env ARCH_ENABLE=1 (see README).
# The install record names the paths as the installer saw them (/host/...): to remove ARCH from
# a node, run "arch uninstall containerd --record /host/var/lib/arch/install.json" in the same
# install container (same mounts), then restart containerd.
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
          command: ["/bin/sh", "-c"]
          args:
            - |
${block(install, "              ")}
          volumeMounts:
            - { name: artifact, mountPath: /artifact }
            - { name: usr-local, mountPath: /host/usr/local }
            - { name: usr-bin, mountPath: /host/usr/bin, readOnly: true }
            - { name: etc-containerd, mountPath: /host/etc/containerd }
            - { name: var-lib-arch, mountPath: /host/var/lib/arch }
      containers:
        - name: pause
          image: registry.k8s.io/pause:3.10
          resources:
            requests: { cpu: 1m, memory: 8Mi }
      volumes:
        - { name: artifact, emptyDir: {} }
        - { name: usr-local, hostPath: { path: /usr/local, type: DirectoryOrCreate } }
        - { name: usr-bin, hostPath: { path: /usr/bin, type: Directory } }
        - { name: etc-containerd, hostPath: { path: /etc/containerd, type: DirectoryOrCreate } }
        - { name: var-lib-arch, hostPath: { path: /var/lib/arch, type: DirectoryOrCreate } }
`;
}

/** `s` quoted for a POSIX shell (single quotes). */
export function shellQuote(s: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}
