/**
 * Azure Spot eviction notices through Scheduled Events:
 * `GET /metadata/scheduledevents?api-version=2020-07-01` with `Metadata: true`. Only events
 * of type `Preempt` whose `Resources` name this VM (its name read once from
 * `/metadata/instance/compute/name`) are notices; the event's `NotBefore` (RFC 1123, blank
 * once the event started) is the notice time and its `EventId` the notice's identity. After
 * finalize ended, {@link AzureSource.acknowledge} POSTs `{"StartRequests":[{"EventId":...}]}`,
 * which lets Azure evict at once: it is never sent before. An `EventId`'s control characters
 * are escaped in the notice id (what is logged and printed); the acknowledgement sends it
 * as Azure gave it.
 */

import { httpRequest, UnexpectedStatusError } from "./http.ts";
import {
  MAX_NOTICE_SECONDS,
  type Notice,
  type NoticeSource,
  type Observation,
  type PollContext,
  printable,
  remaining,
} from "./notice.ts";

/** Where the Azure instance metadata service answers. */
export const AZURE_DEFAULT_ENDPOINT = "http://169.254.169.254";

const EVENTS_PATH = "/metadata/scheduledevents?api-version=2020-07-01";
const NAME_PATH = "/metadata/instance/compute/name?api-version=2021-02-01&format=text";

/** Options of {@link AzureSource}. */
export interface AzureOptions {
  readonly endpoint?: string;
  /** Bound of each request, milliseconds. */
  readonly requestTimeoutMs?: number;
}

interface ScheduledEvent {
  readonly EventId?: unknown;
  readonly EventType?: unknown;
  readonly Resources?: unknown;
  readonly NotBefore?: unknown;
  readonly EventStatus?: unknown;
}

/** Azure's notice protocol (see the module doc). */
export class AzureSource implements NoticeSource {
  readonly provider = "azure";
  readonly hanging = false;
  readonly maxNoticeSeconds = MAX_NOTICE_SECONDS.azure;
  readonly endpoint: string;
  readonly pollBudgetMs: number;
  #vmName: string | undefined;

  constructor(options: AzureOptions = {}) {
    this.endpoint = (options.endpoint ?? AZURE_DEFAULT_ENDPOINT).replace(/\/+$/, "");
    this.pollBudgetMs = options.requestTimeoutMs ?? 2_000;
  }

  /** This VM's name, as Scheduled Events name it in `Resources` (read once). */
  async vmName(ctx: PollContext): Promise<string> {
    if (this.#vmName !== undefined) return this.#vmName;
    const url = `${this.endpoint}${NAME_PATH}`;
    const r = await httpRequest({
      url,
      headers: { Metadata: "true" },
      timeoutMs: remaining(ctx, this.pollBudgetMs),
      signal: ctx.signal,
    });
    const name = r.body.trim();
    if (r.status !== 200 || name === "") throw new UnexpectedStatusError(`GET ${url}`, r.status, r.body);
    this.#vmName = name;
    return name;
  }

  /** One poll: this VM's pending `Preempt` events. */
  async poll(ctx: PollContext): Promise<Observation> {
    const vm = await this.vmName(ctx);
    const url = `${this.endpoint}${EVENTS_PATH}`;
    const r = await httpRequest({
      url,
      headers: { Metadata: "true" },
      timeoutMs: remaining(ctx, this.pollBudgetMs),
      signal: ctx.signal,
    });
    if (r.status !== 200) throw new UnexpectedStatusError(`GET ${url}`, r.status, r.body);
    let doc: { DocumentIncarnation?: unknown; Events?: unknown };
    try {
      doc = JSON.parse(r.body);
    } catch {
      throw new Error(`GET ${url} answered something that is not JSON: ${printable(r.body.slice(0, 200))}`);
    }
    if (!Array.isArray(doc.Events)) throw new Error(`GET ${url} answered a document without "Events"`);
    return { notices: preemptNotices(doc.Events as ScheduledEvent[], vm, doc.DocumentIncarnation) };
  }

  /** Acknowledges `notice`'s event (Azure may then evict at once); throws unless Azure accepted it. */
  async acknowledge(notice: Notice, ctx: PollContext): Promise<void> {
    const url = `${this.endpoint}${EVENTS_PATH}`;
    const r = await httpRequest({
      method: "POST",
      url,
      headers: { Metadata: "true", "Content-Type": "application/json" },
      body: JSON.stringify({ StartRequests: [{ EventId: notice.detail.EventId }] }),
      timeoutMs: remaining(ctx, this.pollBudgetMs),
      signal: ctx.signal,
    });
    if (r.status < 200 || r.status > 299) throw new UnexpectedStatusError(`POST ${url}`, r.status, r.body);
  }
}

/**
 * The `Preempt` events of `events` that name VM `vm`, as notices.
 *
 * @example
 * ```ts
 * import { preemptNotices } from "./azure.ts";
 * const events = [
 *   { EventId: "a", EventType: "Preempt", Resources: ["vm1"], NotBefore: "Mon, 19 Sep 2016 18:29:47 GMT" },
 *   { EventId: "b", EventType: "Preempt", Resources: ["vm2"], NotBefore: "" },
 *   { EventId: "c", EventType: "Reboot", Resources: ["vm1"], NotBefore: "" },
 * ];
 * const n = preemptNotices(events, "vm1", 3);
 * if (n.length !== 1 || n[0]!.time !== "2016-09-19T18:29:47.000Z") throw new Error();
 * ```
 */
export function preemptNotices(events: readonly ScheduledEvent[], vm: string, incarnation?: unknown): Notice[] {
  const out: Notice[] = [];
  for (const e of events) {
    if (e === null || typeof e !== "object" || e.EventType !== "Preempt") continue;
    if (typeof e.EventId !== "string" || e.EventId === "") continue;
    if (!Array.isArray(e.Resources) || !e.Resources.includes(vm)) continue;
    const at = typeof e.NotBefore === "string" && e.NotBefore !== "" ? Date.parse(e.NotBefore) : NaN;
    out.push({
      id: `azure:${printable(e.EventId)}`,
      kind: "preempt",
      time: Number.isFinite(at) ? new Date(at).toISOString() : null,
      detail: {
        EventId: e.EventId,
        NotBefore: e.NotBefore ?? null,
        EventStatus: e.EventStatus ?? null,
        DocumentIncarnation: incarnation ?? null,
      },
    });
  }
  return out;
}
