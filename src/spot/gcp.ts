/**
 * GCP preemption notices: `GET /computeMetadata/v1/instance/preempted` with
 * `Metadata-Flavor: Google`. The first poll reads the value and its ETag at once; later polls
 * are hanging GETs (`wait_for_change=true&last_etag=<etag>&timeout_sec=<n>`) that return when
 * the value changes or after `n` seconds, so no change is missed across reconnects. An answer
 * without the `Metadata-Flavor: Google` header, or whose body is not `TRUE`/`FALSE`, is an
 * error (and the next poll reads at once again). GCP gives 30 s from the notice: the notice
 * time is when the watcher first saw `TRUE` plus 30 s.
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

/** Where the GCP metadata server answers. */
export const GCP_DEFAULT_ENDPOINT = "http://metadata.google.internal";

/** Seconds between GCP's preemption notice and the stop. */
export const GCP_NOTICE_SECONDS = 30;

/** Options of {@link GcpSource}. */
export interface GcpOptions {
  readonly endpoint?: string;
  /** `timeout_sec` of the hanging GET. */
  readonly waitSeconds?: number;
  /** Extra time the client allows beyond `timeout_sec`, milliseconds. */
  readonly graceMs?: number;
}

/** GCP's notice protocol (see the module doc). */
export class GcpSource implements NoticeSource {
  readonly provider = "gcp";
  readonly hanging = true;
  readonly maxNoticeSeconds = MAX_NOTICE_SECONDS.gcp;
  readonly endpoint: string;
  readonly pollBudgetMs: number;
  readonly #wait: number;
  #etag: string | undefined;
  #fresh = true;
  #preempted = false;
  #count = 0;
  #notice: Notice | undefined;

  constructor(options: GcpOptions = {}) {
    this.endpoint = (options.endpoint ?? GCP_DEFAULT_ENDPOINT).replace(/\/+$/, "");
    this.#wait = options.waitSeconds ?? 15;
    this.pollBudgetMs = this.#wait * 1000 + (options.graceMs ?? 5_000);
  }

  /** One poll: the first reads at once, the next ones wait for a change (up to `timeout_sec`). */
  async poll(ctx: PollContext): Promise<Observation> {
    const base = `${this.endpoint}/computeMetadata/v1/instance/preempted`;
    // After a first (or failed) read: wait for a change, from the ETag last seen when there is one.
    const etag = this.#etag === undefined ? "" : `&last_etag=${encodeURIComponent(this.#etag)}`;
    const url = this.#fresh ? base : `${base}?wait_for_change=true${etag}&timeout_sec=${this.#wait}`;
    const r = await httpRequest({
      url,
      headers: { "Metadata-Flavor": "Google" },
      timeoutMs: remaining(ctx, this.pollBudgetMs),
      signal: ctx.signal,
    });
    if (r.status !== 200) {
      this.#fresh = true; // read at once after a failure
      throw new UnexpectedStatusError(`GET ${url}`, r.status, r.body);
    }
    if (r.headers["metadata-flavor"] !== "Google") {
      this.#fresh = true;
      throw new Error(`GET ${url} answered without "Metadata-Flavor: Google": not a GCP metadata server`);
    }
    const value = r.body.trim();
    if (value !== "TRUE" && value !== "FALSE") {
      this.#fresh = true;
      throw new Error(`GET ${url} answered "${printable(value.slice(0, 100))}" instead of TRUE or FALSE`);
    }
    this.#etag = r.headers["etag"];
    this.#fresh = false;
    const preempted = value === "TRUE";
    if (preempted && !this.#preempted) {
      this.#count++;
      const seen = new Date();
      this.#notice = {
        id: `gcp:preempted:${this.#count}`,
        kind: "preempt",
        time: new Date(seen.getTime() + GCP_NOTICE_SECONDS * 1000).toISOString(),
        detail: { preempted: value, seenAt: seen.toISOString() },
      };
    }
    this.#preempted = preempted;
    return { notices: preempted && this.#notice !== undefined ? [this.#notice] : [] };
  }
}
