/**
 * `deno task release [outDir]`: the one file a node downloads, `arch-<version>-linux-<machine>.run`,
 * and its `.sha256` (the line `sha256sum -c` reads).
 *
 * The file is a POSIX shell installer followed by a gzip'd tar payload. `sh arch-….run install
 * [--prefix /usr/local]` needs only what every Debian/Ubuntu/Amazon Linux node has (sh, tail,
 * sha256sum, tar, gzip, sed, mktemp): no network, npm, Node or checkout. It checks the payload's
 * sha256 (a truncated download is refused before anything is written), unpacks it into a
 * versioned directory `<prefix>/lib/arch/<version>/`, then replaces `<prefix>/bin/arch` and
 * `<prefix>/bin/arch-runc` atomically (rename), so a runc call during an upgrade runs either the
 * old or the new version, never a mix; the previous version's directory is kept for processes
 * still running from it (the node's exit watcher), older ones are removed.
 *
 * What the payload holds depends on `dist/` (`deno task build`):
 * - launcher mode (this machine: `deno compile` cannot fetch its runtime base): the pinned Deno,
 *   the bundle and the launcher scripts of `scripts/build.ts`, their paths filled in at install;
 * - compiled mode (`DENORT_BIN` set at build): the single `arch` binary and the runc shim.
 * Both install the same two commands with the same behaviour, fail-open `arch-runc` included.
 */

import { launcherScript, runcShim } from "./build.ts";
import { ARCH_VERSION } from "../src/version.ts";

const root = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const dist = `${root}/dist`;
/** Placeholders the installer replaces with real paths (sed), validated to be plain paths first. */
const HOME = "@ARCH_HOME@";
const PREFIX = "@ARCH_PREFIX@";

async function run(cmd: string, args: string[], cwd = root): Promise<void> {
  const out = await new Deno.Command(cmd, { args, cwd, stdout: "inherit", stderr: "inherit" }).output();
  if (!out.success) throw new Error(`${cmd} ${args.join(" ")} failed with exit code ${out.code}`);
}

async function sha256(path: string): Promise<string> {
  const out = await new Deno.Command("sha256sum", { args: [path], stdout: "piped" }).output();
  if (!out.success) throw new Error(`sha256sum ${path} failed`);
  return new TextDecoder().decode(out.stdout).split(" ")[0]!;
}

/** The machine name `uname -m` prints for this build (the installer refuses any other). */
function machine(): string {
  return Deno.build.arch === "x86_64" ? "x86_64" : "aarch64";
}

/** Lays out the payload directory: what `<prefix>/lib/arch/<version>/` will hold. */
function stagePayload(stage: string): "launcher" | "compiled" {
  let compiled = true;
  try {
    compiled = !Deno.statSync(`${dist}/lib`).isDirectory;
  } catch { /* no bundle: dist/arch is the compiled binary */ }
  Deno.mkdirSync(`${stage}/share`, { recursive: true });
  if (compiled) {
    Deno.copyFileSync(`${dist}/arch`, `${stage}/arch`);
    Deno.chmodSync(`${stage}/arch`, 0o755);
    Deno.writeTextFileSync(`${stage}/share/arch-runc.in`, runcShim(`${PREFIX}/bin/arch`));
    return "compiled";
  }
  Deno.copyFileSync(Deno.execPath(), `${stage}/deno`);
  Deno.chmodSync(`${stage}/deno`, 0o755);
  Deno.mkdirSync(`${stage}/lib`);
  for (const entry of Deno.readDirSync(`${dist}/lib`)) {
    if (entry.isFile) Deno.copyFileSync(`${dist}/lib/${entry.name}`, `${stage}/lib/${entry.name}`);
  }
  const args = [`${HOME}/deno`, `${HOME}/lib`, `${HOME}/.deno`, `${PREFIX}/bin/arch`] as const;
  Deno.writeTextFileSync(`${stage}/share/arch.in`, launcherScript(...args));
  Deno.writeTextFileSync(`${stage}/share/arch-runc.in`, launcherScript(...args, "runc-wrapper "));
  return "launcher";
}

/** The installer: a shell header that holds its own length (where the payload starts). */
export function installerHeader(
  fields: { version: string; machine: string; kind: string; payloadSha256: string; offset: number },
): string {
  return `#!/bin/sh
# ARCH ${fields.version} for Linux ${fields.machine}: a self-installing release (built by scripts/release.ts).
#   sh <this file> install [--prefix DIR]     install or upgrade (default prefix /usr/local)
#   sh <this file> uninstall [--prefix DIR] [--force] [--record FILE]   remove what install put there
#   sh <this file> info                       version and payload
# Needs root, sh, tail, sha256sum, tar, gzip, sed, mktemp. No network.
set -eu
VERSION="${fields.version}"
MACHINE="${fields.machine}"
KIND="${fields.kind}"
PAYLOAD_SHA256="${fields.payloadSha256}"
PAYLOAD_OFFSET=${fields.offset}
self=$0
die() { echo "arch-release: $*" >&2; exit 1; }
usage() { sed -n '3,5s/^# *//p' "$self" >&2; exit 2; }
cmd=\${1:-}
[ $# -gt 0 ] && shift
prefix=/usr/local
force=false
record=/var/lib/arch/install.json
while [ $# -gt 0 ]; do
  case $1 in
    --prefix) [ $# -ge 2 ] || die "--prefix needs a directory"; prefix=$2; shift 2 ;;
    --prefix=*) prefix=\${1#--prefix=}; shift ;;
    --force) force=true; shift ;;
    --record) [ $# -ge 2 ] || die "--record needs a file"; record=$2; shift 2 ;;
    -h|--help) usage ;;
    *) die "unknown option \\"$1\\": the options are --prefix DIR, --force and --record FILE" ;;
  esac
done
case $prefix in
  /*) ;;
  *) die "--prefix \\"$prefix\\" is not an absolute path: give one such as /usr/local" ;;
esac
case $prefix in
  *[!A-Za-z0-9/._-]*|*/../*|*/..) die "--prefix \\"$prefix\\" may hold only letters, digits and / . _ -, and no '..'" ;;
esac
prefix=\${prefix%/}
lib=$prefix/lib/arch
# One directory per payload (version + hash): reinstalling another build of the same version
# never removes the files a running ARCH process (the exit watcher) was started from.
release=$VERSION-$(printf %.12s "$PAYLOAD_SHA256")
home=$lib/$release
ours="# ARCH "

# Whether $1 is ARCH's: a launcher this installer wrote, or a link into $lib.
is_ours() {
  if [ -L "$1" ]; then
    case $(readlink "$1") in "$lib"/*) return 0 ;; *) return 1 ;; esac
  fi
  [ -f "$1" ] && grep -q "^$ours" "$1" 2>/dev/null
}

payload_to() {
  tail -c +$((PAYLOAD_OFFSET + 1)) "$self" >"$1"
  echo "$PAYLOAD_SHA256  $1" | sha256sum -c --status - ||
    die "$self is damaged (its payload's sha256 is not $PAYLOAD_SHA256): download it again and check its .sha256"
}

# Writes template $1 with the paths filled in as $2 (an .arch-new file, renamed into place later).
fill() {
  sed -e "s|@ARCH_HOME@|$home|g" -e "s|@ARCH_PREFIX@|$prefix|g" "$1" >"$2"
  chmod 0755 "$2"
}

install_release() {
  [ "$(uname -m)" = "$MACHINE" ] || die "this release is for $MACHINE, this machine is $(uname -m): download the $(uname -m) file"
  [ "$(id -u)" = 0 ] || die "install needs root: ARCH runs as root beside runc"
  for f in "$prefix/bin/arch" "$prefix/bin/arch-runc"; do
    if { [ -e "$f" ] || [ -L "$f" ]; } && ! is_ours "$f"; then
      die "$f exists and is not ARCH's: move it away or choose another --prefix"
    fi
  done
  umask 022
  mkdir -p "$prefix/bin" "$lib"
  if [ -f "$home/.payload-sha256" ] && [ "$(cat "$home/.payload-sha256")" = "$PAYLOAD_SHA256" ]; then
    echo "ARCH $VERSION is already unpacked in $home"
  else
    tmp=$(mktemp -d "$lib/.unpack.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    payload_to "$tmp/payload.tgz"
    mkdir "$tmp/home"
    tar -xzf "$tmp/payload.tgz" -C "$tmp/home" --no-same-owner --no-same-permissions
    rm -f "$tmp/payload.tgz"
    echo "$PAYLOAD_SHA256" >"$tmp/home/.payload-sha256"
    chmod -R go-w "$tmp/home"
    rm -rf "$home"
    mv "$tmp/home" "$home"
    rm -rf "$tmp"
    trap - EXIT
  fi
  # The new arch must run before it replaces anything.
  if [ "$KIND" = compiled ]; then
    ln -sfn "$home/arch" "$prefix/bin/arch.arch-new"
  else
    fill "$home/share/arch.in" "$prefix/bin/arch.arch-new"
  fi
  if ! "$prefix/bin/arch.arch-new" --version >/dev/null; then
    rm -f "$prefix/bin/arch.arch-new"
    die "the new arch does not run on this machine (see the error above): nothing was replaced"
  fi
  fill "$home/share/arch-runc.in" "$prefix/bin/arch-runc.arch-new"
  mv -Tf "$prefix/bin/arch.arch-new" "$prefix/bin/arch"
  mv -Tf "$prefix/bin/arch-runc.arch-new" "$prefix/bin/arch-runc"
  # Keep this version and the one before it (processes may still run from it); remove older ones.
  previous=$(cat "$lib/.current" 2>/dev/null || true)
  echo "$release" >"$lib/.current.arch-new" && mv -f "$lib/.current.arch-new" "$lib/.current"
  for d in "$lib"/*; do
    [ -d "$d" ] || continue
    case \${d##*/} in "$release"|"$previous") ;; *) rm -rf "$d" ;; esac
  done
  echo "installed ARCH $VERSION: $prefix/bin/arch and $prefix/bin/arch-runc"
  echo "next: arch install docker|containerd|podman (see arch install --help), then arch doctor"
}

uninstall_release() {
  [ "$(id -u)" = 0 ] || die "uninstall needs root"
  if [ -f "$record" ] && [ "$force" != true ]; then
    die "engines still use ARCH ($record): run \\"arch uninstall containerd docker podman watch\\" first, or pass --force"
  fi
  for f in "$prefix/bin/arch" "$prefix/bin/arch-runc"; do
    if is_ours "$f"; then rm -f "$f"; fi
  done
  # Only a directory this installer made (it holds .current) is removed.
  if [ -f "$lib/.current" ]; then rm -rf "$lib"; fi
  echo "removed ARCH from $prefix (checkpoints, configuration and logs are kept)"
}

case $cmd in
  install) install_release ;;
  uninstall) uninstall_release ;;
  info) echo "ARCH $VERSION linux-$MACHINE ($KIND), payload sha256 $PAYLOAD_SHA256" ;;
  ""|-h|--help|help) usage ;;
  *) die "unknown command \\"$cmd\\": use install, uninstall or info" ;;
esac
exit 0
# ARCH payload follows
`;
}

/** Builds the release into `outDir` and returns the artifact's path. */
export async function release(outDir = `${dist}/release`): Promise<string> {
  Deno.mkdirSync(outDir, { recursive: true });
  const stage = Deno.makeTempDirSync({ prefix: "arch-release-" });
  try {
    const kind = stagePayload(`${stage}/home`);
    const payload = `${stage}/payload.tgz`;
    await run("tar", ["--owner=0", "--group=0", "--numeric-owner", "-czf", payload, "-C", `${stage}/home`, "."]);
    const fields = { version: ARCH_VERSION, machine: machine(), kind, payloadSha256: await sha256(payload) };
    // The header holds its own length: iterate until the length no longer changes (2 rounds).
    let header = installerHeader({ ...fields, offset: 0 });
    for (let length = 0; length !== new TextEncoder().encode(header).length;) {
      length = new TextEncoder().encode(header).length;
      header = installerHeader({ ...fields, offset: length });
    }
    const name = `arch-${ARCH_VERSION}-linux-${machine()}.run`;
    const out = `${outDir}/${name}`;
    const file = Deno.openSync(`${out}.tmp`, { write: true, create: true, truncate: true, mode: 0o755 });
    try {
      await file.write(new TextEncoder().encode(header));
      const src = Deno.openSync(payload);
      await src.readable.pipeTo(file.writable, { preventClose: true });
    } finally {
      file.close();
    }
    Deno.chmodSync(`${out}.tmp`, 0o755);
    Deno.renameSync(`${out}.tmp`, out);
    Deno.writeTextFileSync(`${out}.sha256`, `${await sha256(out)}  ${name}\n`);
    return out;
  } finally {
    Deno.removeSync(stage, { recursive: true });
  }
}

if (import.meta.main) {
  const out = await release(Deno.args[0]);
  const size = Deno.statSync(out).size / 1048576;
  console.log(`built ${out} (${size.toFixed(1)} MiB) and ${out}.sha256`);
}
