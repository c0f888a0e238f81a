/**
 * The watcher against a local GCP metadata server with an injected finalize action: the
 * hanging GET (with ETag) that returns on a change, a preemption (finalize once, 30 s minus
 * the margin), 503s, slow answers, a server that is not GCP's, and no missed change across
 * reconnects.
 */

import { deepEqual, equal, ok } from "node:assert/strict";
import { GcpSource } from "../../src/spot/gcp.ts";
import type { WatchOptions } from "../../src/spot/loop.ts";
import { GcpMetadata, NotACloud, RecordingFinalize, runWatcher, sleep, until } from "../harness/metadata_servers.ts";

function watcher(
  server: { url: string },
  fin: RecordingFinalize,
  source?: GcpSource,
  extra: Partial<WatchOptions> = {},
) {
  return runWatcher(source ?? new GcpSource({ endpoint: server.url, waitSeconds: 2, graceMs: 500 }), fin, extra);
}

const ctx = () => ({ signal: new AbortController().signal, deadline: Date.now() + 5_000 });

Deno.test("gcp: no preemption: one read, then a hanging GET that waits; finalize never runs", async () => {
  await using md = new GcpMetadata();
  const fin = new RecordingFinalize();
  const { w, statuses, stop } = watcher(md, fin);
  await until("a hanging GET", () => md.hanging === 1);
  await sleep(300);
  await stop();
  equal(fin.calls.length, 0);
  equal(statuses.length, 1, "the hanging GET does not return without a change");
  const gets = md.seen("/computeMetadata/v1/instance/preempted");
  equal(gets[0]!.path, "/computeMetadata/v1/instance/preempted", "the first read does not wait");
  ok(gets[1]!.path.includes("wait_for_change=true") && gets[1]!.path.includes(`last_etag=etag-0-f`), gets[1]!.path);
  ok(gets.every((g) => g.headers["metadata-flavor"] === "Google"));
  deepEqual([w.status.notice, w.status.lastError], [null, null]);
});

Deno.test("gcp: a preemption wakes the hanging GET; finalize runs once with 30 s minus the margin", async () => {
  await using md = new GcpMetadata();
  const fin = new RecordingFinalize();
  const { w, statuses, stop } = watcher(md, fin);
  await until("a hanging GET", () => md.hanging === 1);
  const at = Date.now();
  md.setPreempted(true);
  await until("finalize", () => fin.calls.length === 1);
  ok(fin.calls[0]!.startedAt - at < 500, `finalize ${fin.calls[0]!.startedAt - at} ms after the change`);
  const d = fin.calls[0]!.deadline;
  ok(d > 24 && d <= 25, `deadline ${d}`);
  await until("the next hanging GET", () => md.hanging === 1);
  await sleep(200);
  await stop();
  equal(fin.calls.length, 1, "never twice for the same preemption");
  equal(w.status.notice?.kind, "preempt");
  ok(statuses.length <= 3, `${statuses.length} polls: hanging, not busy`);
});

Deno.test("gcp: the hanging GET is bounded by timeout_sec and repeated", async () => {
  await using md = new GcpMetadata();
  const fin = new RecordingFinalize();
  const source = new GcpSource({ endpoint: md.url, waitSeconds: 1, graceMs: 500 });
  const { statuses, stop } = watcher(md, fin, source);
  await until("three polls", () => statuses.length >= 3, 4_000);
  await stop();
  ok(md.seen("/computeMetadata").slice(1).every((r) => r.path.includes("timeout_sec=1")));
  ok(statuses.every((s) => s.lastError === null));
});

Deno.test("gcp: a change between two GETs is not missed (last_etag)", async () => {
  await using md = new GcpMetadata();
  const source = new GcpSource({ endpoint: md.url, waitSeconds: 2 });
  equal((await source.poll(ctx())).notices.length, 0);
  md.setPreempted(true); // nobody is waiting now
  const started = Date.now();
  const obs = await source.poll(ctx());
  ok(Date.now() - started < 500, "answered at once: the ETag changed");
  equal(obs.notices[0]?.kind, "preempt");
});

Deno.test("gcp: 503s are reported and retried; the watcher recovers and still sees the preemption", async () => {
  await using md = new GcpMetadata();
  md.failNext = 3;
  const fin = new RecordingFinalize();
  const { w, statuses, stop } = watcher(md, fin);
  await until("a failed poll", () => statuses.some((s) => s.lastError?.includes("HTTP 503") === true));
  await until("a hanging GET", () => md.hanging === 1);
  md.setPreempted(true);
  await until("finalize", () => fin.calls.length === 1);
  await stop();
  equal(w.status.lastError, null);
});

Deno.test("gcp: a slow server is cut at the poll's budget; the loop goes on", async () => {
  await using md = new GcpMetadata();
  md.delayMs = 3_000;
  const fin = new RecordingFinalize();
  const source = new GcpSource({ endpoint: md.url, waitSeconds: 1, graceMs: 0 });
  const { statuses, stop } = watcher(md, fin, source);
  const started = Date.now();
  await until("two timed-out polls", () => statuses.filter((s) => s.lastError !== null).length >= 2, 4_000);
  ok(Date.now() - started < 3_000);
  ok(statuses[0]!.lastError!.includes("no answer within"));
  await stop();
});

Deno.test("gcp: a TRUE from a server without Metadata-Flavor: Google is an error, not a notice", async () => {
  await using other = new NotACloud();
  other.answer = { status: 200, body: "TRUE" };
  const fin = new RecordingFinalize();
  const { statuses, stop } = watcher(other, fin);
  await until("a failed poll", () => statuses.length >= 1);
  await stop();
  ok(statuses[0]!.lastError!.includes("Metadata-Flavor"), statuses[0]!.lastError!);
  equal(fin.calls.length, 0);
});
