/**
 * AWS spot notices over IMDSv2: a session token (`PUT /latest/api/token`, renewed before its
 * TTL ends and again on a 401), then on every poll `GET /latest/meta-data/spot/instance-action`
 * (404: no notice; 200: `{"action":"terminate|stop|hibernate","time":"...Z"}`) and
 * `GET /latest/meta-data/events/recommendations/rebalance` (404: none; 200:
 * `{"noticeTime":"...Z"}`), both in parallel and bounded by the poll's deadline.
 * A malformed answer is an error, never a notice.
 */

import { httpRequest, UnexpectedStatusError } from "./http.ts";
import { type Notice, type NoticeSource, type Observation, type PollContext, remaining } from "./notice.ts";

/** Where the AWS instance metadata service answers. */
export const AWS_DEFAULT_ENDPOINT = "http://169.254.169.254";

/** Options of {@link AwsSource}. */
export interface AwsOptions {
  readonly endpoint?: string;
  /** Token lifetime asked for, seconds (IMDS allows 1..21600). */
  readonly tokenTtlSeconds?: number;
  /** Bound of each request, milliseconds. */
  readonly requestTimeoutMs?: number;
}

const ACTIONS = new Set(["terminate", "stop", "hibernate"]);

/** AWS's notice protocol (see the module doc). */
export class AwsSource implements NoticeSource {
  readonly provider = "aws";
  readonly hanging = false;
  readonly endpoint: string;
  readonly pollBudgetMs: number;
  readonly #ttl: number;
  #token: { value: string; renewAt: number } | undefined;

  constructor(options: AwsOptions = {}) {
    this.endpoint = (options.endpoint ?? AWS_DEFAULT_ENDPOINT).replace(/\/+$/, "");
    this.#ttl = options.tokenTtlSeconds ?? 21600;
    this.pollBudgetMs = options.requestTimeoutMs ?? 2_000;
  }

  /** Drops the session token (the next poll asks for a new one). */
  forgetToken(): void {
    this.#token = undefined;
  }

  async #tokenValue(ctx: PollContext): Promise<string> {
    if (this.#token !== undefined && Date.now() < this.#token.renewAt) return this.#token.value;
    const url = `${this.endpoint}/latest/api/token`;
    const r = await httpRequest({
      method: "PUT",
      url,
      headers: { "X-aws-ec2-metadata-token-ttl-seconds": String(this.#ttl) },
      timeoutMs: remaining(ctx, this.pollBudgetMs),
      signal: ctx.signal,
    });
    if (r.status !== 200 || r.body.trim() === "") throw new UnexpectedStatusError(`PUT ${url}`, r.status, r.body);
    // Renew at 90% of the TTL (at least 1 s before it ends).
    const renewIn = Math.max(this.#ttl * 1000 * 0.9, this.#ttl * 1000 - 60_000, 1_000);
    this.#token = { value: r.body.trim(), renewAt: Date.now() + Math.min(renewIn, this.#ttl * 1000 - 1_000) };
    return this.#token.value;
  }

  /** GETs a metadata path with the token; `undefined` on 404. A 401 renews the token once. */
  async #get(path: string, ctx: PollContext): Promise<unknown> {
    const url = `${this.endpoint}${path}`;
    for (let attempt = 0;; attempt++) {
      const token = await this.#tokenValue(ctx);
      const r = await httpRequest({
        url,
        headers: { "X-aws-ec2-metadata-token": token },
        timeoutMs: remaining(ctx, this.pollBudgetMs),
        signal: ctx.signal,
      });
      if (r.status === 401 && attempt === 0) {
        if (this.#token?.value === token) this.#token = undefined;
        continue;
      }
      if (r.status === 404) return undefined;
      if (r.status !== 200) throw new UnexpectedStatusError(`GET ${url}`, r.status, r.body);
      try {
        return JSON.parse(r.body);
      } catch {
        throw new Error(`GET ${url} answered something that is not JSON: ${r.body.slice(0, 200)}`);
      }
    }
  }

  /** One poll: the current instance action and rebalance recommendation, if any. */
  async poll(ctx: PollContext): Promise<Observation> {
    await this.#tokenValue(ctx); // once, before the parallel requests
    const [action, rebalance] = await Promise.all([
      this.#get("/latest/meta-data/spot/instance-action", ctx),
      this.#get("/latest/meta-data/events/recommendations/rebalance", ctx),
    ]);
    const notices: Notice[] = [];
    if (rebalance !== undefined) notices.push(parseRebalance(rebalance));
    if (action !== undefined) notices.push(parseInstanceAction(action));
    return { notices };
  }
}

function isoOrThrow(value: unknown, what: string): string {
  if (typeof value !== "string" || !Number.isFinite(Date.parse(value))) {
    throw new Error(`${what} has no valid time: ${JSON.stringify(value)}`);
  }
  return new Date(Date.parse(value)).toISOString();
}

/**
 * Turns an `instance-action` answer into a notice; throws on a malformed one.
 *
 * @example
 * ```ts
 * import { parseInstanceAction } from "./aws.ts";
 * const n = parseInstanceAction({ action: "terminate", time: "2026-01-01T00:02:00Z" });
 * if (n.kind !== "terminate" || n.time !== "2026-01-01T00:02:00.000Z") throw new Error();
 * ```
 */
export function parseInstanceAction(raw: unknown): Notice {
  const o = (raw ?? {}) as { action?: unknown; time?: unknown };
  if (typeof o.action !== "string" || !ACTIONS.has(o.action)) {
    throw new Error(`spot/instance-action has an unknown action: ${JSON.stringify(raw).slice(0, 200)}`);
  }
  const time = isoOrThrow(o.time, "spot/instance-action");
  return {
    id: `aws:instance-action:${o.action}:${time}`,
    kind: o.action as "terminate" | "stop" | "hibernate",
    time,
    detail: { action: o.action, time: o.time },
  };
}

/** Turns a rebalance recommendation into a notice (its time is when AWS issued it, not a deadline). */
export function parseRebalance(raw: unknown): Notice {
  const o = (raw ?? {}) as { noticeTime?: unknown };
  const issued = isoOrThrow(o.noticeTime, "events/recommendations/rebalance");
  return { id: `aws:rebalance:${issued}`, kind: "rebalance", time: null, detail: { noticeTime: o.noticeTime } };
}
