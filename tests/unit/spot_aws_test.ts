/**
 * The watcher against a local AWS IMDSv2 server (tests/harness/metadata_servers.ts) with an
 * injected finalize action: no notice, a notice (once, right deadline), token reuse, expiry
 * and renewal, 500s and slow answers, rebalance policy, a later notice, restarts.
 */

import { deepEqual, equal, ok } from "node:assert/strict";
import { AwsSource } from "../../src/spot/aws.ts";
import { handledFromStatus, Watcher, type WatchOptions } from "../../src/spot/loop.ts";
import type { WatchStatus } from "../../src/spot/status.ts";
import { AwsImds, RecordingFinalize, runWatcher, sleep, until } from "../harness/metadata_servers.ts";

function watcher(imds: AwsImds, fin: RecordingFinalize, extra: Partial<WatchOptions> = {}, timeoutMs = 300) {
  return runWatcher(new AwsSource({ endpoint: imds.url, requestTimeoutMs: timeoutMs }), fin, extra);
}

const inSeconds = (s: number) => new Date(Date.now() + s * 1000).toISOString();

Deno.test("aws: no notice: polls every interval, finalize never runs", async () => {
  await using imds = new AwsImds();
  const fin = new RecordingFinalize();
  const { w, statuses, stop } = watcher(imds, fin);
  await until("6 polls", () => statuses.length >= 6);
  await stop();
  equal(fin.calls.length, 0);
  deepEqual([w.status.notice, w.status.lastError, w.status.provider], [null, null, "aws"]);
  ok(imds.seen("/latest/meta-data/spot/instance-action").length >= 6);
  ok(imds.seen("/latest/meta-data/events/recommendations/rebalance").length >= 6);
  equal(imds.seen("/latest/api/token", "PUT").length, 1, "one token for every poll");
});

Deno.test("aws: a spot notice runs finalize once with the notice time minus the margin", async () => {
  await using imds = new AwsImds();
  const fin = new RecordingFinalize();
  const { w, statuses, stop } = watcher(imds, fin);
  await until("a poll", () => statuses.length >= 2);
  imds.instanceAction = { action: "terminate", time: inSeconds(120) };
  await until("finalize", () => fin.calls.length === 1);
  const after = statuses.length;
  await until("more polls with the notice still served", () => statuses.length >= after + 5);
  await stop();
  equal(fin.calls.length, 1, "never twice for the same notice");
  const d = fin.calls[0]!.deadline;
  ok(d > 114 && d <= 115, `deadline ${d} ≈ 120 - 5`);
  equal(w.status.notice?.kind, "terminate");
  equal(w.status.notice?.action, "finalize");
  equal(w.status.notice?.deadlineSeconds, d);
  equal(w.status.finalize?.exitCode, 0);
  ok(w.status.finalize!.endedAt! >= w.status.finalize!.startedAt);
});

Deno.test("aws: a notice already past, or too close, gets the 10 s floor", async () => {
  await using imds = new AwsImds();
  imds.instanceAction = { action: "stop", time: inSeconds(-30) };
  const fin = new RecordingFinalize();
  const { stop } = watcher(imds, fin);
  await until("finalize", () => fin.calls.length === 1);
  await stop();
  equal(fin.calls[0]!.deadline, 10);
});

Deno.test("aws: a later, different notice runs finalize again", async () => {
  await using imds = new AwsImds();
  const fin = new RecordingFinalize();
  imds.instanceAction = { action: "stop", time: inSeconds(60) };
  const { statuses, stop } = watcher(imds, fin);
  await until("first finalize", () => fin.calls.length === 1);
  imds.instanceAction = null;
  const n = statuses.length;
  await until("polls without a notice", () => statuses.length >= n + 2);
  imds.instanceAction = { action: "terminate", time: inSeconds(90) };
  await until("second finalize", () => fin.calls.length === 2);
  await sleep(200);
  await stop();
  equal(fin.calls.length, 2);
  ok(fin.calls[1]!.deadline > 84 && fin.calls[1]!.deadline <= 85, String(fin.calls[1]!.deadline));
});

Deno.test("aws: an expired token (401) is replaced and the poll still succeeds", async () => {
  await using imds = new AwsImds();
  const fin = new RecordingFinalize();
  const { w, statuses, stop } = watcher(imds, fin);
  await until("polls", () => statuses.length >= 2);
  imds.expireTokens();
  const n = statuses.length;
  await until("polls after the expiry", () => statuses.length >= n + 3);
  imds.instanceAction = { action: "terminate", time: inSeconds(120) };
  await until("finalize", () => fin.calls.length === 1);
  await stop();
  ok(imds.seen("/latest/api/token", "PUT").length >= 2, "a new token was fetched");
  ok(statuses.every((s) => s.lastError === null), "a 401 is not an error of the watcher");
  equal(w.status.lastError, null);
});

Deno.test("aws: the token is renewed before its TTL ends", async () => {
  await using imds = new AwsImds();
  const fin = new RecordingFinalize();
  const statuses: WatchStatus[] = [];
  const w = new Watcher({
    source: new AwsSource({ endpoint: imds.url, tokenTtlSeconds: 2 }),
    finalize: fin.action,
    intervalMs: 50,
    marginSeconds: 5,
    onRebalance: "log",
    rebalanceDeadlineSeconds: 100,
    onPoll: (s) => statuses.push(s),
  });
  const running = w.run();
  await sleep(2_600);
  w.stop();
  await running;
  const puts = imds.seen("/latest/api/token", "PUT");
  ok(puts.length >= 2, `${puts.length} tokens`);
  ok(puts.every((p) => p.headers["x-aws-ec2-metadata-token-ttl-seconds"] === "2"));
  ok(statuses.every((s) => s.lastError === null), "no GET ever used an expired token");
});

Deno.test("aws: 500s are reported in the status, retried with backoff, and the loop goes on", async () => {
  await using imds = new AwsImds();
  const fin = new RecordingFinalize();
  imds.failNext = 4;
  const { w, statuses, stop } = watcher(imds, fin);
  await until("a failed poll", () => statuses.some((s) => s.lastError !== null));
  ok(statuses.find((s) => s.lastError !== null)!.lastError!.includes("HTTP 500"));
  await until("recovery", () => statuses.length > 0 && statuses.at(-1)!.lastError === null);
  imds.instanceAction = { action: "terminate", time: inSeconds(120) };
  await until("finalize after the errors", () => fin.calls.length === 1);
  await stop();
  equal(w.status.lastError, null);
});

Deno.test("aws: a slow metadata server times out each poll within its budget; the loop goes on", async () => {
  await using imds = new AwsImds();
  const fin = new RecordingFinalize();
  imds.delayMs = 1_000;
  const { statuses, stop } = watcher(imds, fin, {}, 150);
  const started = Date.now();
  await until("two timed-out polls", () => statuses.filter((s) => s.lastError !== null).length >= 2);
  ok(Date.now() - started < 1_000, "two polls ended before one slow answer would have");
  ok(statuses[0]!.lastError!.includes("no answer within"), statuses[0]!.lastError!);
  imds.delayMs = 0;
  imds.instanceAction = { action: "terminate", time: inSeconds(120) };
  await until("finalize once the server answers", () => fin.calls.length === 1, 8_000);
  await stop();
});

Deno.test("aws: a rebalance recommendation is logged by default, finalized with --on-rebalance finalize", async (t) => {
  await t.step("log", async () => {
    await using imds = new AwsImds();
    imds.rebalance = { noticeTime: new Date().toISOString() };
    const fin = new RecordingFinalize();
    const lines: string[] = [];
    const { w, statuses, stop } = watcher(imds, fin, { say: (l) => lines.push(l) });
    await until("polls", () => statuses.length >= 4);
    await stop();
    equal(fin.calls.length, 0);
    equal(w.status.notice?.kind, "rebalance");
    equal(w.status.notice?.action, "log");
    equal(lines.filter((l) => l.includes("rebalance recommendation")).length, 1, "logged once");
  });
  await t.step("finalize", async () => {
    await using imds = new AwsImds();
    imds.rebalance = { noticeTime: new Date().toISOString() };
    const fin = new RecordingFinalize();
    const { statuses, stop } = watcher(imds, fin, { onRebalance: "finalize" });
    await until("polls", () => statuses.length >= 4);
    await stop();
    deepEqual(fin.calls.map((c) => c.deadline), [100], "the host's finalize deadline: a rebalance has no time");
  });
});

Deno.test("aws: a restarted watcher does not finalize a notice an earlier run finalized", async () => {
  await using imds = new AwsImds();
  imds.instanceAction = { action: "terminate", time: inSeconds(120) };
  const fin = new RecordingFinalize();
  const first = watcher(imds, fin);
  await until("finalize", () => fin.calls.length === 1 && first.w.status.finalize?.endedAt != null);
  await first.stop();
  const second = watcher(imds, fin, {
    handled: handledFromStatus(first.w.status),
    previous: first.w.status,
  });
  await until("polls", () => second.statuses.length >= 4);
  await second.stop();
  equal(fin.calls.length, 1);
  equal(second.w.status.finalize?.exitCode, 0, "the earlier finalize is still reported");
});

Deno.test("aws: malformed answers are errors, never notices", async () => {
  const { parseInstanceAction, parseRebalance } = await import("../../src/spot/aws.ts");
  for (const bad of [null, {}, { action: "reboot", time: "2026-01-01T00:00:00Z" }, { action: "stop", time: "x" }]) {
    let threw = false;
    try {
      parseInstanceAction(bad);
    } catch {
      threw = true;
    }
    ok(threw, JSON.stringify(bad));
  }
  let threw = false;
  try {
    parseRebalance({ noticeTime: 3 });
  } catch {
    threw = true;
  }
  ok(threw);
});

Deno.test("aws: stop() during finalize lets it end (and records it) before the loop returns", async () => {
  await using imds = new AwsImds();
  imds.instanceAction = { action: "terminate", time: inSeconds(120) };
  const fin = new RecordingFinalize();
  fin.durationMs = 300;
  const { w, stop } = watcher(imds, fin);
  await until("finalize started", () => fin.calls.length === 1);
  await stop();
  ok(fin.calls[0]!.endedAt !== undefined, "finalize ran to its end");
  equal(w.status.finalize?.exitCode, 0);
});

Deno.test("aws: a notice 30 days ahead gets a deadline capped by AWS's 2 minutes", async () => {
  await using imds = new AwsImds();
  imds.instanceAction = { action: "terminate", time: inSeconds(30 * 86_400) };
  const fin = new RecordingFinalize();
  fin.durationMs = 200;
  const { w, stop } = watcher(imds, fin);
  await until("finalize ended", () => w.status.finalize?.endedAt != null);
  await stop();
  deepEqual(fin.calls.map((c) => c.deadline), [115], "min(notice, 120 s) - 5 s margin");
  equal(w.status.notice?.deadlineSeconds, 115);
  ok(fin.calls[0]!.endedAt! - fin.calls[0]!.startedAt >= 190, "finalize ran its full time");
  equal(w.status.finalize?.exitCode, 0);
});

Deno.test("aws: a failing rebalance endpoint (500) does not hide a spot notice nor slow the polls", async () => {
  await using imds = new AwsImds();
  imds.rebalanceFault = { status: 500 };
  imds.instanceAction = { action: "terminate", time: inSeconds(120) };
  const fin = new RecordingFinalize();
  const { w, statuses, stop } = watcher(imds, fin);
  await until("finalize", () => fin.calls.length === 1 && w.status.finalize?.endedAt != null);
  const n = statuses.length;
  await sleep(800);
  const polls = statuses.length - n;
  await stop();
  ok(polls >= 7, `${polls} polls in 800 ms: the normal 50 ms pace, no backoff (at most 5)`);
  equal(fin.calls.length, 1, "once");
  equal(w.status.notice?.kind, "terminate");
  ok(w.status.lastError?.includes("rebalance answered HTTP 500"), String(w.status.lastError));
});

Deno.test("aws: a slow rebalance endpoint does not hide a spot notice", async () => {
  await using imds = new AwsImds();
  imds.rebalanceFault = { delayMs: 2_000 };
  imds.instanceAction = { action: "stop", time: inSeconds(60) };
  const fin = new RecordingFinalize();
  const { w, stop } = watcher(imds, fin, {}, 150);
  await until("finalize", () => fin.calls.length === 1 && w.status.finalize?.endedAt != null);
  await stop();
  ok(fin.calls[0]!.deadline > 54 && fin.calls[0]!.deadline <= 55, String(fin.calls[0]!.deadline));
  ok(w.status.lastError?.includes("no answer within"), String(w.status.lastError));
});

Deno.test("aws: a token with CR/LF is refused (never sent); a good token afterwards works", async () => {
  await using imds = new AwsImds();
  imds.tokenOverride = "AQAEAbc\r\nX-Injected: 1";
  imds.instanceAction = { action: "terminate", time: inSeconds(120) };
  const fin = new RecordingFinalize();
  const lines: string[] = [];
  const { w, statuses, stop } = watcher(imds, fin, { say: (l) => lines.push(l) });
  await until("two failed polls", () => statuses.filter((s) => s.lastError !== null).length >= 2);
  ok(statuses[0]!.lastError!.includes("answered a token that is not 1..1024 printable ASCII"), statuses[0]!.lastError!);
  equal(imds.seen("/latest/meta-data/").length, 0, "no GET carried the bad token");
  equal(fin.calls.length, 0);
  ok(imds.seen("/latest/api/token", "PUT").length >= 2, "the bad token was not cached");
  imds.tokenOverride = null;
  await until("finalize with a good token", () => fin.calls.length === 1);
  await stop();
  equal(w.status.lastError, null);
  // deno-lint-ignore no-control-regex
  ok(lines.every((l) => !/[\x00-\x1f]/.test(l)), JSON.stringify(lines));
});

Deno.test("aws: a GET without an HTTP answer drops the token: the next poll asks for a new one", async () => {
  await using imds = new AwsImds();
  const fin = new RecordingFinalize();
  const { statuses, stop } = watcher(imds, fin, {}, 150);
  await until("a poll", () => statuses.length >= 1 && statuses[0]!.lastError === null);
  equal(imds.seen("/latest/api/token", "PUT").length, 1);
  imds.rebalanceFault = { delayMs: 1_000 }; // the token is fine, one GET times out
  await until("a timed-out poll", () => statuses.some((s) => s.lastError !== null));
  imds.rebalanceFault = null;
  const n = statuses.length;
  await until("polls succeed again", () => statuses.length > n && statuses.at(-1)!.lastError === null, 5_000);
  await stop();
  ok(imds.seen("/latest/api/token", "PUT").length >= 2, "a new token after the timeout");
});

Deno.test("aws: control characters from the server never reach say lines", async () => {
  await using imds = new AwsImds();
  imds.errorBody = "boom\r\nfake line\x1b[2J\u202e";
  imds.failNext = 1;
  const fin = new RecordingFinalize();
  const lines: string[] = [];
  const { statuses, stop } = watcher(imds, fin, { say: (l) => lines.push(l) });
  await until(
    "a failed poll, then a good one",
    () => statuses.some((s) => s.lastError !== null) && statuses.at(-1)!.lastError === null,
  );
  await stop();
  const failed = lines.find((l) => l.startsWith("poll failed"))!;
  ok(failed.includes("boom\\x0d\\x0afake line\\x1b[2J\\u202e"), failed);
  // deno-lint-ignore no-control-regex
  ok(lines.every((l) => !/[\x00-\x1f\x7f-\x9f\u202e]/.test(l)), JSON.stringify(lines));
});

Deno.test("aws: a restarted watcher does not finalize again after a later logged rebalance", async () => {
  await using imds = new AwsImds();
  imds.instanceAction = { action: "terminate", time: inSeconds(120) };
  const fin = new RecordingFinalize();
  const first = watcher(imds, fin);
  await until("finalize", () => fin.calls.length === 1 && first.w.status.finalize?.endedAt != null);
  imds.rebalance = { noticeTime: new Date().toISOString() };
  await until("the rebalance logged", () => first.w.status.notice?.kind === "rebalance");
  await first.stop();
  equal(first.w.status.notice?.action, "log", "the latest notice is the logged rebalance");
  deepEqual(first.w.status.finalized, [fin.calls[0]!.noticeId]);
  // What `arch watch` does on start: seed from the status file.
  const saved = JSON.parse(JSON.stringify(first.w.status));
  const second = watcher(imds, fin, { handled: handledFromStatus(saved), previous: saved });
  await until("polls", () => second.statuses.length >= 4);
  await second.stop();
  equal(fin.calls.length, 1, "the old notice is not finalized again");
  deepEqual(second.w.status.finalized, [fin.calls[0]!.noticeId], "and is still remembered");
});

Deno.test("aws: the status keeps the last 32 finalized notice ids", async () => {
  await using imds = new AwsImds();
  const fin = new RecordingFinalize();
  const old = Array.from({ length: 40 }, (_, i) => `aws:instance-action:stop:old-${i}`);
  const previous = { notice: null, finalize: null, finalized: old };
  imds.instanceAction = { action: "terminate", time: inSeconds(120) };
  const { w, stop } = watcher(imds, fin, { handled: handledFromStatus(previous as never), previous });
  await until("finalize", () => w.status.finalize?.endedAt != null);
  await stop();
  const kept = w.status.finalized!;
  equal(kept.length, 32);
  equal(kept.at(-1), fin.calls[0]!.noticeId);
  deepEqual(kept.slice(0, 31), old.slice(-31));
});
