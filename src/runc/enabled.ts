/**
 * What the runc wrapper does for ARCH-enabled containers (loaded lazily: plain containers
 * never load this module).
 *
 * - `create`: resolve the checkpoint key, refuse bad `ARCH_*` values with one sentence,
 *   record the container in the node registry, then run runc's own `create`.
 * - `start`: runc's own `start`.
 * - `delete`: runc's own `delete`; once runc succeeded, the registry record goes.
 *
 * Returns an exit status when it handled the call, `undefined` to let the wrapper hand the
 * call to runc unchanged.
 */

import type { WrapperContext } from "./wrapper.ts";
import { envOf, readBundleSpec, resolveKey } from "../config/container.ts";
import { stringOption } from "./argv.ts";
import { runCommand } from "../process/exec.ts";

export async function handle(ctx: WrapperContext): Promise<number | undefined> {
  switch (ctx.call.command) {
    case "create":
      return onCreate(ctx);
    case "delete":
      return await onDelete(ctx);
    default:
      return undefined;
  }
}

function onCreate(ctx: WrapperContext): number | undefined {
  const bundle = stringOption(ctx.call.options, "bundle") ?? Deno.cwd();
  const spec = readBundleSpec(bundle);
  const key = resolveKey(envOf(spec), spec.annotations ?? {}, ctx.id);
  if (!key.ok) {
    ctx.fail(key.error);
    return 1;
  }
  ctx.registry.put({
    namespace: ctx.namespace,
    id: ctx.id,
    root: stringOption(ctx.call.global, "root") ?? "/run/runc",
    bundle,
    key: key.key,
    keySource: key.source,
    createdAt: new Date().toISOString(),
  });
  ctx.log.info("registered ARCH container", { key: key.key, keySource: key.source, bundle });
  return undefined;
}

async function onDelete(ctx: WrapperContext): Promise<number> {
  const result = await runCommand({ cmd: ctx.runc, args: ctx.argv, stdio: "inherit" });
  if (result.code === 0) {
    ctx.registry.remove(ctx.namespace, ctx.id);
    ctx.log.info("container deleted, record removed");
  }
  return result.code;
}
