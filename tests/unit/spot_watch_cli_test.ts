/**
 * `arch watch` as a program and its pure parts: option validation (one sentence, nothing
 * started), the deadline rule, the systemd unit text, the status file (atomic, 0600), and —
 * as root, running `mod.ts watch` in a subprocess against a local IMDS — one watcher per node,
 * a clean stop on SIGTERM, `--provider auto` saying what it detected or that it found nothing,
 * and the finalize it spawns (`$ARCH_LAUNCHER_ARCH finalize --deadline <s>` with ARCH_CONFIG).
 */

import { deepEqual, equal, ok, throws } from "node:assert/strict";
import { parseWatchOptions } from "../../src/cli/watch.ts";
import { clampTimerMs, deadlineSeconds, MAX_NOTICE_SECONDS, MAX_TIMER_MS } from "../../src/spot/notice.ts";
import { FINALIZE_GRACE_MS, finalizeTimeoutMs, runArchFinalize } from "../../src/spot/finalize.ts";
import { watchUnitText } from "../../src/spot/unit.ts";
import { readStatus, statusPath, type WatchStatus, writeStatus } from "../../src/spot/status.ts";
import { UsageError } from "../../src/util/errors.ts";
import { AwsImds, GcpMetadata, NotACloud, until } from "../harness/metadata_servers.ts";

const MOD = new URL("../../mod.ts", import.meta.url).pathname;

Deno.test("watch options: bad values are refused with one sentence naming the option and the fix", async (t) => {
  const cases: [Record<string, unknown>, string][] = [
    [{ provider: "ibm" }, '--provider "ibm" is not a cloud ARCH knows: use aws, gcp, azure or auto'],
    [{ interval: "0" }, '--interval "0" is not a number of seconds from 0.1 to 60: e.g. 5'],
    [{ interval: "1e-9" }, '--interval "1e-9" is not a number of seconds from 0.1 to 60: e.g. 5'],
    [{ interval: "0.09" }, '--interval "0.09" is not a number of seconds from 0.1 to 60: e.g. 5'],
    [{ interval: "fast" }, '--interval "fast" is not a number of seconds from 0.1 to 60: e.g. 5'],
    [{ interval: "1e12" }, '--interval "1e12" is not a number of seconds from 0.1 to 60: e.g. 5'],
    [{ interval: "Infinity" }, '--interval "Infinity" is not a number of seconds from 0.1 to 60'],
    [{ interval: " " }, '--interval " " is not a number of seconds from 0.1 to 60'],
    [{ margin: "-1" }, '--margin "-1" is not a number of seconds from 0 to 900: e.g. 5'],
    [{ margin: "NaN" }, '--margin "NaN" is not a number of seconds from 0 to 900: e.g. 5'],
    [{ margin: "901" }, '--margin "901" is not a number of seconds from 0 to 900: e.g. 5'],
    [{ onRebalance: "ignore" }, '--on-rebalance "ignore" is not a policy: use log or finalize'],
    [{ provider: "aws", endpoint: ["https://x"] }, "must be an http:// base URL"],
    [{ provider: "aws", endpoint: ["nope"] }, '--endpoint "nope" is not a URL'],
    [{ endpoint: ["http://127.0.0.1:1"] }, "with --provider auto write aws=URL, gcp=URL or azure=URL"],
  ];
  for (const [opts, msg] of cases) {
    await t.step(JSON.stringify(opts), () => {
      throws(() => parseWatchOptions(opts), (e: unknown) => e instanceof UsageError && e.message.includes(msg));
    });
  }
  await t.step("good values", () => {
    const s = parseWatchOptions({
      provider: "auto",
      endpoint: ["gcp=http://127.0.0.1:9/", "aws=http://127.0.0.1:8"],
      interval: "0.5",
      margin: "0",
      onRebalance: "finalize",
    });
    deepEqual(s.endpoints, { gcp: "http://127.0.0.1:9", aws: "http://127.0.0.1:8" });
    deepEqual([s.intervalMs, s.marginSeconds, s.onRebalance], [500, 0, "finalize"]);
    deepEqual([parseWatchOptions({ interval: "0.1" }).intervalMs, parseWatchOptions({ interval: "60" }).intervalMs], [
      100,
      60_000,
    ]);
  });
});

Deno.test("deadline: notice time minus the margin, never under the 10 s floor", () => {
  const now = Date.parse("2026-01-01T00:00:00Z");
  deepEqual(
    [
      deadlineSeconds("2026-01-01T00:02:00Z", now, 5),
      deadlineSeconds("2026-01-01T00:00:30Z", now, 5),
      deadlineSeconds("2026-01-01T00:00:12Z", now, 5),
      deadlineSeconds("2025-12-31T23:59:00Z", now, 5),
      deadlineSeconds(null, now, 5),
      deadlineSeconds("garbage", now, 5),
      deadlineSeconds("2026-01-01T00:02:00Z", now, 0, 3),
    ],
    [115, 25, 10, 10, 10, 10, 120],
  );
});

Deno.test("deadline: a notice far ahead is capped by the cloud's longest notice", () => {
  const now = Date.parse("2026-01-01T00:00:00Z");
  const month = "2026-01-31T00:00:00Z";
  deepEqual(
    [
      deadlineSeconds(month, now, 5, 10, MAX_NOTICE_SECONDS.aws),
      deadlineSeconds(month, now, 5, 10, MAX_NOTICE_SECONDS.gcp),
      deadlineSeconds(month, now, 5, 10, MAX_NOTICE_SECONDS.azure),
      deadlineSeconds("+275760-09-13T00:00:00Z", now, 5, 10, MAX_NOTICE_SECONDS.aws),
    ],
    [115, 25, 895, 115],
  );
});

Deno.test("timers: every delay is clamped to 0..2^31-1 ms (longer ones would fire at once)", () => {
  deepEqual(
    [clampTimerMs(2 ** 31), clampTimerMs(Infinity), clampTimerMs(-1), clampTimerMs(NaN), clampTimerMs(1_500.4)],
    [MAX_TIMER_MS, MAX_TIMER_MS, 0, 0, 1_500],
  );
  equal(MAX_TIMER_MS, 2_147_483_647);
  equal(finalizeTimeoutMs(100), 100_000 + FINALIZE_GRACE_MS);
  equal(finalizeTimeoutMs(30 * 86_400), MAX_TIMER_MS);
});

Deno.test("finalize: a 30-day deadline does not kill the finalize run early", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "arch-watch-" });
  const fake = `${dir}/fake-arch`;
  Deno.writeTextFileSync(fake, `#!/bin/sh\nsleep 0.3\necho "done $*"\nprintf 'evil\\033[2J\\n'\n`, { mode: 0o700 });
  const lines: string[] = [];
  const started = Date.now();
  const code = await runArchFinalize(fake, `${dir}/config.json`, 30 * 86_400, undefined, (l) => lines.push(l));
  const took = Date.now() - started;
  Deno.removeSync(dir, { recursive: true });
  equal(code, 0, "not killed");
  ok(took >= 290, `${took} ms: it ran to its end`);
  deepEqual(lines, ["finalize: done finalize --deadline 2592000", "finalize: evil\\x1b[2J"]);
});

Deno.test("unit: arch-watch.service runs arch watch, restarts always, hardening that lets CRIU run", () => {
  const text = watchUnitText("/usr/local/bin/arch", "gcp");
  for (
    const line of [
      "Type=simple",
      "ExecStart=/usr/local/bin/arch watch --provider gcp",
      "Restart=always",
      "RestartSec=2",
      "After=network-online.target containerd.service docker.service",
      "WantedBy=multi-user.target",
      "UMask=0077",
    ]
  ) ok(text.split("\n").includes(line), line);
  for (const forbidden of ["ProtectSystem", "PrivateTmp", "SystemCallFilter", "NoNewPrivileges", "User="]) {
    ok(!text.includes(forbidden), `${forbidden} would stop runc/CRIU`);
  }
  throws(() => watchUnitText("arch", "aws"), /must be absolute/);
  throws(() => watchUnitText("/usr/bin/arch x", "aws"), /must be absolute/);
  throws(() => watchUnitText("/usr/bin/arch", "oracle"), /must be aws, gcp, azure or auto/);
});

Deno.test("status: written atomically, 0600, with the documented fields", () => {
  const dir = Deno.makeTempDirSync();
  const path = statusPath(`${dir}/state`);
  const status: WatchStatus = {
    pid: 1,
    provider: "aws",
    startedAt: new Date().toISOString(),
    lastPollAt: null,
    lastError: null,
    notice: null,
    finalize: null,
  };
  writeStatus(path, status);
  writeStatus(path, { ...status, lastError: "x" });
  equal(Deno.statSync(path).mode! & 0o777, 0o600);
  equal(Deno.statSync(`${dir}/state`).mode! & 0o777, 0o700);
  deepEqual(Object.keys(readStatus(path)!), [
    "pid",
    "provider",
    "startedAt",
    "lastPollAt",
    "lastError",
    "notice",
    "finalize",
  ]);
  deepEqual([...Deno.readDirSync(`${dir}/state`)].map((e) => e.name), ["watch.json"], "no temporary file left");
  Deno.removeSync(dir, { recursive: true });
});

// ---- the program (root: the host configuration must be root-owned) ----

const asRoot = { ignore: Deno.uid() !== 0, sanitizeResources: false, sanitizeOps: false };

function node(extra: Record<string, unknown> = {}) {
  const dir = Deno.makeTempDirSync({ prefix: "arch-watch-" });
  const config = `${dir}/config.json`;
  Deno.writeTextFileSync(config, JSON.stringify({ stateDir: `${dir}/run`, logFile: `${dir}/arch.log`, ...extra }), {
    mode: 0o600,
  });
  return { dir, config, state: `${dir}/run`, log: `${dir}/arch.log` };
}

function spawnWatch(config: string, args: string[], env: Record<string, string> = {}) {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MOD, "watch", ...args],
    env: { ARCH_CONFIG: config, ...env },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

const text = (b: Uint8Array) => new TextDecoder().decode(b);

Deno.test({
  name: "program: one watcher per node; SIGTERM stops it cleanly; the status says what it watches",
  ...asRoot,
}, async () => {
  await using imds = new AwsImds();
  const n = node();
  const first = spawnWatch(n.config, ["--provider", "aws", "--endpoint", imds.url, "--interval", "0.1"]);
  await until("watch.json", () => readStatus(statusPath(n.state))?.lastPollAt != null, 20_000);
  const second = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MOD, "watch", "--provider", "aws", "--endpoint", imds.url],
    env: { ARCH_CONFIG: n.config },
  }).output();
  equal(second.code, 3); // PreconditionError: another watcher runs
  equal(
    text(second.stderr).trim(),
    `arch: another arch watch (pid ${first.pid}) already watches this node: stop it first (systemctl stop arch-watch)`,
  );
  const status = readStatus(statusPath(n.state))!;
  deepEqual([status.pid, status.provider, status.lastError, status.notice], [first.pid, "aws", null, null]);
  first.kill("SIGTERM");
  const out = await first.output();
  equal(out.code, 0, text(out.stderr));
  const lines = text(out.stdout).trim().split("\n");
  equal(lines[0], `watching aws spot notices at ${imds.url}`);
  equal(lines.at(-1), "watcher stopped");
  const log = Deno.readTextFileSync(n.log).trim().split("\n").map((l) => JSON.parse(l));
  ok(log.some((r) => r.component === "watch" && r.msg === "watcher stopped"), "ARCH's log has the state changes");
  Deno.removeSync(n.dir, { recursive: true });
});

Deno.test({ name: "program: --provider auto says what it detected, or that it found none", ...asRoot }, async () => {
  await using gcp = new GcpMetadata();
  await using plain = new NotACloud();
  const n = node();
  const dmi = `${n.dir}/sys_vendor`;
  Deno.writeTextFileSync(dmi, "Google\n");
  const found = spawnWatch(n.config, [
    "--endpoint",
    `aws=${plain.url}`,
    "--endpoint",
    `gcp=${gcp.url}`,
    "--endpoint",
    `azure=${plain.url}`,
    "--dmi",
    dmi,
  ]);
  await until("a hanging GET", () => gcp.hanging === 1, 20_000);
  found.kill("SIGTERM");
  const out = await found.output();
  equal(out.code, 0, text(out.stderr));
  ok(
    text(out.stdout).startsWith(`detected gcp: its metadata server answered at ${gcp.url} (DMI vendor "Google")\n`),
    text(out.stdout),
  );
  equal(readStatus(statusPath(n.state))?.provider, "gcp");

  const none = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      MOD,
      "watch",
      "--dmi",
      dmi,
      ...["aws", "gcp", "azure"].flatMap((p) => ["--endpoint", `${p}=${plain.url}`]),
    ],
    env: { ARCH_CONFIG: n.config },
  }).output();
  equal(none.code, 3); // PreconditionError: no cloud detected
  ok(text(none.stderr).startsWith("arch: no cloud detected: no metadata server answered within"), text(none.stderr));
  ok(text(none.stderr).includes(`DMI vendor "Google" suggests gcp: pass --provider aws, gcp or azure`));
  Deno.removeSync(n.dir, { recursive: true });
});

Deno.test({
  name: "program: a notice spawns `arch finalize --deadline <s>` with the same ARCH_CONFIG, once; --once exits",
  ...asRoot,
}, async () => {
  await using imds = new AwsImds();
  imds.instanceAction = { action: "terminate", time: new Date(Date.now() + 60_000).toISOString() };
  const n = node();
  const record = `${n.dir}/finalize.calls`;
  const fake = `${n.dir}/fake-arch`;
  Deno.writeTextFileSync(fake, `#!/bin/sh\necho "$* ARCH_CONFIG=$ARCH_CONFIG" >> ${record}\necho "ok    moby/c1"\n`, {
    mode: 0o700,
  });
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MOD, "watch", "--provider", "aws", "--endpoint", imds.url, "--once"],
    env: { ARCH_CONFIG: n.config, ARCH_LAUNCHER_ARCH: fake },
  }).output();
  equal(out.code, 0, text(out.stderr));
  const calls = Deno.readTextFileSync(record).trim().split("\n");
  equal(calls.length, 1);
  const m = /^finalize --deadline (\d+(\.\d)?) ARCH_CONFIG=(.*)$/.exec(calls[0]!);
  ok(m !== null, String(calls[0]));
  ok(Number(m![1]) > 50 && Number(m![1]) <= 55, String(m![1]));
  equal(m![3], n.config);
  ok(text(out.stdout).includes("finalize: ok    moby/c1"), text(out.stdout));
  const status = readStatus(statusPath(n.state))!;
  equal(status.finalize?.exitCode, 0);
  equal(status.notice?.kind, "terminate");
  Deno.removeSync(n.dir, { recursive: true });
});

Deno.test({ name: "program: the watcher's log keeps the host config's logLevel", ...asRoot }, async () => {
  await using imds = new AwsImds();
  imds.instanceAction = { action: "terminate", time: new Date(Date.now() + 60_000).toISOString() };
  const n = node({ logLevel: "warn" });
  const fake = `${n.dir}/fake-arch`;
  Deno.writeTextFileSync(fake, `#!/bin/sh\necho "ok    moby/c1"\n`, { mode: 0o700 });
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MOD, "watch", "--provider", "aws", "--endpoint", imds.url, "--once"],
    env: { ARCH_CONFIG: n.config, ARCH_LAUNCHER_ARCH: fake },
  }).output();
  equal(out.code, 0, text(out.stderr));
  ok(text(out.stdout).includes("watching aws spot notices"), "stdout still says everything");
  const log = Deno.readTextFileSync(n.log).trim().split("\n").map((l) => JSON.parse(l));
  ok(log.some((r) => r.level === "warn" && String(r.msg).startsWith("terminate notice")), JSON.stringify(log));
  ok(log.every((r) => r.level === "warn" || r.level === "error"), JSON.stringify(log.map((r) => r.level)));
  Deno.removeSync(n.dir, { recursive: true });
});
