/**
 * The wrapper's note to its launcher, so that calls ARCH would hand to runc unchanged skip
 * starting Deno (about 0.1 s of CPU each on a 2-core node; the shim's two `delete` calls per
 * container at finalize were a fifth of the node's CPU). The launcher's shell lines are
 * `runcFastPath` in scripts/build.ts.
 *
 * The launcher also answers the engine's `start` of a container ARCH restored (a no-op) from
 * the registry's restored mark (`registry/registry.ts`), and hands a start or delete of a
 * container ARCH has no record of straight to runc.
 *
 * `<runc root>/.arch-runc` holds two lines: the real runc and ARCH's state directory, as the
 * host configuration gives them. The wrapper rewrites it at every `create` in that root when
 * it differs, and removes it when the configuration has a problem (then every call takes the
 * normal path). runc ignores files in its root (`runc list` reads directories only).
 *
 * Guarantees: written 0600 by root, atomically (temporary file + rename); the launcher trusts
 * the file only if root owns it. Never throws: a note that cannot be written only costs time.
 */

/** Name of the note in a runc root. */
export const FAST_PATH_FILE = ".arch-runc";

/** Writes (or, with `runc` undefined, removes) the note of `root`; see the module doc. */
export function noteFastPath(root: string, runc: string | undefined, stateDir: string): void {
  const path = `${root.replace(/\/+$/, "")}/${FAST_PATH_FILE}`;
  try {
    if (runc === undefined || !runc.startsWith("/") || !stateDir.startsWith("/") || /[\n\r]/.test(runc + stateDir)) {
      Deno.removeSync(path);
      return;
    }
    const text = `${runc}\n${stateDir}\n`;
    try {
      if (Deno.readTextFileSync(path) === text) return;
    } catch { /* absent */ }
    if (!Deno.statSync(root).isDirectory) return; // runc makes its root; ARCH never does
    const tmp = `${path}.${Deno.pid}.tmp`;
    Deno.writeTextFileSync(tmp, text, { mode: 0o600, createNew: true });
    Deno.renameSync(tmp, path);
  } catch { /* see the module doc */ }
}
