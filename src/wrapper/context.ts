/** What the wrapper knows of one intercepted runc call, handed to the create/start/delete handlers. */

import type { RuncCall } from "../runc/argv.ts";
import type { HostBasics } from "../config/host.ts";
import type { BundleSpec } from "../config/container.ts";
import type { Logger } from "../log/log.ts";
import type { Registry } from "../registry/registry.ts";

/** Everything an intercepted call needs. */
export interface WrapperContext {
  readonly argv: readonly string[];
  readonly call: RuncCall;
  readonly host: HostBasics;
  readonly runc: string;
  readonly log: Logger;
  readonly registry: Registry;
  readonly namespace: string;
  readonly id: string;
  /** runc's `--root` of this call. */
  readonly root: string;
  /** The bundle's config.json, read once (create only). */
  readonly spec: BundleSpec | undefined;
  /** Reports an error to the engine (runc's log file) and to ARCH's log. */
  readonly fail: (msg: string, fields?: Record<string, unknown>) => void;
}
