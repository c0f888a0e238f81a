/**
 * AWS spot notices over IMDSv2: a session token (`PUT /latest/api/token`, renewed before its
 * TTL ends and again on a 401), then on every poll `GET /latest/meta-data/spot/instance-action`
 * (404: no notice; 200: `{"action":"terminate|stop|hibernate","time":"...Z"}`) and
 * `GET /latest/meta-data/events/recommendations/rebalance` (404: none; 200:
 * `{"noticeTime":"...Z"}`), both in parallel, bounded by the poll's deadline and handled
 * independently: a failed or malformed rebalance answer never hides an instance action (the
 * poll reports the notice and the error). A malformed answer is an error, never a notice.
 * A token is used only if it is 1..{@link MAX_TOKEN_LENGTH} printable ASCII characters
 * without spaces; it is dropped (a new one is asked for) after any request that got no
 * HTTP answer.
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

/** The longest IMDSv2 session token accepted, characters (AWS's are about 56). */
export const MAX_TOKEN_LENGTH = 1024;

const TOKEN = /^[\x21-\x7e]+$/;

/** AWS's notice protocol (see the module doc). */
export class AwsSource implements NoticeSource {
  readonly provider = "aws";
  readonly hanging = false;
  readonly maxNoticeSeconds = MAX_NOTICE_SECONDS.aws;
  readonly endpoint: string;
  readonly pollBudgetMs: number;
  readonly #ttl: number;
  #token: { value: string; renewAt: number } | undefined;

  constructor(options: AwsOptions = {}) {
    this.endpoint = (options.endpoint ?? AWS_DEFAULT_ENDPOINT).replace(/\/+$/, "");
    this.#ttl = options.tokenTtlSeconds ?? 21600;
    this.pollBudgetMs = options.requestTimeoutMs ?? 2_000;
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
    const token = r.body.trim();
    if (token.length > MAX_TOKEN_LENGTH || !TOKEN.test(token)) {
      throw new Error(
        `PUT ${url} answered a token that is not 1..${MAX_TOKEN_LENGTH} printable ASCII characters ` +
          `(${token.length} characters: ${JSON.stringify(token.slice(0, 60))}): not an IMDSv2 server?`,
      );
    } // Renew at 90% of the TTL (at least 1 s before it ends).
    const renewIn = Math.max(this.#ttl * 1000 * 0.9, this.#ttl * 1000 - 60_000, 1_000);
    this.#token = { value: token, renewAt: Date.now() + Math.min(renewIn, this.#ttl * 1000 - 1_000) };
    return this.#token.value;
  }

  /** GETs a metadata path with the token; `undefined` on 404. A 401 renews the token once. */
  async #get(path: string, ctx: PollContext): Promise<unknown> {
    const url = `${this.endpoint}${path}`;
    for (let attempt = 0;; attempt++) {
      const token = await this.#tokenValue(ctx);
      let r;
      try {
        r = await httpRequest({
          url,
          headers: { "X-aws-ec2-metadata-token": token },
          timeoutMs: remaining(ctx, this.pollBudgetMs),
          signal: ctx.signal,
        });
      } catch (error) {
        // No HTTP answer (refused, reset, timed out, a header the client refused): the token may
        // be at fault, so the next poll asks for a new one.
        if (this.#token?.value === token) this.#token = undefined;
        throw error;
      }
      if (r.status === 401 && attempt === 0) {
        if (this.#token?.value === token) this.#token = undefined;
        continue;
      }
      if (r.status === 404) return undefined;
      if (r.status !== 200) throw new UnexpectedStatusError(`GET ${url}`, r.status, r.body);
      try {
        return JSON.parse(r.body);
      } catch {
        throw new Error(`GET ${url} answered something that is not JSON: ${printable(r.body.slice(0, 200))}`);
      }
    }
  }

  /**
   * One poll: the current instance action and rebalance recommendation, if any. Each request
   * is handled on its own: one that fails still lets the other's notice through, with the
   * failure in `error`; only a failed token request (or both failing) throws.
   */
  async poll(ctx: PollContext): Promise<Observation> {
    await this.#tokenValue(ctx); // once, before the parallel requests
    const [action, rebalance] = await Promise.allSettled([
      this.#get("/latest/meta-data/spot/instance-action", ctx).then((raw) =>
        raw === undefined ? undefined : parseInstanceAction(raw)
      ),
      this.#get("/latest/meta-data/events/recommendations/rebalance", ctx).then((raw) =>
        raw === undefined ? undefined : parseRebalance(raw)
      ),
    ]);
    const notices: Notice[] = [];
    const errors: string[] = [];
    for (const part of [rebalance, action]) {
      if (part.status === "rejected") errors.push((part.reason as Error).message);
      else if (part.value !== undefined) notices.push(part.value);
    }
    if (errors.length === 2) throw new Error(errors.join("; "));
    return errors.length === 0 ? { notices } : { notices, error: errors[0]! };
  }
}

function isoOrThrow(value: unknown, what: string): string {
  if (typeof value !== "string" || !Number.isFinite(Date.parse(value))) {
    throw new Error(`${what} has no valid time: ${printable(JSON.stringify(value) ?? "undefined").slice(0, 200)}`);
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
    throw new Error(
      `spot/instance-action has an unknown action: ${printable(JSON.stringify(raw) ?? "").slice(0, 200)}`,
    );
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
