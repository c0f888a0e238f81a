/**
 * Stage 0 of the runc wrapper in launcher mode: what `dist/arch-runc` runs. It loads the
 * bundled program (`mod.js` beside it) and runs it; if the program cannot be loaded at all
 * (a chunk missing, truncated or corrupt: the import fails before any ARCH code ran), it
 * hands the call to the real runc instead, so every container, ARCH-enabled or not, still
 * runs under runc (without ARCH) rather than failing.
 *
 * Guarantees: runc is never run twice. This module catches only the failure of the import;
 * once the program runs, its own fail-open applies and its errors are not caught here.
 * Nothing is written to stdout or stderr. The fallback runc is the one the wrapper would
 * use (the host configuration's `runc`, else the first usable of the default locations:
 * root-owned, ELF, not ARCH itself). It is bundled on its own (`dist/lib/runc-stage0.js`,
 * no shared chunk) so that a damaged program bundle cannot damage it.
 */

import { execRunc } from "./handoff.ts";
import { DEFAULT_CONFIG_PATH, readHostBasics, selfPaths } from "../config/host.ts";

/** The program's module: the bundled `mod.ts`. */
interface Program {
  run(): Promise<never>;
}

/**
 * Runs the program at `entry` with this process's arguments (`runc-wrapper <runc argv>`); if
 * it cannot be loaded, replaces this process with the real runc. Returns an exit status only
 * if no runc can be executed.
 */
export async function stage0(entry: string): Promise<number> {
  let program: Program;
  try {
    program = await import(entry) as Program;
    if (typeof program.run !== "function") throw new Error(`${entry} has no run()`);
  } catch {
    const [, ...argv] = Deno.args; // drop the role
    const runc = readHostBasics(Deno.env.get("ARCH_CONFIG") ?? DEFAULT_CONFIG_PATH, selfPaths()).runc;
    if (runc !== undefined) execRunc(runc, Deno.env.get("ARCH_LAUNCHER_SELF") ?? "runc", argv);
    return 127;
  }
  return await program.run();
}

if (import.meta.main) {
  // A non-literal specifier: the bundler must leave the program out of this file.
  const entry = new URL("./mod.js", import.meta.url).href;
  Deno.exit(await stage0(entry));
}
