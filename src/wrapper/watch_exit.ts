/** Hands a container's init process to the node's exit watcher (see `exitwatch/client.ts`). */

import type { WrapperContext } from "./context.ts";
import type { ContainerRecord } from "../registry/registry.ts";

/** Starts the exit watcher for the container's init process (pid from its pid file). */
export async function watchExit(ctx: WrapperContext, record: ContainerRecord): Promise<void> {
  try {
    const pidFile = typeof record.pidFile === "string" ? record.pidFile : undefined;
    const pid = pidFile !== undefined ? Number(Deno.readTextFileSync(pidFile).trim()) : NaN;
    if (!(pid > 0)) throw new Error(`no pid file for the container`);
    const { spawnExitWatcher } = await import("../exitwatch/client.ts");
    if (!await spawnExitWatcher(ctx.host.stateDir, ctx.namespace, ctx.id, record.createdAt, pid)) {
      throw new Error(`process ${pid} already gone`);
    }
  } catch (error) {
    ctx.log.warn("cannot watch the container's exit: its checkpoint data will be kept", { error: String(error) });
  }
}
