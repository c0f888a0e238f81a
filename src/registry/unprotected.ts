/**
 * The small part of the node census (`census.ts`) the runc wrapper needs on its hot path:
 * whether ARCH's record of an id is runc's container of that id (compared as directories, not
 * strings), and the notes the wrapper leaves when it passes an opted-in create to runc unchanged.
 *
 * Guarantees: Deno built-ins only (no npm module, no metrics); never throws but where it says.
 */

import { isSafeSegment, samePath } from "../util/paths.ts";

/**
 * Whether runc's own state of `root/id` is the container ARCH recorded (same bundle): a
 * record outliving its container (an ARCH process that died, `runc delete` run by hand) must
 * never change what happens to a new container reusing the id. Unknown to runc counts as
 * matching (runc then answers the call itself).
 *
 * The bundle is compared as a directory (device and inode), not as a string: runc's label holds
 * the resolved path (`/run/docker/...`) while the engine passed `/var/run/docker/...` (Docker's
 * default exec root crosses the `/var/run` → `/run` link), and a bundle directory made anew for
 * a later container of the same id is another directory.
 */
export function describesRuncContainer(bundle: string, root: string, id: string): boolean {
  let state: { config?: { labels?: string[] } };
  try {
    state = JSON.parse(Deno.readTextFileSync(`${root}/${id}/state.json`));
  } catch {
    return true;
  }
  const label = state.config?.labels?.find((l) => l.startsWith("bundle="));
  return label === undefined || samePath(label.slice("bundle=".length), bundle);
}

/** Where the notes of unprotected containers are: `<stateDir>/unprotected/<namespace>/<id>.json`. */
export const notesDir = (stateDir: string): string => `${stateDir}/unprotected`;

/**
 * Leaves the note that the opted-in container `namespace/id` runs without ARCH, and why (the
 * wrapper, when it passes a create to runc unchanged). Never throws.
 */
export function noteUnprotected(stateDir: string, namespace: string, id: string, reason: string): void {
  try {
    if (!isSafeSegment(namespace) || !isSafeSegment(id)) return;
    const dir = `${notesDir(stateDir)}/${namespace}`;
    Deno.mkdirSync(dir, { recursive: true, mode: 0o700 });
    const tmp = `${dir}/.${id}.${Deno.pid}.tmp`;
    Deno.writeTextFileSync(tmp, JSON.stringify({ reason: reason.slice(0, 500), at: new Date().toISOString() }), {
      mode: 0o600,
    });
    Deno.renameSync(tmp, `${dir}/${id}.json`);
  } catch { /* a note is best effort: the census still shows the container, with a generic reason */ }
}

/** Removes the note of `namespace/id` (a create that ARCH handled). Never throws. */
export function clearUnprotected(stateDir: string, namespace: string, id: string): void {
  try {
    if (isSafeSegment(namespace) && isSafeSegment(id)) Deno.removeSync(`${notesDir(stateDir)}/${namespace}/${id}.json`);
  } catch { /* absent */ }
}

export function readNote(stateDir: string, namespace: string, id: string): string | undefined {
  try {
    const note = JSON.parse(Deno.readTextFileSync(`${notesDir(stateDir)}/${namespace}/${id}.json`));
    return typeof note.reason === "string" ? note.reason : undefined;
  } catch {
    return undefined;
  }
}
