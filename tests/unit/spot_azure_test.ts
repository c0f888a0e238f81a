/**
 * The watcher against a local Azure Scheduled Events server with an injected finalize
 * action: only this VM's Preempt events count; finalize runs once with NotBefore minus the
 * margin; the acknowledgement is sent only after finalize ended, retried when it fails;
 * 500s are reported and retried.
 */

import { deepEqual, equal, ok } from "node:assert/strict";
import { AzureSource } from "../../src/spot/azure.ts";
import type { WatchOptions } from "../../src/spot/loop.ts";
import { AzureImds, RecordingFinalize, runWatcher, sleep, until } from "../harness/metadata_servers.ts";

function watcher(imds: AzureImds, fin: RecordingFinalize, extra: Partial<WatchOptions> = {}) {
  return runWatcher(new AzureSource({ endpoint: imds.url, requestTimeoutMs: 300 }), fin, extra);
}

const rfc1123In = (s: number) => new Date(Date.now() + s * 1000).toUTCString();

Deno.test("azure: no events: polls with Metadata: true, finalize never runs, nothing acknowledged", async () => {
  await using imds = new AzureImds();
  const fin = new RecordingFinalize();
  const { w, statuses, stop } = watcher(imds, fin);
  await until("polls", () => statuses.length >= 4);
  await stop();
  equal(fin.calls.length, 0);
  equal(imds.acks.length, 0);
  ok(imds.requests.every((r) => r.headers["metadata"] === "true"));
  ok(imds.seen("/metadata/scheduledevents?api-version=2020-07-01", "GET").length >= 4);
  equal(imds.seen("/metadata/instance/compute/name").length, 1, "the VM name is read once");
  deepEqual([w.status.notice, w.status.lastError, w.status.provider], [null, null, "azure"]);
});

Deno.test("azure: this VM's Preempt runs finalize once, then is acknowledged (not before)", async () => {
  await using imds = new AzureImds("vm-a");
  const fin = new RecordingFinalize();
  fin.durationMs = 300;
  let acksDuringFinalize = -1;
  fin.beforeEnd = () => (acksDuringFinalize = imds.acks.length);
  const { w, stop } = watcher(imds, fin);
  await until("polls", () => imds.seen("/metadata/scheduledevents").length >= 2);
  imds.addEvent({ EventId: "EV-1", NotBefore: rfc1123In(30) });
  await until("acknowledged", () => imds.acks.length === 1);
  await sleep(200);
  await stop();
  equal(fin.calls.length, 1);
  const d = fin.calls[0]!.deadline;
  ok(d > 23 && d <= 25, `deadline ${d} ≈ 30 - 5 (NotBefore has whole seconds)`);
  equal(acksDuringFinalize, 0, "no acknowledgement while finalize ran");
  ok(imds.acks[0]!.at >= fin.calls[0]!.endedAt!, "acknowledged after finalize ended");
  equal(imds.acks[0]!.eventId, "EV-1");
  const post = imds.seen("/metadata/scheduledevents", "POST")[0]!;
  deepEqual(JSON.parse(post.body), { StartRequests: [{ EventId: "EV-1" }] });
  equal(w.status.notice?.id, "azure:EV-1");
});

Deno.test("azure: another VM's Preempt and this VM's Reboot neither finalize nor get acknowledged", async () => {
  await using imds = new AzureImds("vm-a");
  imds.addEvent({ EventId: "OTHER", Resources: ["vm-b"] });
  imds.addEvent({ EventId: "REBOOT", EventType: "Reboot" });
  const fin = new RecordingFinalize();
  const { statuses, stop } = watcher(imds, fin);
  await until("polls", () => statuses.length >= 5);
  await stop();
  equal(fin.calls.length, 0);
  equal(imds.acks.length, 0);
});

Deno.test("azure: a Preempt already started (blank NotBefore) gets the 10 s floor", async () => {
  await using imds = new AzureImds();
  imds.addEvent({ EventId: "EV-2", NotBefore: "", EventStatus: "Started" });
  const fin = new RecordingFinalize();
  const { stop } = watcher(imds, fin);
  await until("acknowledged", () => imds.acks.length === 1);
  await stop();
  deepEqual(fin.calls.map((c) => c.deadline), [10]);
});

Deno.test("azure: a failed acknowledgement is retried on the next poll, finalize is not run again", async () => {
  await using imds = new AzureImds();
  const fin = new RecordingFinalize();
  fin.beforeEnd = () => (imds.failNext = 1); // the POST right after finalize gets a 500
  imds.addEvent({ EventId: "EV-3" });
  const lines: string[] = [];
  const { stop } = watcher(imds, fin, { say: (l) => lines.push(l) });
  await until("acknowledged", () => imds.acks.length === 1);
  await stop();
  equal(imds.seen("/metadata/scheduledevents", "POST").length, 2);
  equal(fin.calls.length, 1);
  ok(lines.some((l) => l.includes("acknowledging azure:EV-3 failed, retrying")), lines.join("\n"));
});

Deno.test("azure: 500s and slow answers are reported; the loop goes on and sees the event", async () => {
  await using imds = new AzureImds();
  const fin = new RecordingFinalize();
  const { statuses, stop } = watcher(imds, fin);
  await until("polls", () => statuses.length >= 1);
  imds.failNext = 2;
  await until("a 500", () => statuses.some((s) => s.lastError?.includes("HTTP 500") === true));
  imds.delayMs = 1_000;
  await until("a timeout", () => statuses.some((s) => s.lastError?.includes("no answer within") === true));
  imds.delayMs = 0;
  imds.addEvent({ EventId: "EV-4" });
  await until("acknowledged", () => imds.acks.length === 1, 8_000);
  await stop();
  equal(fin.calls.length, 1);
});

Deno.test("azure: an EventId with control characters is escaped in say lines, acknowledged as given", async () => {
  await using imds = new AzureImds("vm-a");
  const raw = "EV\r\n\x1b[31mX";
  imds.addEvent({ EventId: raw, NotBefore: rfc1123In(30) });
  const fin = new RecordingFinalize();
  const lines: string[] = [];
  const { w, stop } = watcher(imds, fin, { say: (l) => lines.push(l) });
  await until("acknowledged", () => imds.acks.length === 1);
  await stop();
  equal(fin.calls.length, 1);
  equal(w.status.notice?.id, "azure:EV\\x0d\\x0a\\x1b[31mX");
  ok(lines.some((l) => l.includes("preempt notice azure:EV\\x0d\\x0a\\x1b[31mX")), JSON.stringify(lines));
  // deno-lint-ignore no-control-regex
  ok(lines.every((l) => !/[\x00-\x1f]/.test(l)), JSON.stringify(lines));
  equal(imds.acks[0]!.eventId, raw, "Azure gets its own id back");
});

Deno.test("azure: a NotBefore a year ahead is capped at 15 minutes", async () => {
  await using imds = new AzureImds("vm-a");
  imds.addEvent({ EventId: "FAR", NotBefore: rfc1123In(365 * 86_400) });
  const fin = new RecordingFinalize();
  const { stop } = watcher(imds, fin);
  await until("finalize", () => fin.calls.length === 1);
  await stop();
  equal(fin.calls[0]!.deadline, 895, "900 s - 5 s margin");
});
