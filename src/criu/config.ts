/**
 * The CRIU options ARCH needs beyond what runc's command line offers, in a CRIU
 * configuration file that runc hands to CRIU for the containers that name it in their
 * `org.criu.config` annotation (read at checkpoint from the container's state, at restore
 * from the new bundle's config.json).
 *
 * Policy for TCP connections: `tcp-close`. A dump never fails because of an established
 * connection, and after a restore (maybe hours later, on another node, with another IP) every
 * connection that was established is closed: the application reads EOF or gets EPIPE and
 * reconnects, instead of hanging on a peer that has long forgotten it. Listening sockets and
 * UDP sockets are restored as they were.
 *
 * After a restore, CRIU's action script (below) holds the restored tasks until ARCH's
 * verdict on the checkpoint's page data (`restore_gate.ts`), then brings back the loopback
 * interface of a network namespace CRIU recreated.
 *
 * Guarantees: the files are root-owned (0600, script 0700), written atomically. ARCH sets the annotation on
 * every ARCH container, replacing any value the container's owner chose: a CRIU
 * configuration can run programs as root (`action-script`), so it is the admin's, never the
 * tenant's.
 */

import type { BundleSpec } from "../config/container.ts";

/** The annotation that names a container's CRIU configuration file to runc; ARCH sets it on every ARCH container. */
export const CRIU_CONFIG_ANNOTATION = "org.criu.config";

/** What the node's CRIU configuration says beyond ARCH's fixed policy (host configuration). */
export interface CriuSettings {
  /** Largest unlinked-but-open file CRIU saves into the checkpoint (`ghost-limit`), bytes. */
  readonly ghostLimitBytes: number;
}

/** The defaults, for callers without a host configuration. */
export const DEFAULT_CRIU_SETTINGS: CriuSettings = { ghostLimitBytes: 64 * 2 ** 20 };

/**
 * The configuration file's text: `tcp-close`, file locks, the ghost-file limit, and the
 * action script below.
 *
 * File locks (`file-locks`): flock(2), POSIX and OFD locks held by the container's processes
 * are saved and taken again at restore, before the processes resume (SQLite in WAL mode holds
 * such locks as long as a connection is open). Safe for files of the container's own rootfs
 * and private mounts: no one else can hold them. A lock on a file of a shared file system that
 * other nodes lock too is released when the old container stops; if another holder took it
 * meanwhile, taking it again fails and so does the restore (docs/how-it-works.md).
 */
export function criuConfig(actionScript: string, settings: CriuSettings = DEFAULT_CRIU_SETTINGS): string {
  return `# Written by ARCH (do not edit: rewritten when it differs). runc passes it to CRIU for
# ARCH containers through their org.criu.config annotation.
# Established TCP connections are restored closed: the application sees EOF/EPIPE and
# reconnects, instead of hanging on a peer that moved on.
tcp-close
# With tcp-close no connection is dumped, so the network lock guards nothing: skipping it
# saves CRIU's iptables/ip6tables runs (six process starts per dump).
network-lock skip
# Locks held by the container's processes are saved and taken again at restore.
file-locks
# Files the job still holds open after unlinking them are saved up to this size each
# (host config "ghostFileLimitBytes").
ghost-limit ${Math.floor(settings.ghostLimitBytes)}
action-script ${actionScript}
`;
}

/** Environment variable naming a restore's gate directory to the action script (set by `restore_gate.ts`). */
export const GATE_ENV = "ARCH_RESTORE_GATE";
/** Environment variable bounding the action script's wait for the verdict, in seconds. */
export const GATE_TIMEOUT_ENV = "ARCH_RESTORE_GATE_TIMEOUT";
/** The line by which ARCH knows an action script honours the gate (an older script does not). */
export const GATE_MARKER = "# arch-restore-gate v1";

/**
 * The action script CRIU runs at each step of a dump or restore. After a restore, before
 * the tasks resume (\`post-restore\`; CRIU kills the restored tree and fails the restore when
 * the script exits non-zero):
 *
 * 1. When the restore has a gate (\`${GATE_ENV}\` names its directory, see
 *    \`restore_gate.ts\`): marks it seen, waits (at most \`${GATE_TIMEOUT_ENV}\` seconds,
 *    default 600; it leaves `gate.timeout` when it gives up) for ARCH to release the gate's lock, and fails unless ARCH's verdict is
 *    \`ok\`. ARCH holds the lock while it verifies the page data; if ARCH dies the kernel
 *    releases it and the missing verdict fails the restore at once.
 * 2. A network namespace that CRIU recreated itself (runc made it: \`ctr run\` without CNI,
 *    Docker without a network driver) comes back with its loopback down and no 127.0.0.1
 *    (CRIU issue #590), while runc had brought it up at create. The script brings it up
 *    again; this step never fails the restore, and it never touches the host's namespace.
 *
 * Its output goes to CRIU's log, not to the container.
 */
export const CRIU_ACTION_SCRIPT = `#!/bin/sh
# Written by ARCH (do not edit: rewritten when it differs). CRIU runs it at each step of a
# dump or restore of an ARCH container; it acts only after a restore, before the container
# resumes: it waits for ARCH's verdict on the page data, then brings the loopback of a
# network namespace CRIU recreated back up.
[ "$CRTOOLS_SCRIPT_ACTION" = post-restore ] || exit 0
PATH=/usr/sbin:/usr/bin:/sbin:/bin
${GATE_MARKER}
gate=$${GATE_ENV}
if [ -n "$gate" ]; then
  : > "$gate/gate.seen" || exit 1
  flock -s -w "\${${GATE_TIMEOUT_ENV}:-600}" "$gate/gate.lock" true || : > "$gate/gate.timeout"
  verdict=
  { read -r verdict < "$gate/verdict"; } 2>/dev/null
  if [ "$verdict" != ok ]; then
    echo "Error: arch: the checkpoint's page data was not verified (verdict: \${verdict:-none}); restore aborted" >&2
    exit 1
  fi
fi
ns=/proc/$CRTOOLS_INIT_PID/ns/net
[ -n "$CRTOOLS_INIT_PID" ] && [ "$(readlink "$ns")" != "$(readlink /proc/self/ns/net)" ] || exit 0
nsenter --net="$ns" ip link set lo up || echo "arch: cannot bring lo up in $ns" >&2
exit 0
`;

/**
 * Where ARCH keeps its CRIU configuration and action script: host config `criuConfigDir`
 * (default `/var/lib/arch/criu`), not the state directory: `/run` is often mounted
 * `noexec`, and CRIU aborts a dump or restore whose action script cannot be executed.
 */
export const criuConfigPath = (dir: string) => `${dir}/criu.conf`;
/** Path of the action script in `dir` (written 0700 by {@link ensureCriuConfig}). */
export const criuActionPath = (dir: string) => `${dir}/criu-action.sh`;

function writeIfDifferent(path: string, text: string, mode: number): void {
  try {
    if (Deno.readTextFileSync(path) === text) return;
  } catch { /* absent */ }
  const tmp = `${path}.${Deno.pid}.tmp`; // per process: two wrappers may write at once
  Deno.writeTextFileSync(tmp, text, { mode });
  Deno.chmodSync(tmp, mode);
  Deno.renameSync(tmp, path);
}

/**
 * Writes the CRIU configuration and action script into `dir` unless they are there with this
 * content. Returns the configuration's path.
 */
export function ensureCriuConfig(dir: string, settings: CriuSettings = DEFAULT_CRIU_SETTINGS): string {
  Deno.mkdirSync(dir, { recursive: true, mode: 0o700 });
  Deno.chmodSync(dir, 0o700);
  writeIfDifferent(criuActionPath(dir), CRIU_ACTION_SCRIPT, 0o700);
  const path = criuConfigPath(dir);
  writeIfDifferent(path, criuConfig(criuActionPath(dir), settings), 0o600);
  return path;
}

/**
 * `spec` with the annotation pointing at `configPath`, or `undefined` when it already does
 * (pure).
 *
 * @example
 * ```ts
 * import { withCriuConfig } from "./config.ts";
 * const spec = withCriuConfig({ annotations: { "org.criu.config": "/tenant/evil.conf" } }, "/var/lib/arch/criu/criu.conf");
 * if (spec?.annotations?.["org.criu.config"] !== "/var/lib/arch/criu/criu.conf") throw new Error();
 * ```
 */
export function withCriuConfig(spec: BundleSpec, configPath: string): BundleSpec | undefined {
  if (spec.annotations?.[CRIU_CONFIG_ANNOTATION] === configPath) return undefined;
  return { ...spec, annotations: { ...spec.annotations, [CRIU_CONFIG_ANNOTATION]: configPath } };
}

/**
 * `spec` with every bind mount whose source is a symbolic link bound from the link's target
 * instead, or `undefined` when none is. The container sees the same file (mount(2) follows the
 * link anyway), but CRIU 4.x restores an external bind mount from a link source as the link
 * itself, whose relative target then resolves nowhere: Docker's `--init` binds
 * `/usr/bin/docker-init -> tini-static` (ECS `initProcessEnabled`), and every restore of such a
 * container failed ("mnt-v2: Can't remount ... with MS_PRIVATE: No such file or directory").
 * `resolve` returns the resolved path, or `undefined` to keep the source as it is.
 *
 * @example
 * ```ts
 * import { withResolvedBindSources } from "./config.ts";
 * const spec = { mounts: [{ destination: "/sbin/docker-init", type: "bind", source: "/usr/bin/docker-init", options: ["bind", "ro"] }] };
 * const out = withResolvedBindSources(spec, (p) => (p === "/usr/bin/docker-init" ? "/usr/bin/tini-static" : undefined));
 * if ((out?.mounts as { source: string }[])[0]?.source !== "/usr/bin/tini-static") throw new Error();
 * ```
 */
export function withResolvedBindSources(
  spec: BundleSpec,
  resolve: (source: string) => string | undefined,
): BundleSpec | undefined {
  const mounts = spec.mounts;
  if (!Array.isArray(mounts)) return undefined;
  let changed = false;
  const next = mounts.map((m: unknown) => {
    const mount = m as { type?: unknown; source?: unknown; options?: unknown };
    const options = Array.isArray(mount.options) ? mount.options : [];
    const bind = mount.type === "bind" || options.includes("bind") || options.includes("rbind");
    if (!bind || typeof mount.source !== "string" || !mount.source.startsWith("/")) return m;
    const real = resolve(mount.source);
    if (real === undefined || real === mount.source) return m;
    changed = true;
    return { ...mount, source: real };
  });
  return changed ? { ...spec, mounts: next } : undefined;
}

/** The target of `path` when it is a symbolic link (resolved whole), else `undefined`. */
export function linkTarget(path: string): string | undefined {
  try {
    return Deno.lstatSync(path).isSymlink ? Deno.realPathSync(path) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Parses JSON without losing integers beyond 2^53: config.json holds uint64 values (e.g.
 * `--ulimit memlock=-1` is 18446744073709551615) that a float would round, and runc rejects
 * the rounded value. Such numbers come back as raw JSON and are written out verbatim.
 */
export function parseLossless(text: string): unknown {
  // JSON.rawJSON (V8, not yet in TypeScript's lib): a value JSON.stringify writes verbatim.
  const { rawJSON } = JSON as unknown as { rawJSON: (text: string) => unknown };
  return JSON.parse(
    text,
    (_key, value, context?: { source?: string }) =>
      typeof value === "number" && context?.source !== undefined && String(value) !== context.source
        ? rawJSON(context.source)
        : value,
  );
}

/**
 * Rewrites `<bundle>/config.json` atomically with `edit` (mode kept, every other byte of
 * meaning unchanged: see {@link parseLossless}), only when `edit` returns a new spec. Throws
 * if the file cannot be read or written.
 */
export function rewriteBundle(bundle: string, edit: (spec: BundleSpec) => BundleSpec | undefined): void {
  const path = `${bundle}/config.json`;
  const spec = edit(parseLossless(Deno.readTextFileSync(path)) as BundleSpec);
  if (spec === undefined) return;
  const mode = (Deno.statSync(path).mode ?? 0o644) & 0o7777;
  const tmp = `${bundle}/.config.json.arch-${Deno.pid}`;
  Deno.writeTextFileSync(tmp, JSON.stringify(spec), { mode });
  Deno.chmodSync(tmp, mode);
  Deno.renameSync(tmp, path);
}

/** Points the bundle's `org.criu.config` annotation at `configPath` (see {@link rewriteBundle}). */
export function annotateBundle(bundle: string, configPath: string): void {
  rewriteBundle(bundle, (spec) => withCriuConfig(spec, configPath));
}
