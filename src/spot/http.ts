/**
 * The watcher's HTTP client for cloud metadata servers: one request, bounded in time from the
 * first byte sent to the last byte read, over a fresh connection, never through a proxy
 * (`node:http` ignores HTTP_PROXY, which Deno's `fetch` honours even for link-local
 * addresses: a metadata request sent to a proxy would fail or, worse, be answered by it).
 * Bodies are capped at 1 MiB; the time bound is clamped to a safe timer delay. Never throws
 * (or rejects with) anything but {@link MetadataHttpError}, also when the client refuses a
 * header value. Error messages carry at most 200 characters of a body, control characters
 * escaped.
 */

import { ArchError, errorMessage } from "../util/errors.ts";
import http from "node:http";
import { clampTimerMs, printable } from "./notice.ts";

/** One request to a metadata server. */
export interface HttpRequest {
  readonly method?: "GET" | "PUT" | "POST";
  readonly url: string;
  readonly headers?: Readonly<Record<string, string>>;
  readonly body?: string;
  /** The whole exchange must end within this many milliseconds. */
  readonly timeoutMs: number;
  /** Aborts the request (shutdown). */
  readonly signal?: AbortSignal;
}

/** A complete answer; header names are lower case. */
export interface HttpResponse {
  readonly status: number;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: string;
}

/** A request that got no complete answer (refused, reset, timed out, aborted, too large). */
export class MetadataHttpError extends ArchError {
  constructor(message: string, readonly timedOut = false) {
    super(message, timedOut ? "metadata-timeout" : "metadata-unreachable");
  }
}

const MAX_BODY = 1 << 20;

/** Sends one request and reads the whole answer within `timeoutMs`. */
export function httpRequest(req: HttpRequest): Promise<HttpResponse> {
  const method = req.method ?? "GET";
  const what = `${method} ${req.url}`;
  return new Promise<HttpResponse>((resolve, reject) => {
    let url: URL;
    try {
      url = new URL(req.url);
    } catch {
      reject(new MetadataHttpError(`invalid URL "${req.url}"`));
      return;
    }
    if (url.protocol !== "http:") {
      reject(new MetadataHttpError(`metadata URL "${req.url}" must use http://`));
      return;
    }
    if (req.signal?.aborted) {
      reject(new MetadataHttpError(`${what}: aborted`));
      return;
    }
    let done = false;
    const finish = (error: MetadataHttpError | undefined, response?: HttpResponse) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      req.signal?.removeEventListener("abort", onAbort);
      if (error !== undefined) {
        request.destroy();
        reject(error);
      } else resolve(response!);
    };
    const body = req.body === undefined ? undefined : new TextEncoder().encode(req.body);
    let request: http.ClientRequest;
    try {
      request = http.request({
        host: url.hostname.replace(/^\[|\]$/g, ""),
        port: url.port === "" ? 80 : Number(url.port),
        path: `${url.pathname}${url.search}`,
        method,
        agent: false,
        headers: {
          ...req.headers,
          ...(body !== undefined ? { "content-length": String(body.byteLength) } : {}),
        },
      }, (res) => {
        const chunks: Uint8Array[] = [];
        let size = 0;
        res.on("data", (chunk: Uint8Array) => {
          size += chunk.byteLength;
          if (size > MAX_BODY) finish(new MetadataHttpError(`${what}: answer larger than ${MAX_BODY} bytes`));
          else chunks.push(chunk);
        });
        res.on("end", () => {
          const headers: Record<string, string> = {};
          for (const [k, v] of Object.entries(res.headers)) {
            if (v !== undefined) headers[k.toLowerCase()] = Array.isArray(v) ? v.join(", ") : String(v);
          }
          const all = new Uint8Array(size);
          let at = 0;
          for (const c of chunks) {
            all.set(c, at);
            at += c.byteLength;
          }
          finish(undefined, { status: res.statusCode ?? 0, headers, body: new TextDecoder().decode(all) });
        });
        res.on("error", (e: Error) => finish(new MetadataHttpError(`${what}: ${e.message}`)));
      });
    } catch (e) {
      // e.g. a header value with CR/LF: node:http throws before sending anything.
      reject(new MetadataHttpError(`${what}: ${printable(errorMessage(e))}`));
      return;
    }
    const timer = setTimeout(
      () => finish(new MetadataHttpError(`${what}: no answer within ${req.timeoutMs} ms`, true)),
      clampTimerMs(req.timeoutMs),
    );
    const onAbort = () => finish(new MetadataHttpError(`${what}: aborted`));
    req.signal?.addEventListener("abort", onAbort, { once: true });
    request.on("error", (e: Error) => finish(new MetadataHttpError(`${what}: ${e.message}`)));
    if (body !== undefined) request.write(body);
    request.end();
  });
}

/** An HTTP status the server answered that the protocol does not expect. */
export class UnexpectedStatusError extends ArchError {
  constructor(readonly what: string, readonly status: number, body: string) {
    super(
      `${what} answered HTTP ${status}${body.trim() ? `: ${printable(body.trim().slice(0, 200))}` : ""}`,
      "metadata-status",
    );
  }
}
