/**
 * Operator commands' pure logic: durations and units, log filtering and formatting, the
 * Logger's minimum level, the host config's new fields, CRIU image decoding, and doctor's
 * engine, watcher and kernel checks against files in a temporary directory.
 */

import { deepEqual as assertEquals, ok, throws } from "node:assert/strict";
import { humanAge, humanBytes, parseDuration, safeJson, terminalSafe } from "../../src/cli/output.ts";
import { readBounded } from "../../src/cli/inspect.ts";
import { mapBounded } from "../../src/cli/ls.ts";
import { formatRecord, logFileProblem, logFilter, matches, parseLogLine } from "../../src/cli/log.ts";
import { Logger } from "../../src/log/log.ts";
import { readHostBasics } from "../../src/config/host.ts";
import { HostConfigSchema } from "../../src/config/host_schema.ts";
import { UsageError } from "../../src/util/errors.ts";
import { decodeFields, parseCoreComm, parsePagemapPages, parsePstree, readCriuImages } from "../../src/criu/images.ts";
import {
  containerdCheck,
  dockerCheck,
  enginePaths,
  kernelCheck,
  podmanCheck,
  watcherCheck,
} from "../../src/cli/doctor.ts";

Deno.test("durations and units", async (t) => {
  await t.step("parseDuration", () => {
    const cases: [string, number | undefined][] = [
      ["30s", 30_000],
      ["15m", 900_000],
      ["12h", 43_200_000],
      ["7d", 604_800_000],
      ["2w", 1_209_600_000],
      ["3", 259_200_000],
      ["1.5h", 5_400_000],
      ["", undefined],
      ["-1d", undefined],
      ["7 days", undefined],
      ["d", undefined],
    ];
    for (const [text, ms] of cases) assertEquals(parseDuration(text), ms, text);
  });
  await t.step("terminalSafe strips C0, DEL and C1, keeps the rest", () => {
    assertEquals(terminalSafe("a\tb\nc\x1b[31md\x7fe\u0085f\u009fg é ✓"), "abc[31mdefg é ✓");
  });
  await t.step("mapBounded: in order, never more than the limit at once", async () => {
    let running = 0, peak = 0;
    const out = await mapBounded([...Array(30).keys()], 8, async (n) => {
      peak = Math.max(peak, ++running);
      await new Promise((r) => setTimeout(r, 2));
      running--;
      return n * 2;
    });
    assertEquals(out, [...Array(30).keys()].map((n) => n * 2));
    assertEquals(peak, 8);
    assertEquals(await mapBounded([], 8, () => Promise.resolve(1)), []);
  });
  await t.step("finding 10: readBounded reads a regular file up to a bound, never a symlink", () => {
    const dir = Deno.makeTempDirSync();
    try {
      Deno.writeTextFileSync(`${dir}/f`, "abc");
      Deno.writeTextFileSync(`${dir}/secret`, "s");
      Deno.symlinkSync(`${dir}/secret`, `${dir}/link`);
      assertEquals(new TextDecoder().decode(readBounded(`${dir}/f`, 3)), "abc");
      assertEquals(readBounded(`${dir}/f`, 2), undefined);
      assertEquals(readBounded(`${dir}/link`, 100), undefined);
      assertEquals(readBounded(`${dir}`, 100), undefined);
      assertEquals(readBounded(`${dir}/none`, 100), undefined);
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  });
  await t.step("humanBytes and humanAge", () => {
    assertEquals([humanBytes(0), humanBytes(1023), humanBytes(1024), humanBytes(3 * 2 ** 30)], [
      "0 B",
      "1023 B",
      "1.0 KiB",
      "3.0 GiB",
    ]);
    assertEquals([humanAge(-5), humanAge(59_000), humanAge(3_600_000), humanAge(2 * 86_400_000)], [
      "0s",
      "59s",
      "1h",
      "2d",
    ]);
  });
});

Deno.test("arch log: filter and format", async (t) => {
  const now = Date.parse("2026-11-29T12:00:00Z");
  const rec = (level: string, extra: Record<string, unknown> = {}) => ({
    time: "2026-11-29T11:30:00.000Z",
    level,
    component: "runc-wrapper",
    msg: "m",
    ...extra,
  });
  await t.step("minimum level", () => {
    const f = logFilter({ level: "warn" }, now);
    assertEquals(["debug", "info", "warn", "error"].map((l) => matches(rec(l), f)), [false, false, true, true]);
    assertEquals(matches(rec("error"), logFilter({}, now)), true, "default shows everything");
  });
  await t.step("container prefix, key, since", () => {
    assertEquals(matches(rec("info", { id: "abcdef" }), logFilter({ container: "abc" }, now)), true);
    assertEquals(matches(rec("info", { id: "xbcdef" }), logFilter({ container: "abc" }, now)), false);
    assertEquals(matches(rec("info"), logFilter({ container: "abc" }, now)), false, "no id: not that container's");
    assertEquals(matches(rec("info", { key: "k1" }), logFilter({ key: "k1" }, now)), true);
    assertEquals(matches(rec("info", { key: "k2" }), logFilter({ key: "k1" }, now)), false);
    assertEquals(matches(rec("info"), logFilter({ since: "1h" }, now)), true);
    assertEquals(matches(rec("info"), logFilter({ since: "10m" }, now)), false);
    assertEquals(matches(rec("info"), logFilter({ since: "2026-11-29T11:00:00Z" }, now)), true);
  });
  await t.step("bad options: one sentence, as a usage error", () => {
    for (const level of ["loud", "toString"]) {
      throws(
        () => logFilter({ level }, now),
        (e: Error) => e instanceof UsageError && e.message.includes(`--level "${level}"`),
      );
    }
    throws(
      () => logFilter({ since: "yesterday" }, now),
      (e: Error) => e instanceof UsageError && /--since/.test(e.message),
    );
  });
  await t.step("lines that are not JSON objects are skipped; records format on one line", () => {
    assertEquals([parseLogLine("garbage"), parseLogLine("[1]"), parseLogLine('{"a":')], [
      undefined,
      undefined,
      undefined,
    ]);
    const line = formatRecord(rec("error", { id: "c1", error: "it broke: badly" }));
    assertEquals(line, '2026-11-29T11:30:00.000Z error runc-wrapper m id=c1 error="it broke: badly"');
  });
  await t.step("finding 10: a message or field a container set cannot drive the terminal", () => {
    const evil = "job\x1b]0;owned\x07\r\n2026 fake line\u009b2J\x7f";
    const line = formatRecord({ ...rec("error", { key: evil, [`k${evil}`]: 1 }), msg: evil });
    const controls = (text: string) => [...text].filter((c) => c.charCodeAt(0) < 0x20 || (c >= "\x7f" && c <= "\x9f"));
    assertEquals(controls(line), [], JSON.stringify(line));
    ok(line.includes(" job]0;owned2026 fake line2J "), line);
    // --json: the same record, C1 and DEL escaped too (JSON leaves them raw)
    const json = safeJson({ msg: evil });
    assertEquals(controls(json), [], json);
    assertEquals(JSON.parse(json), { msg: evil });
  });
  await t.step("log file must be root-owned 0600", () => {
    assertEquals(logFileProblem("/l", { isFile: true, uid: 0, mode: 0o100600 }), undefined);
    ok(/mode 644, not 0600.*chmod 600/.test(logFileProblem("/l", { isFile: true, uid: 0, mode: 0o100644 })!));
    ok(/uid 1000/.test(logFileProblem("/l", { isFile: true, uid: 1000, mode: 0o100600 })!));
  });
});

Deno.test("Logger keeps records at or above its minimum level; host config logLevel reaches the wrapper", () => {
  const dir = Deno.makeTempDirSync({ prefix: "arch-log-" });
  try {
    const path = `${dir}/arch.log`;
    const log = new Logger(path, { component: "t" }, "warn").with({ id: "c" });
    log.debug("d");
    log.info("i");
    log.warn("w");
    log.error("e");
    const levels = Deno.readTextFileSync(path).trim().split("\n").map((l) => JSON.parse(l).level);
    assertEquals(levels, ["warn", "error"]);
    const config = `${dir}/config.json`;
    Deno.writeTextFileSync(config, JSON.stringify({ logLevel: "debug", metricsFile: "", logFile: `${dir}/x/a.log` }));
    const basics = readHostBasics(config, []);
    assertEquals([basics.logLevel, basics.metricsFile, basics.eventsFile], ["debug", "", `${dir}/x/events.jsonl`]);
    Deno.writeTextFileSync(config, JSON.stringify({ logLevel: "loud" }));
    assertEquals(readHostBasics(config, []).logLevel, "info", "the hot path falls back; the schema refuses it");
    assertEquals(HostConfigSchema.safeParse({ logLevel: "loud" }).success, false);
    const parsed = HostConfigSchema.parse({});
    assertEquals([parsed.logLevel, parsed.metricsFile, parsed.gc], ["info", "/var/lib/arch/metrics/arch.prom", {
      keepPerKey: 1,
      quarantineDays: 7,
    }]);
    assertEquals(HostConfigSchema.parse({ gc: { quarantineDays: 0.5 } }).gc.quarantineDays, 0.5);
    assertEquals(HostConfigSchema.safeParse({ gc: { quarantineDays: -1 } }).success, false);
    assertEquals(HostConfigSchema.safeParse({ gc: { keepPerKey: -1 } }).success, false);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

/** Protobuf encoding of the few field kinds CRIU's images use here. */
function varint(n: number): number[] {
  const out: number[] = [];
  let v = BigInt(n);
  do {
    let b = Number(v & 0x7fn);
    v >>= 7n;
    if (v > 0n) b |= 0x80;
    out.push(b);
  } while (v > 0n);
  return out;
}
const fieldVarint = (n: number, v: number) => [...varint((n << 3) | 0), ...varint(v)];
const fieldBytes = (n: number, b: number[]) => [...varint((n << 3) | 2), ...varint(b.length), ...b];
function image(entries: number[][]): Uint8Array {
  const out: number[] = [0x19, 0x43, 0x56, 0x54, 0x30, 0x30, 0x27, 0x50]; // two magics
  for (const e of entries) out.push(e.length & 0xff, (e.length >> 8) & 0xff, 0, 0, ...e);
  return new Uint8Array(out);
}

Deno.test("CRIU images: process tree, command names, pages", async (t) => {
  const pstree = image([
    [...fieldVarint(1, 1), ...fieldVarint(2, 0), ...fieldVarint(3, 1), ...fieldVarint(4, 1), ...fieldBytes(5, [1])],
    [...fieldVarint(1, 7), ...fieldVarint(2, 1), ...fieldVarint(5, 7), ...fieldVarint(5, 8)],
  ]);
  const tc = [...fieldVarint(1, 1), ...fieldVarint(2, 0), ...fieldBytes(6, [...new TextEncoder().encode("workload")])];
  const core = image([[...fieldVarint(1, 1), ...fieldBytes(2, [0x08, 0x01]), ...fieldBytes(3, tc)]]);
  const pagemap = image([
    fieldVarint(1, 1), // pagemap_head
    [...fieldVarint(1, 4096), ...fieldVarint(2, 0), ...fieldVarint(4, 4), ...fieldVarint(5, 100)], // pages_nr
    [...fieldVarint(1, 8192), ...fieldVarint(2, 3), ...fieldVarint(4, 4)], // legacy nr_pages
    [...fieldVarint(1, 9999), ...fieldVarint(2, 9), ...fieldVarint(4, 1)], // in the parent image: not here
  ]);
  await t.step("decoders", () => {
    assertEquals(parsePstree(pstree), [{ pid: 1, ppid: 0, threads: [1] }, { pid: 7, ppid: 1, threads: [7, 8] }]);
    assertEquals(parseCoreComm(core), "workload");
    assertEquals(parsePagemapPages(pagemap), 103);
    throws(() => decodeFields(new Uint8Array([0x0a, 0x05, 1])), /truncated/);
  });
  await t.step("a directory: tree with names and pages, memory = pages-*.img, symlinks not read", () => {
    const dir = Deno.makeTempDirSync({ prefix: "arch-criu-" });
    try {
      Deno.writeFileSync(`${dir}/pstree.img`, pstree);
      Deno.writeFileSync(`${dir}/core-1.img`, core);
      Deno.writeFileSync(`${dir}/pagemap-1.img`, pagemap);
      Deno.writeFileSync(`${dir}/pages-1.img`, new Uint8Array(3 * 4096));
      Deno.symlinkSync("/etc/passwd", `${dir}/core-7.img`);
      Deno.symlinkSync("/etc/passwd", `${dir}/pages-2.img`);
      const s = readCriuImages(dir)!;
      assertEquals(s.memoryBytes, 3 * 4096);
      assertEquals(s.processes.map((p) => [p.pid, p.comm, p.pages]), [[1, "workload", 103], [7, undefined, undefined]]);
      Deno.writeFileSync(`${dir}/pstree.img`, new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8, 200, 0, 0, 0, 1]));
      assertEquals(readCriuImages(dir)!.processes, [], "a damaged pstree: no tree, no exception");
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  });
});

Deno.test("arch doctor: kernel, engines and watcher checks", async (t) => {
  const dir = Deno.makeTempDirSync({ prefix: "arch-doctor-" });
  try {
    await t.step("kernel: pidfd exit info needs 6.15; soft-dirty is a note", () => {
      assertEquals(kernelCheck("6.14.2", true).status, "warn");
      const k = kernelCheck("6.18.0", false);
      assertEquals(k.status, "ok");
      ok(k.detail.includes("no soft-dirty tracking"), k.detail);
    });
    await t.step("containerd: a BinaryName naming arch-runc in any TOML file", () => {
      Deno.mkdirSync(`${dir}/containerd/conf.d`, { recursive: true });
      Deno.writeTextFileSync(`${dir}/containerd/config.toml`, 'version = 2\nimports = ["conf.d/*.toml"]\n');
      assertEquals(containerdCheck(`${dir}/containerd`).status, "warn");
      ok(containerdCheck(`${dir}/nothing`).detail.includes('run "arch install containerd"'));
      Deno.writeTextFileSync(`${dir}/arch-runc`, "", { mode: 0o755 });
      Deno.writeTextFileSync(
        `${dir}/containerd/conf.d/arch.toml`,
        `[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.arch.options]\n  BinaryName = "${dir}/arch-runc"\n`,
      );
      assertEquals(containerdCheck(`${dir}/containerd`).status, "ok");
    });
    await t.step("docker: runtimes.*.path arch-runc, default runtime said", () => {
      const path = `${dir}/daemon.json`;
      assertEquals(dockerCheck(path).status, "warn");
      Deno.writeTextFileSync(path, "{ not json");
      ok(dockerCheck(path).detail.includes("not readable JSON"));
      Deno.writeTextFileSync(path, JSON.stringify({ runtimes: { arch: { path: `${dir}/arch-runc` } } }));
      const c = dockerCheck(path);
      assertEquals(c.status, "ok");
      ok(c.detail.includes("--runtime arch"), c.detail);
      Deno.writeTextFileSync(path, JSON.stringify({ runtimes: { arch: { path: "/nope/arch-runc" } } }));
      assertEquals(dockerCheck(path).status, "warn");
    });
    await t.step("podman: both hooks.d files", () => {
      Deno.mkdirSync(`${dir}/hooks.d`);
      assertEquals(podmanCheck([`${dir}/hooks.d`]).status, "warn");
      Deno.writeTextFileSync(`${dir}/hooks.d/arch-createRuntime.json`, "{}");
      ok(podmanCheck([`${dir}/hooks.d`]).detail.startsWith("only arch-createRuntime.json"));
      Deno.writeTextFileSync(`${dir}/hooks.d/arch-poststop.json`, "{}");
      assertEquals(podmanCheck([`${dir}/none`, `${dir}/hooks.d`]).status, "ok");
    });
    await t.step("watcher: alive and polled within 30 s, else a warning", () => {
      const file = `${dir}/watch.json`;
      const now = Date.now();
      assertEquals(watcherCheck(file, now).status, "warn");
      const status = (pid: number, lastPollAt: string) =>
        Deno.writeTextFileSync(file, JSON.stringify({ pid, provider: "aws", startedAt: "", lastPollAt }));
      status(Deno.pid, new Date(now - 5_000).toISOString());
      assertEquals(watcherCheck(file, now).status, "ok");
      status(Deno.pid, new Date(now - 60_000).toISOString());
      ok(watcherCheck(file, now).detail.includes("last polled 1m ago"));
      status(2 ** 22 + 1, new Date(now).toISOString());
      ok(watcherCheck(file, now).detail.includes("is gone"));
    });
    await t.step("paths overridable through the environment", () => {
      const env = new Map([["ARCH_DOCTOR_DOCKER_CONFIG", "/x/d.json"], ["ARCH_DOCTOR_HOOKS_DIRS", "/a:/b"]]);
      const p = enginePaths((n) => env.get(n));
      assertEquals([p.containerdDir, p.dockerConfig, p.hooksDirs], ["/etc/containerd", "/x/d.json", ["/a", "/b"]]);
    });
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
