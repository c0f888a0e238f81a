/**
 * `arch`: one program, three roles, chosen by the first argument.
 *
 * - `arch runc-wrapper <runc argv...>`: stands in for runc (the `arch-runc` shim that
 *   engines are pointed at supplies this first argument).
 * - `arch hook <createRuntime|poststop>`: the OCI hook role (`hooks/hook.ts`), run by runc
 *   for shared-FS containers (state on stdin).
 * - `arch exit-watcher <stateDir>`: internal, the node's exit watcher, started on demand by the
 *   wrapper to learn how containers end (`src/exitwatch/daemon.ts`).
 * - `arch <verb> ...`: the operator CLI (`arch --help`).
 * - `arch` alone prints the machine architecture, like coreutils `arch`, which it shadows.
 *
 * Role dispatch only; no npm module is statically reachable from here (a test checks), and
 * only this file (and the launcher's stage 0, `src/wrapper/stage0.ts`, which imports it and
 * calls {@link run}) exits the process.
 */

import { failOpen, runWrapper } from "./src/wrapper/wrapper.ts";
import { DEFAULT_CONFIG_PATH, selfPaths } from "./src/config/host.ts";

async function main(args: readonly string[]): Promise<number> {
  const [role, ...rest] = args;
  if (role === "runc-wrapper") {
    try {
      return await runWrapper(rest, Deno.env.get("ARCH_CONFIG") ?? DEFAULT_CONFIG_PATH, selfPaths());
    } catch {
      return failOpen(rest, selfPaths());
    }
  }
  if (role === "hook") {
    const { runHook } = await import("./hooks/hook.ts");
    return await runHook(rest);
  }
  if (role === "exit-watcher") {
    const { runExitWatcher } = await import("./src/exitwatch/client.ts");
    return await runExitWatcher(rest);
  }
  if (role === undefined) {
    // uname(2)'s machine field, which coreutils `arch` prints: x86_64, aarch64, ...
    await Deno.stdout.write(new TextEncoder().encode(Deno.build.arch + "\n"));
    return 0;
  }
  const { runCli } = await import("./src/cli/main.ts");
  return await runCli([...args]);
}

/** Runs the role `Deno.args` names and exits with its status. */
export async function run(): Promise<never> {
  let code: number;
  try {
    code = await main(Deno.args);
  } catch {
    // The wrapper handles its own errors; nothing may reach stderr from it. The CLI reports
    // its errors itself; this is the last guard.
    code = 70;
  }
  Deno.exit(code);
}

if (import.meta.main) await run();
