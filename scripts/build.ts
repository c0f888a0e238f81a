/**
 * `deno task build`: produces `dist/arch` and `dist/arch-runc`.
 *
 * `dist/arch` is a `deno compile` binary when Deno's runtime base can be had (`DENORT_BIN`
 * set); on machines that cannot download it, it is a small launcher script that runs the
 * `deno bundle` output with the pinned Deno. Both behave the same; tests run whichever
 * `dist/arch` is.
 *
 * `dist/arch-runc` is what engines are pointed at instead of runc: it supplies the
 * `runc-wrapper` role to `dist/arch`.
 *
 * `dist/arch-runc` is fail-open: if ARCH cannot run at all, every container still runs under
 * the real runc (without ARCH) instead of failing. What is covered:
 * - Deno or the program missing or not executable/readable (compiled mode: `dist/arch`):
 *   the script execs the first runc of the default locations itself (shell builtins only,
 *   no fork on this path, which every runc call takes; never itself, by `-ef`);
 * - launcher mode, the bundle present but broken (a chunk missing, truncated, corrupt): the
 *   script runs a separately bundled stage 0 (`src/wrapper/stage0.ts`) that imports the program
 *   and, if that import fails (before any ARCH code ran, so runc cannot run twice), execs
 *   the real runc.
 * Not covered: a Deno binary that is present and executable but cannot start (corrupt, wrong
 * architecture): `exec` replaced the script, and nothing is left to fall back; telling would
 * cost a fork on every runc call.
 */

import { RUNC_CANDIDATES } from "../src/config/host.ts";
import { DENO_ENV } from "../src/wrapper/handoff.ts";
import { FAST_PATH_FILE } from "../src/wrapper/fast_path.ts";
import { type FlagSpec, GLOBAL_FLAGS } from "../src/runc/flags.ts";
import { RESTORED_MARK } from "../src/registry/registry.ts";

const root = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const dist = `${root}/dist`;
const deno = Deno.execPath();

const STAGE0_SRC = "src/wrapper/stage0.ts";

async function run(cmd: string, args: string[]): Promise<void> {
  const out = await new Deno.Command(cmd, { args, cwd: root, stdout: "inherit", stderr: "inherit" }).output();
  if (!out.success) throw new Error(`${cmd} ${args.join(" ")} failed with exit code ${out.code}`);
}

function writeExecutable(path: string, text: string): void {
  const tmp = `${path}.tmp`;
  Deno.writeTextFileSync(tmp, text, { mode: 0o755 });
  Deno.chmodSync(tmp, 0o755);
  Deno.renameSync(tmp, path);
}

const EAGER_REQUIRE = 'import { createRequire as __deno_internal_createRequire } from "node:module";\n' +
  "var __require = __deno_internal_createRequire(import.meta.url);";
const LAZY_REQUIRE = "var __deno_internal_require;\n" +
  'var __require = (id) => (__deno_internal_require ??= globalThis.process.getBuiltinModule("node:module")' +
  ".createRequire(import.meta.url))(id);";

/**
 * `deno bundle` puts a `createRequire` from `node:module` (for the CommonJS packages the CLI
 * uses) into a helper chunk that every entry imports, and loading `node:` modules costs the
 * runc wrapper ~20 ms per call. Make that `require` lazy so only code that calls it pays.
 */
function makeRequireLazy(libDir: string): void {
  for (const entry of Deno.readDirSync(libDir)) {
    const path = `${libDir}/${entry.name}`;
    const text = Deno.readTextFileSync(path);
    if (text.includes(EAGER_REQUIRE)) Deno.writeTextFileSync(path, text.replace(EAGER_REQUIRE, LAZY_REQUIRE));
  }
}

/** Files statically imported from `file` (transitively), with any `node:`/`npm:` specifier found. */
export function staticClosure(
  libDir: string,
  file: string,
  seen = new Set<string>(),
): { files: string[]; bare: string[] } {
  const bare: string[] = [];
  if (seen.has(file)) return { files: [...seen], bare };
  seen.add(file);
  const text = Deno.readTextFileSync(`${libDir}/${file}`);
  for (const m of text.matchAll(/^import\s*(?:[^"']*?from\s*)?["']([^"']+)["']/gm)) {
    const spec = m[1]!;
    if (spec.startsWith("./")) bare.push(...staticClosure(libDir, spec.slice(2), seen).bare);
    else bare.push(spec);
  }
  return { files: [...seen], bare };
}

/** The runc wrapper's stage 0 (`src/wrapper/stage0.ts`), bundled alone beside the program. */
export const STAGE0 = "runc-stage0.js";

/**
 * Shell lines that exec the first existing runc of {@link RUNC_CANDIDATES} (never this script
 * itself: `-ef` compares inodes), or exit 127 silently. Builtins only.
 */
export function runcFallback(candidates: readonly string[] = RUNC_CANDIDATES): string {
  return `# Fail-open: ARCH cannot run at all; hand the call to the real runc untouched.
for arch_runc in ${candidates.map((c) => `"${c}"`).join(" ")}; do
  [ -f "$arch_runc" ] && [ -x "$arch_runc" ] && ! [ "$arch_runc" -ef "$0" ] && exec "$arch_runc" "$@"
done
exit 127
`;
}

/** Global flags that make runc print and exit (`--help`, `--version`): the launcher leaves them to the normal path. */
const ASKS_RUNC_ITSELF = new Set(["help", "version"]);

/** A shell `case` pattern matching each flag's names with one or two dashes (Go's `flag` takes both). */
function flagPattern(flags: readonly FlagSpec[]): string {
  return flags.flatMap((f) => [f.name, ...(f.aliases ?? [])]).flatMap((n) => [`--${n}`, `-${n}`]).join("|");
}

/**
 * Shell lines that hand a call straight to the real runc, without starting Deno (~0.1 s of CPU
 * per call here), when ARCH would hand it over unchanged anyway: every command but
 * create/start/delete, and a start or delete of a container ARCH has no record of (the shim's
 * cleanup `delete --force` after the container is gone, or a container ARCH never knew). The
 * engine's `start` of a container ARCH restored is answered here (0, a no-op as in
 * `wrapper/lifecycle.ts`) while its mark is runc's state file of the id (a hard link,
 * `registry/registry.ts`): a restore then starts one Deno process, not two. The real runc
 * and the state dir come from `<runc root>/${FAST_PATH_FILE}`, written by the wrapper at each
 * create (`src/wrapper/fast_path.ts`) and trusted only if root owns it (and the runc it names) and it is
 * not a symbolic link. Anything not understood
 * (an unknown global option, an unsafe id, no such file) takes the normal path. Builtins only.
 */
export function runcFastPath(): string {
  return `# Fast path: calls ARCH would pass on unchanged go to the real runc without starting Deno.
arch_cmd= arch_root=/run/runc arch_val= arch_id= arch_seen=
for arch_a in "$@"; do
  case $arch_a in create|start|delete|run|restore) [ -n "$arch_cmd" ] && arch_seen=1 ;; esac
  if [ -n "$arch_val" ]; then
    [ "$arch_val" = root ] && arch_root=$arch_a
    arch_val=
  elif [ -z "$arch_cmd" ]; then
    case $arch_a in
      --root=*|-root=*) arch_root=\${arch_a#*=} ;;
      --root|-root) arch_val=root ;;
      ${flagPattern(GLOBAL_FLAGS.filter((f) => f.kind !== "bool" && f.name !== "root"))}) arch_val=skip ;;
      ${flagPattern(GLOBAL_FLAGS.filter((f) => f.kind === "bool" && !ASKS_RUNC_ITSELF.has(f.name)))}|--*=*|-*=*) ;;
      -*) arch_cmd=? ;;
      *) arch_cmd=$arch_a ;;
    esac
  elif [ -z "$arch_id" ]; then
    case $arch_a in -*) ;; *) arch_id=$arch_a ;; esac
  fi
done
arch_root=\${arch_root%/}
arch_fast="$arch_root/${FAST_PATH_FILE}"
if [ -z "$arch_seen" ] && [ -n "$arch_cmd" ] && [ "$arch_cmd" != "?" ] && [ -f "$arch_fast" ] && ! [ -L "$arch_fast" ] &&
  [ -O "$arch_fast" ]; then
  arch_real= arch_state=
  { read -r arch_real; read -r arch_state; } <"$arch_fast" 2>/dev/null
  case $arch_real in /*) ;; *) arch_real= ;; esac
  case $arch_state in /*) ;; *) arch_state= ;; esac
  arch_ns=\${arch_root##*/}
  case $arch_ns in ''|.|..|*[!A-Za-z0-9_+.-]*) arch_ns= ;; esac
  case $arch_id in ''|.|..|*[!A-Za-z0-9_+.-]*) arch_id= ;; esac
  if [ -n "$arch_real" ] && [ -f "$arch_real" ] && [ -x "$arch_real" ] && [ -O "$arch_real" ] && ! [ "$arch_real" -ef "$0" ]; then
    arch_rec=
    [ -n "$arch_state" ] && [ -n "$arch_ns" ] && [ -n "$arch_id" ] && arch_rec="$arch_state/registry/$arch_ns/$arch_id"
    case $arch_cmd in
      create|run|restore) ;;
      start|delete)
        if [ -n "$arch_rec" ]; then
          [ -e "$arch_rec.json" ] || exec "$arch_real" "$@"
          arch_mark="$arch_rec${RESTORED_MARK}" arch_runc_state="$arch_root/$arch_id/state.json"
          [ "$arch_cmd" = start ] && [ -f "$arch_mark" ] && ! [ -L "$arch_mark" ] && [ -O "$arch_mark" ] &&
            [ "$arch_mark" -ef "$arch_runc_state" ] && exit 0
        fi ;;
      *) exec "$arch_real" "$@" ;;
    esac
  fi
fi
`;
}

/**
 * The launcher: records the open-files limit Deno will raise, then runs the bundle. With
 * `role` "runc-wrapper " it is `dist/arch-runc`: it runs the stage 0 and fails open (see the
 * module comment); `runcCandidates` overrides the fallback's runc locations (tests).
 */
export function launcherScript(
  denoPath: string,
  libDir: string,
  cacheDir: string,
  archPath: string,
  role = "",
  runcCandidates: readonly string[] = RUNC_CANDIDATES,
): string {
  const wrapper = role === "runc-wrapper ";
  const entry = `${libDir}/${wrapper ? STAGE0 : "mod.js"}`;
  const body = `while read -r f1 f2 f3 soft rest; do
  [ "$f1 $f2 $f3" = "Max open files" ] && ARCH_LAUNCHER_NOFILE=$soft && break
done </proc/self/limits
${DENO_ENV.map((v) => `[ -n "\${${v}+set}" ] && export ARCH_SAVED_${v}="\$${v}"`).join("\n")}
ARCH_LAUNCHER_NOFILE=$ARCH_LAUNCHER_NOFILE ARCH_LAUNCHER_SELF="$0" ARCH_LAUNCHER_ARCH="${archPath}" DENO_DIR="${cacheDir}" DENO_NO_UPDATE_CHECK=1 DENO_NO_PROMPT=1 \\
  exec "${denoPath}" run --quiet --allow-all --no-config --no-lock --no-remote --no-npm --cached-only \\
  "${entry}" ${role}"$@"
`;
  return `#!/bin/sh
# ARCH launcher (generated by scripts/build.ts): runs the bundled program with the pinned Deno
# because "deno compile" cannot fetch its runtime base on this machine. Same behaviour as the
# compiled binary. ARCH_LAUNCHER_NOFILE lets the runc wrapper undo Deno's raise of the
# open-files limit before it hands over to runc.
# The soft limit is read with shell builtins only: a $(...) would cost a fork per runc call.${
    wrapper ? "\n# If Deno or the stage 0 is missing, the call goes to the real runc (fail-open)." : ""
  }
${
    wrapper
      ? `${runcFastPath()}if [ -f "${denoPath}" ] && [ -x "${denoPath}" ] && [ -f "${entry}" ] && [ -r "${entry}" ]; then
${body.replace(/^/gm, "  ").trimEnd()}
fi
${runcFallback(runcCandidates)}`
      : body
  }`;
}

/** The shim engines run as "runc" when `dist/arch` is compiled; fail-open like the launcher. */
export function runcShim(archPath: string, runcCandidates: readonly string[] = RUNC_CANDIDATES): string {
  return `#!/bin/sh
# ARCH runc wrapper: point containerd (BinaryName) or Docker (runtimes) here instead of runc.
${runcFastPath()}[ -f "${archPath}" ] && [ -x "${archPath}" ] && exec "${archPath}" runc-wrapper "$@"
${runcFallback(runcCandidates)}`;
}

async function build(): Promise<void> {
  await Deno.remove(dist, { recursive: true }).catch(() => {});
  Deno.mkdirSync(dist, { recursive: true });
  const denort = Deno.env.get("DENORT_BIN");
  if (denort !== undefined) {
    await run(deno, ["compile", "--allow-all", "--no-config", "-o", `${dist}/arch`, "--config", "deno.json", "mod.ts"]);
  } else {
    await run(deno, [
      "bundle",
      "--quiet",
      "--platform=deno",
      "--format=esm",
      "--code-splitting",
      "--outdir",
      `${dist}/lib`,
      "mod.ts",
    ]);
    makeRequireLazy(`${dist}/lib`);
    const { bare } = staticClosure(`${dist}/lib`, "mod.js");
    if (bare.length > 0) throw new Error(`the runc wrapper path statically imports ${bare.join(", ")}`);
    // Stage 0 alone, with no chunk shared with the program: a damaged program cannot damage it.
    await run(deno, [
      "bundle",
      "--quiet",
      "--platform=deno",
      "--format=esm",
      "-o",
      `${dist}/lib/${STAGE0}`,
      STAGE0_SRC,
    ]);
    const stage0 = staticClosure(`${dist}/lib`, STAGE0);
    if (stage0.files.length > 1 || stage0.bare.length > 0) {
      throw new Error(`${STAGE0} must be self-contained; it imports ${[...stage0.files.slice(1), ...stage0.bare]}`);
    }
    writeExecutable(`${dist}/arch`, launcherScript(deno, `${dist}/lib`, `${dist}/.deno`, `${dist}/arch`));
  }
  // In launcher mode arch-runc is the launcher with the role built in (one exec fewer on the
  // hot path); a compiled arch gets a small shim. Both fail open (see the module comment).
  writeExecutable(
    `${dist}/arch-runc`,
    denort !== undefined
      ? runcShim(`${dist}/arch`)
      : launcherScript(deno, `${dist}/lib`, `${dist}/.deno`, `${dist}/arch`, "runc-wrapper "),
  );
  // Warm Deno's code cache so the first runc call through the wrapper is not the slow one.
  await new Deno.Command(`${dist}/arch`, { stdout: "null", stderr: "inherit" }).output();
  console.log(`built ${dist}/arch (${denort !== undefined ? "compiled" : "launcher + bundle"}) and ${dist}/arch-runc`);
}

if (import.meta.main) await build();
