/**
 * Local cloud metadata servers for the watcher's tests, each on 127.0.0.1 (a free port) and
 * following its cloud's documented protocol:
 * - AWS IMDSv2: `PUT /latest/api/token` (TTL header 1..21600, else 400) → token; GETs need a
 *   live `X-aws-ec2-metadata-token` (else 401); `spot/instance-action` and
 *   `events/recommendations/rebalance` answer 404 until a notice is set.
 * - GCP: `/computeMetadata/v1/instance/preempted` needs `Metadata-Flavor: Google` (else 403),
 *   answers `TRUE`/`FALSE` with `Metadata-Flavor: Google` and an `ETag`; `wait_for_change=true`
 *   hangs until the value changes or `timeout_sec` passes, and returns at once when
 *   `last_etag` differs from the current ETag.
 * - Azure: requests need `Metadata: true` (else 400); `instance/compute` (JSON), `compute/name` (text),
 *   `scheduledevents` (GET: document; POST `{"StartRequests":[{"EventId"}]}`: acknowledges,
 *   the acknowledged events leave the document and its `DocumentIncarnation` grows).
 * AWS also has faults of its own: `tokenOverride` (the token answered, e.g. one with CR/LF)
 * and `rebalanceFault` (the rebalance path alone answers an error status or slowly).
 * Knobs shared by all: `failNext` answers that many requests with 500 (503 for GCP) and
 * `errorBody`; `delayMs` delays every answer; `requests` records what arrived. Closing cuts hanging and
 * delayed requests.
 * Also {@link runWatcher}: a watcher of a source with test timings.
 */

import { Watcher, type WatcherStatus, type WatchOptions } from "../../src/spot/loop.ts";
import type { NoticeSource } from "../../src/spot/notice.ts";

/** One request a server received. */
export interface SeenRequest {
  readonly method: string;
  readonly path: string;
  readonly at: number;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: string;
}

abstract class MetadataServer {
  /** Answer the next N requests with a server error. */
  failNext = 0;
  /** Delay every answer by this many milliseconds. */
  delayMs = 0;
  /** The body of the `failNext` answers. */
  errorBody = "internal error";
  readonly requests: SeenRequest[] = [];
  readonly #closing = new AbortController();
  readonly #server: Deno.HttpServer<Deno.NetAddr>;

  constructor(readonly errorStatus = 500) {
    this.#server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => this.#serve(req));
  }

  /** The server's base URL, e.g. `http://127.0.0.1:41234`. */
  get url(): string {
    return `http://127.0.0.1:${this.#server.addr.port}`;
  }

  /** Aborted when the server closes. */
  protected get closing(): AbortSignal {
    return this.#closing.signal;
  }

  /** Waits `ms`, or less if the server closes. */
  protected wait(ms: number): Promise<void> {
    return new Promise((resolve) => {
      if (this.closing.aborted) return resolve();
      const done = () => {
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.closing.addEventListener("abort", done, { once: true });
    });
  }

  async #serve(req: Request): Promise<Response> {
    const url = new URL(req.url);
    const body = req.method === "GET" ? "" : await req.text();
    this.requests.push({
      method: req.method,
      path: url.pathname + url.search,
      at: Date.now(),
      headers: Object.fromEntries(req.headers),
      body,
    });
    if (this.delayMs > 0) await this.wait(this.delayMs);
    if (this.failNext > 0) {
      this.failNext--;
      return new Response(this.errorBody, { status: this.errorStatus });
    }
    return await this.handle(req, url, body);
  }

  protected abstract handle(req: Request, url: URL, body: string): Promise<Response> | Response;

  /** Requests whose path starts with `prefix`. */
  seen(prefix: string, method?: string): SeenRequest[] {
    return this.requests.filter((r) => r.path.startsWith(prefix) && (method === undefined || r.method === method));
  }

  /** Stops the server, cutting hanging and delayed requests. */
  async close(): Promise<void> {
    this.#closing.abort();
    await this.#server.shutdown();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/** AWS IMDSv2 (see the module doc). */
export class AwsImds extends MetadataServer {
  /** The current spot instance action, or `null` (404). */
  instanceAction: { action: string; time: string } | null = null;
  /** The current rebalance recommendation, or `null` (404). */
  rebalance: { noticeTime: string } | null = null;
  /** Tokens issued and when each expires (epoch ms). */
  readonly tokens = new Map<string, number>();
  /** Answer this as the token (and accept it) instead of a fresh one. */
  tokenOverride: string | null = null;
  /** The rebalance path alone answers `status` (after `delayMs`), or `null`: no fault. */
  rebalanceFault: { status?: number; delayMs?: number } | null = null;

  /** Makes every token issued so far invalid (as after their TTL): the next GETs get 401. */
  expireTokens(): void {
    for (const t of this.tokens.keys()) this.tokens.set(t, 0);
  }

  protected async handle(req: Request, url: URL): Promise<Response> {
    if (url.pathname === "/latest/api/token") {
      if (req.method !== "PUT") return new Response("", { status: 405 });
      const ttl = Number(req.headers.get("x-aws-ec2-metadata-token-ttl-seconds"));
      if (!Number.isInteger(ttl) || ttl < 1 || ttl > 21600) return new Response("", { status: 400 });
      const token = this.tokenOverride ?? crypto.randomUUID().replaceAll("-", "");
      this.tokens.set(token, Date.now() + ttl * 1000);
      return new Response(token, { headers: { "x-aws-ec2-metadata-token-ttl-seconds": String(ttl) } });
    }
    if (req.method !== "GET") return new Response("", { status: 405 });
    const token = req.headers.get("x-aws-ec2-metadata-token") ?? "";
    if ((this.tokens.get(token) ?? 0) <= Date.now()) return new Response("", { status: 401 });
    const json = (v: unknown) => new Response(JSON.stringify(v), { headers: { "content-type": "text/plain" } });
    if (url.pathname === "/latest/meta-data/spot/instance-action") {
      return this.instanceAction === null ? new Response("", { status: 404 }) : json(this.instanceAction);
    }
    if (url.pathname === "/latest/meta-data/events/recommendations/rebalance") {
      const fault = this.rebalanceFault;
      if (fault !== null) {
        if (fault.delayMs !== undefined) await this.wait(fault.delayMs);
        if (fault.status !== undefined) return new Response("rebalance broken", { status: fault.status });
      }
      return this.rebalance === null ? new Response("", { status: 404 }) : json(this.rebalance);
    }
    return new Response("", { status: 404 });
  }
}

/** The GCP metadata server (see the module doc). */
export class GcpMetadata extends MetadataServer {
  #preempted = false;
  #generation = 0;
  #changed = new EventTarget();
  /** Hanging GETs currently waiting. */
  hanging = 0;

  constructor() {
    super(503);
  }

  /** The current ETag of `preempted`. */
  get etag(): string {
    return `etag-${this.#generation}-${this.#preempted ? "t" : "f"}`;
  }

  /** Sets `preempted` (waking hanging GETs when it changes). */
  setPreempted(value: boolean): void {
    if (value === this.#preempted) return;
    this.#preempted = value;
    this.#generation++;
    this.#changed.dispatchEvent(new Event("change"));
  }

  #answer(): Response {
    return new Response(this.#preempted ? "TRUE" : "FALSE", {
      headers: { "Metadata-Flavor": "Google", ETag: this.etag, "content-type": "application/text" },
    });
  }

  protected async handle(req: Request, url: URL): Promise<Response> {
    if (req.headers.get("metadata-flavor") !== "Google") {
      return new Response("Missing Metadata-Flavor:Google header.", { status: 403 });
    }
    if (url.pathname !== "/computeMetadata/v1/instance/preempted") {
      return new Response("not found", { status: 404, headers: { "Metadata-Flavor": "Google" } });
    }
    if (url.searchParams.get("wait_for_change") !== "true") return this.#answer();
    const last = url.searchParams.get("last_etag");
    if (last !== null && last !== this.etag) return this.#answer();
    const timeoutS = Number(url.searchParams.get("timeout_sec") ?? "300");
    this.hanging++;
    try {
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          this.#changed.removeEventListener("change", done);
          this.closing.removeEventListener("abort", done);
          resolve();
        };
        const timer = setTimeout(done, timeoutS * 1000);
        this.#changed.addEventListener("change", done);
        this.closing.addEventListener("abort", done);
      });
    } finally {
      this.hanging--;
    }
    return this.#answer();
  }
}

/** One scheduled event as Azure lists it. */
export interface AzureEvent {
  EventId: string;
  EventType: string;
  ResourceType: "VirtualMachine";
  Resources: string[];
  EventStatus: "Scheduled" | "Started";
  NotBefore: string;
  Description: string;
  EventSource: "Platform" | "User";
  DurationInSeconds: number;
}

/** Azure's instance metadata service with Scheduled Events (see the module doc). */
export class AzureImds extends MetadataServer {
  events: AzureEvent[] = [];
  incarnation = 1;
  /** Acknowledgements received: event id and when. */
  readonly acks: { eventId: string; at: number }[] = [];
  readonly vmId = crypto.randomUUID();

  constructor(readonly vmName = "arch-node-1") {
    super(500);
  }

  /** Adds an event (and bumps `DocumentIncarnation`). */
  addEvent(event: Partial<AzureEvent> & Pick<AzureEvent, "EventId">): void {
    this.events.push({
      EventType: "Preempt",
      ResourceType: "VirtualMachine",
      Resources: [this.vmName],
      EventStatus: "Scheduled",
      NotBefore: new Date(Date.now() + 30_000).toUTCString(),
      Description: "",
      EventSource: "Platform",
      DurationInSeconds: -1,
      ...event,
    });
    this.incarnation++;
  }

  protected handle(req: Request, url: URL, body: string): Response {
    if (req.headers.get("metadata") !== "true") {
      return Response.json({ error: "Bad request. Required metadata header not specified" }, { status: 400 });
    }
    if (url.pathname === "/metadata/instance/compute" && req.method === "GET") {
      return Response.json({ name: this.vmName, vmId: this.vmId, location: "westeurope", osType: "Linux" });
    }
    if (url.pathname === "/metadata/instance/compute/name" && req.method === "GET") {
      return new Response(this.vmName, { headers: { "content-type": "text/plain" } });
    }
    if (url.pathname !== "/metadata/scheduledevents") return new Response("", { status: 404 });
    if (url.searchParams.get("api-version") === null) {
      return Response.json({ error: "Bad request. api-version was not specified in the request" }, { status: 400 });
    }
    if (req.method === "GET") return Response.json({ DocumentIncarnation: this.incarnation, Events: this.events });
    if (req.method !== "POST") return new Response("", { status: 405 });
    let ids: string[];
    try {
      ids = (JSON.parse(body) as { StartRequests: { EventId: string }[] }).StartRequests.map((s) => s.EventId);
    } catch {
      return Response.json({ error: "Bad request" }, { status: 400 });
    }
    for (const id of ids) this.acks.push({ eventId: id, at: Date.now() });
    const before = this.events.length;
    this.events = this.events.filter((e) => !ids.includes(e.EventId));
    if (this.events.length !== before) this.incarnation++;
    return new Response("", { status: 200 });
  }
}

/** A plain web server (a node that is no cloud's): answers `answer` (default 404) to everything. */
export class NotACloud extends MetadataServer {
  answer = { status: 404, body: "not found" };

  protected handle(): Response {
    return new Response(this.answer.body, { status: this.answer.status });
  }
}

/** One call of a {@link RecordingFinalize}. */
export interface FinalizeCall {
  readonly deadline: number;
  readonly noticeId: string;
  readonly startedAt: number;
  endedAt?: number;
}

/**
 * An injected finalize action for unit tests of the watch loop: records each call and
 * resolves with `exitCode` after `durationMs`.
 */
export class RecordingFinalize {
  readonly calls: FinalizeCall[] = [];
  durationMs = 0;
  exitCode = 0;
  /** Runs when a call is about to end (before it resolves). */
  beforeEnd: (() => void) | undefined;

  readonly action = async (deadline: number, notice: { id: string }): Promise<number> => {
    const call: FinalizeCall = { deadline, noticeId: notice.id, startedAt: Date.now() };
    this.calls.push(call);
    if (this.durationMs > 0) await new Promise((r) => setTimeout(r, this.durationMs));
    this.beforeEnd?.();
    call.endedAt = Date.now();
    return this.exitCode;
  };
}

/** Polls `probe` every 10 ms until it is true; throws after `timeoutMs`. */
export async function until(what: string, probe: () => boolean, timeoutMs = 5_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!probe()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** `ms` of waiting. */
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Runs a {@link Watcher} of `source` with test timings (50 ms polls, 200 ms backoff) and
 * `fin` as its finalize action; every status it writes is kept in `statuses`. `stop()` ends it.
 */
export function runWatcher(source: NoticeSource, fin: RecordingFinalize, extra: Partial<WatchOptions> = {}) {
  const statuses: WatcherStatus[] = [];
  const w = new Watcher({
    source,
    finalize: fin.action,
    intervalMs: 50,
    marginSeconds: 5,
    onRebalance: "log",
    rebalanceDeadlineSeconds: 100,
    maxBackoffMs: 200,
    onPoll: (s) => statuses.push(s),
    ...extra,
  });
  const running = w.run();
  return {
    w,
    statuses,
    async stop() {
      w.stop();
      await running;
    },
  };
}
