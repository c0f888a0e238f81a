/**
 * `arch publish <key> <name>` and `arch unpublish <name>`: make a key's committed checkpoint a
 * named, read-only template (`store/templates.ts`) that containers of its scope and image start
 * from with `ARCH_RESTORE_FROM=<name>`, and remove one. Root only (the node's secret signs the
 * template). One line of output each.
 */

import { loadHostConfig } from "../config/host_schema.ts";
import { checkpointRootsOf, findKeys, scanCheckpoints, TEMPLATE_PREFIX } from "../store/listing.ts";
import { publishTemplate, templateNameProblem, templateStore } from "../store/templates.ts";
import { loadSecret } from "../store/secret.ts";
import { KeyStore } from "../store/store.ts";
import { errorMessage, UsageError } from "../util/errors.ts";
import { resolveKey } from "./inspect.ts";
import { terminalLine } from "./output.ts";

/** `arch publish`: 0, or throws {@link UsageError} / the verification's error. */
export async function publish(wanted: string, name: string): Promise<number> {
  const problem = templateNameProblem(name);
  if (problem !== undefined) throw new UsageError(problem);
  if (wanted.startsWith(TEMPLATE_PREFIX)) {
    throw new UsageError(`"${wanted}" is a template: publish the key it came from (see arch inspect ${wanted})`);
  }
  const host = loadHostConfig();
  const key = resolveKey(findKeys(scanCheckpoints(checkpointRootsOf(host)), wanted), wanted);
  const current = key.checkpoints.find((c) => c.status === "committed" || c.status === "consumed");
  if (current === undefined) {
    throw new UsageError(`checkpoint key "${key.scope}/${key.key}" has no committed checkpoint to publish`);
  }
  const target = templateStore(key.root, key.scope, name);
  const replaced = target.currentPath();
  let dir;
  try {
    // The source key's claim: no commit, gc or delete of the key changes the checkpoint while it is linked.
    using _source = await new KeyStore(key.root, key.scope, key.key).claim("publish", {
      waitMs: host.lockWaitSeconds * 1000,
    });
    dir = await publishTemplate(
      current.path,
      target,
      name,
      key.key,
      loadSecret(host.secretFile, false),
      host.lockWaitSeconds * 1000,
    );
  } catch (error) {
    throw new UsageError(`cannot publish ${current.path} as template "${name}": ${errorMessage(error)}`);
  }
  console.log(terminalLine(
    `published ${key.scope}/${key.key} (${current.name}) as template "${name}" -> ${dir}` +
      (replaced !== undefined ? ` (replacing ${replaced.slice(replaced.lastIndexOf("/") + 1)})` : "") +
      `; start containers of scope ${key.scope} and the same image from it with ARCH_RESTORE_FROM=${name}`,
  ));
  return 0;
}

/** `arch unpublish <name|scope/name>`: removes the template (never a key's checkpoint). */
export async function unpublish(wanted: string): Promise<number> {
  const host = loadHostConfig();
  const matches = findKeys(scanCheckpoints(checkpointRootsOf(host)), `${TEMPLATE_PREFIX}${wanted}`);
  if (matches.length === 0) throw new UsageError(`no template "${wanted}" on this node's checkpoint roots`);
  if (matches.length > 1) {
    throw new UsageError(
      `"${wanted}" names ${matches.length} templates (${
        matches.map((k) => `${k.templateOf}/${k.key}`).join(", ")
      }): give scope/name`,
    );
  }
  const t = matches[0]!;
  const store = templateStore(t.root.slice(0, t.root.lastIndexOf("/")), t.templateOf!, t.key);
  {
    // Under its claim: never while a container is being restored from it.
    using _claim = await store.claim("unpublish", { waitMs: host.lockWaitSeconds * 1000 });
    store.removeAll();
  }
  console.log(terminalLine(`removed template "${t.key}" of scope ${t.templateOf}`));
  return 0;
}
