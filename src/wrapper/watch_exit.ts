/** Hands a container's init process to the node's exit watcher (see `exitwatch/client.ts`). */

import type { WrapperContext } from "./context.ts";
import { type ContainerRecord, initPid } from "../registry/registry.ts";

/** Starts the exit watcher for the container's init process (pid from its pid file). */
export async function watchExit(ctx: WrapperContext, record: ContainerRecord): Promise<void> {
  try {
    const pid = initPid(record);
    if (pid === undefined) throw new Error(`no readable pid file for the container`);
    const { spawnExitWatcher } = await import("../exitwatch/client.ts");
    if (!await spawnExitWatcher(ctx.host.stateDir, ctx.namespace, ctx.id, record.createdAt, pid)) {
      throw new Error(`process ${pid} already gone`);
    }
  } catch (error) {
    ctx.log.warn("cannot watch the container's exit: its checkpoint data will be kept", { error: String(error) });
  }
}
