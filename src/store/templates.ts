/**
 * Templates: committed checkpoints the admin published under a name (`arch publish <key>
 * <name>`), restored by name into as many containers as ask (`ARCH_RESTORE_FROM=<name>`) — a
 * warm start of a process that is expensive to initialise.
 *
 *     <root>/<scope>/.templates/<name>/    a key directory of its own (`store.ts`): current,
 *                                           ckpt-*, quarantine-*, claim
 *
 * Guarantees: a template lives in its checkpoint's root and scope (a container of another
 * scope cannot reach it; no key can be named `.templates`, `reservedKeyProblem`), and is bound
 * to its image like any checkpoint. Publishing verifies the checkpoint whole first, then
 * hard-links its files (no copy of the memory; the files of a committed checkpoint are never
 * changed again) under a new manifest that names the template, signed with the node's secret:
 * only root, who holds it, publishes. A template is never marked consumed, and a restore that
 * fails never quarantines it (one container's failure must not take it from the others).
 */

import { MANIFEST_FILE, SIGNATURE_FILE, TEMPLATES_DIR } from "./layout.ts";
export { templateNameProblem } from "./layout.ts";
import { KeyStore, makeDurable, newCheckpointName } from "./store.ts";
import { type Manifest, verifyCheckpoint, writeManifest } from "./manifest.ts";
import { fsyncPath } from "../util/fsync.ts";
import { isSafeSegment } from "../util/paths.ts";

/** The store of template `name` in `scope` of checkpoint root `root` (see the module doc). */
export function templateStore(root: string, scope: string, name: string): KeyStore {
  if (!isSafeSegment(scope)) throw new Error(`unsafe key scope "${scope}"`);
  return new KeyStore(`${root}/${scope}`, TEMPLATES_DIR, name);
}

/**
 * Publishes the committed checkpoint `from` (a directory of key `fromKey`) as template `name`;
 * returns the template's committed directory. Throws when the checkpoint does not verify or
 * the template's claim cannot be taken.
 */
export async function publishTemplate(
  from: string,
  target: KeyStore,
  name: string,
  fromKey: string,
  secret: Uint8Array,
  lockWaitMs: number,
): Promise<string> {
  const raw = JSON.parse(Deno.readTextFileSync(`${from}/${MANIFEST_FILE}`)) as Partial<Manifest>;
  // Whole and authentic (every file hashed), for the scope, key and image it names.
  const manifest = await verifyCheckpoint(from, secret, {
    scope: String(raw.scope),
    key: String(raw.key),
    image: String(raw.image),
    ...(raw.template !== undefined ? { template: raw.template.name } : {}),
  });
  using _claim = await target.claim("publish", { create: true, waitMs: lockWaitMs });
  const tmp = target.beginCheckpoint();
  try {
    for (const file of manifest.files) {
      const dir = file.path.includes("/") ? file.path.slice(0, file.path.lastIndexOf("/")) : "";
      if (dir !== "") Deno.mkdirSync(`${tmp}/${dir}`, { recursive: true, mode: 0o700 });
      Deno.linkSync(`${from}/${file.path}`, `${tmp}/${file.path}`);
    }
    const published: Manifest = {
      ...manifest,
      template: { name, fromKey, publishedAt: new Date().toISOString() },
    };
    await makeDurable(tmp);
    await writeManifest(tmp, published, secret);
    fsyncPath(`${tmp}/${MANIFEST_FILE}`);
    fsyncPath(`${tmp}/${SIGNATURE_FILE}`);
    return target.commit(tmp, newCheckpointName());
  } catch (error) {
    try {
      target.abort(tmp);
    } catch { /* the next publish removes it */ }
    throw error;
  }
}
