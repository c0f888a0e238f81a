/**
 * The exit watcher's messages and state file: every field validated, damaged input refused
 * or skipped, never trusted; and how it records an exit.
 */

import { deepEqual as assertEquals, ok } from "node:assert/strict";
import {
  encodeReply,
  encodeRequest,
  encodeWatchedState,
  MAX_LINE_BYTES,
  parseReply,
  parseRequest,
  parseWatchedState,
  type WatchedEntry,
  watcherPaths,
  type WatchRequest,
} from "../../src/exitwatch/protocol.ts";
import { recordExit } from "../../src/exitwatch/daemon.ts";
import { Registry } from "../../src/registry/registry.ts";

const request: WatchRequest = {
  wrapperPid: 1234,
  fd: 17,
  namespace: "moby",
  id: "3f2a9c",
  createdAt: "2025-06-01T12:00:00.000Z",
  pid: 4321,
};

Deno.test("parseRequest accepts a well-formed request and round-trips it", () => {
  const parsed = parseRequest(encodeRequest(request).trimEnd());
  assertEquals(parsed, { ok: true, value: request });
});

Deno.test("parseRequest refuses every malformed or hostile request", async (t) => {
  const cases: [string, string][] = [
    ["not JSON", "{"],
    ["an array", "[1,2]"],
    ["null", "null"],
    ["a missing field", JSON.stringify({ ...request, pid: undefined })],
    ["an extra field", JSON.stringify({ ...request, path: "/etc/shadow" })],
    ["a namespace that climbs", JSON.stringify({ ...request, namespace: ".." })],
    ["an id with a slash", JSON.stringify({ ...request, id: "a/b" })],
    ["an id with NUL", JSON.stringify({ ...request, id: "a\u0000b" })],
    ["an empty id", JSON.stringify({ ...request, id: "" })],
    ["a pid as a string", JSON.stringify({ ...request, pid: "4321" })],
    ["pid 0", JSON.stringify({ ...request, pid: 0 })],
    ["a negative pid", JSON.stringify({ ...request, pid: -1 })],
    ["a pid beyond PID_MAX_LIMIT", JSON.stringify({ ...request, pid: 4_194_305 })],
    ["a fractional fd", JSON.stringify({ ...request, fd: 1.5 })],
    ["a negative fd", JSON.stringify({ ...request, fd: -3 })],
    ["a huge wrapper pid", JSON.stringify({ ...request, wrapperPid: 2 ** 60 })],
    ["createdAt with a space", JSON.stringify({ ...request, createdAt: "2025 01 01" })],
    ["createdAt of 65 characters", JSON.stringify({ ...request, createdAt: "1".repeat(65) })],
    ["a line too long", JSON.stringify({ ...request, id: "x".repeat(MAX_LINE_BYTES) })],
  ];
  for (const [name, line] of cases) {
    await t.step(name, () => ok(!parseRequest(line).ok, line.slice(0, 80)));
  }
});

Deno.test("parseReply accepts only the two reply shapes", () => {
  assertEquals(parseReply(encodeReply({ ok: true }).trimEnd()), { ok: true });
  assertEquals(parseReply(encodeReply({ ok: false, error: "no" }).trimEnd()), { ok: false, error: "no" });
  for (const line of ["", "ok", "{}", '{"ok":"true"}', '{"ok":false}', "[true]"]) ok(!parseReply(line).ok, line);
});

Deno.test("parseWatchedState round-trips and skips damaged entries", () => {
  const entries: WatchedEntry[] = [
    { namespace: "moby", id: "a", createdAt: "2025-06-01T12:00:00.000Z", pid: 10, startTime: 123456 },
    { namespace: "default", id: "b", createdAt: "2025-06-01T12:00:01.000Z", pid: 11, startTime: null },
  ];
  assertEquals(parseWatchedState(encodeWatchedState(entries)), { entries, skipped: 0 });

  const damaged = JSON.stringify({
    version: 1,
    watched: [
      entries[0],
      entries[0], // a duplicate key
      { ...entries[1], startTime: -1 },
      { ...entries[1], startTime: "5" },
      { ...entries[1], id: "../x" },
      { ...entries[1], extra: true },
      "garbage",
      null,
      entries[1],
    ],
  });
  assertEquals(parseWatchedState(damaged), { entries, skipped: 7 });
});

Deno.test("parseWatchedState yields nothing for a file that is not the expected object", () => {
  for (const text of ["", "{", "[]", '{"version":2,"watched":[]}', '{"version":1}', '{"version":1,"watched":{}}']) {
    assertEquals(parseWatchedState(text).entries, [], text);
  }
});

Deno.test("watcherPaths keeps every file in one private directory", () => {
  assertEquals(watcherPaths("/run/arch/"), {
    dir: "/run/arch/exit-watcher",
    socket: "/run/arch/exit-watcher/sock",
    lock: "/run/arch/exit-watcher/lock",
    state: "/run/arch/exit-watcher/watched.json",
  });
});

Deno.test("recordExit writes on the same container only and never replaces a known status", () => {
  const dir = Deno.makeTempDirSync();
  try {
    const registry = new Registry(dir);
    const record = { namespace: "moby", id: "c1", root: "/r", bundle: "/b", key: "k", createdAt: "t1" };
    registry.put(record);
    recordExit(registry, "moby", "c1", "t0", { code: 0 }); // an earlier container of this id
    assertEquals(registry.get("moby", "c1")?.exit, undefined);
    recordExit(registry, "moby", "gone", "t1", { code: 0 }); // no record: nothing written
    assertEquals(registry.get("moby", "gone"), undefined);
    recordExit(registry, "moby", "c1", "t1", { code: 137, signal: 9 });
    const exit = registry.get("moby", "c1")?.exit as { code: number; signal: number; at: string };
    assertEquals([exit.code, exit.signal, typeof exit.at], [137, 9, "string"]);
    recordExit(registry, "moby", "c1", "t1", undefined);
    assertEquals((registry.get("moby", "c1")?.exit as { code: number }).code, 137);
    registry.put(record);
    recordExit(registry, "moby", "c1", "t1", undefined);
    assertEquals(registry.get("moby", "c1")?.exit, { unknown: true });
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
