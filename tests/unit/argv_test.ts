import { deepEqual as assertEquals } from "node:assert/strict";
import { CONTAINERD_CREATE } from "./_argv_fixtures.ts";
import { formatOptions, formatRuncCall, parseRuncArgv } from "../../src/runc/argv.ts";

type Case = [name: string, argv: string[], expected: unknown];

const cases: Case[] = [
  ["bare", [], { global: {}, command: undefined, options: {}, args: [] }],
  ["version", ["--version"], { global: { version: true }, command: undefined, options: {}, args: [] }],
  ["containerd create", CONTAINERD_CREATE, {
    global: { root: "/run/containerd/runc/default", log: "/b/log.json", "log-format": "json" },
    command: "create",
    options: { bundle: "/b", "pid-file": "/b/init.pid" },
    args: ["c1"],
  }],
  ["create with console and booleans", [
    "--systemd-cgroup",
    "create",
    "--no-pivot",
    "--no-new-keyring",
    "--console-socket",
    "/tmp/pty.sock",
    "--preserve-fds=2",
    "-b",
    "/b",
    "c1",
  ], {
    global: { "systemd-cgroup": true },
    command: "create",
    options: {
      "no-pivot": true,
      "no-new-keyring": true,
      "console-socket": "/tmp/pty.sock",
      "preserve-fds": "2",
      bundle: "/b",
    },
    args: ["c1"],
  }],
  ["single-dash long flag and =value", ["-root=/r", "-debug", "start", "c1"], {
    global: { root: "/r", debug: true },
    command: "start",
    options: {},
    args: ["c1"],
  }],
  ["boolean with explicit false", ["--debug=false", "state", "c1"], {
    global: { debug: false },
    command: "state",
    options: {},
    args: ["c1"],
  }],
  ["rootless value", ["--rootless", "auto", "list", "-q"], {
    global: { rootless: "auto" },
    command: "list",
    options: { quiet: true },
    args: [],
  }],
  ["start", ["--root", "/r", "start", "c1"], { global: { root: "/r" }, command: "start", options: {}, args: ["c1"] }],
  ["delete force after id (reordered)", ["delete", "c1", "--force"], {
    global: {},
    command: "delete",
    options: { force: true },
    args: ["c1"],
  }],
  ["delete -f", ["delete", "-f", "c1"], { global: {}, command: "delete", options: { force: true }, args: ["c1"] }],
  ["runc 1.2+ create with --pidfd-socket", ["create", "--bundle", "/b", "--pidfd-socket", "/s.sock", "c1"], {
    global: {},
    command: "create",
    options: { bundle: "/b", "pidfd-socket": "/s.sock" },
    args: ["c1"],
  }],
  ["runc 1.3 checkpoint flags", ["checkpoint", "--tcp-skip-in-flight", "--link-remap", "--image-path", "/i", "c1"], {
    global: {},
    command: "checkpoint",
    options: { "tcp-skip-in-flight": true, "link-remap": true, "image-path": "/i" },
    args: ["c1"],
  }],
  ["kill with signal and --all", ["kill", "--all", "c1", "9"], {
    global: {},
    command: "kill",
    options: { all: true },
    args: ["c1", "9"],
  }],
  ["exec detached with process file", [
    "exec",
    "--process",
    "/tmp/runc-process123",
    "--detach",
    "--pid-file",
    "/b/x.pid",
    "c1",
  ], {
    global: {},
    command: "exec",
    options: { process: "/tmp/runc-process123", detach: true, "pid-file": "/b/x.pid" },
    args: ["c1"],
  }],
  ["exec command flags are not runc's", ["exec", "-t", "-e", "A=1", "-e", "B=2", "c1", "sh", "-c", "ls --all"], {
    global: {},
    command: "exec",
    options: { tty: true, env: ["A=1", "B=2"] },
    args: ["c1", "sh", "-c", "ls --all"],
  }],
  ["exec caps, gids, cgroup, ignore-paused", [
    "exec",
    "--cap",
    "CAP_NET_ADMIN",
    "-g",
    "10",
    "--cgroup",
    "cpu:sub",
    "--ignore-paused",
    "--user",
    "1000:1000",
    "--cwd",
    "/w",
    "c1",
    "true",
  ], {
    global: {},
    command: "exec",
    options: {
      cap: ["CAP_NET_ADMIN"],
      "additional-gids": ["10"],
      cgroup: ["cpu:sub"],
      "ignore-paused": true,
      user: "1000:1000",
      cwd: "/w",
    },
    args: ["c1", "true"],
  }],
  ["ctr checkpoint", [
    "checkpoint",
    "--image-path",
    "/tmp/img",
    "--work-path",
    "/b/work/criu-work",
    "--leave-running",
    "c1",
  ], {
    global: {},
    command: "checkpoint",
    options: { "image-path": "/tmp/img", "work-path": "/b/work/criu-work", "leave-running": true },
    args: ["c1"],
  }],
  ["checkpoint all options", [
    "checkpoint",
    "--tcp-established",
    "--ext-unix-sk",
    "--shell-job",
    "--file-locks",
    "--pre-dump",
    "--parent-path",
    "../p",
    "--page-server",
    "1.2.3.4:5",
    "--status-fd",
    "3",
    "--lazy-pages",
    "--auto-dedup",
    "--manage-cgroups-mode",
    "soft",
    "--empty-ns",
    "network",
    "c1",
  ], {
    global: {},
    command: "checkpoint",
    options: {
      "tcp-established": true,
      "ext-unix-sk": true,
      "shell-job": true,
      "file-locks": true,
      "pre-dump": true,
      "parent-path": "../p",
      "page-server": "1.2.3.4:5",
      "status-fd": "3",
      "lazy-pages": true,
      "auto-dedup": true,
      "manage-cgroups-mode": "soft",
      "empty-ns": ["network"],
    },
    args: ["c1"],
  }],
  ["restore", [
    "restore",
    "-d",
    "--bundle",
    "/b",
    "--pid-file",
    "/p",
    "--image-path",
    "/i",
    "--no-subreaper",
    "--lsm-profile",
    "apparmor:x",
    "--lsm-mount-context",
    "ctx",
    "c1",
  ], {
    global: {},
    command: "restore",
    options: {
      detach: true,
      bundle: "/b",
      "pid-file": "/p",
      "image-path": "/i",
      "no-subreaper": true,
      "lsm-profile": "apparmor:x",
      "lsm-mount-context": "ctx",
    },
    args: ["c1"],
  }],
  ["run", ["run", "-d", "--keep", "--no-subreaper", "-b", "/b", "c1"], {
    global: {},
    command: "run",
    options: { detach: true, keep: true, "no-subreaper": true, bundle: "/b" },
    args: ["c1"],
  }],
  ["pause/resume", ["pause", "c1"], { global: {}, command: "pause", options: {}, args: ["c1"] }],
  ["resume", ["resume", "c1"], { global: {}, command: "resume", options: {}, args: ["c1"] }],
  ["ps json", ["ps", "--format", "json", "c1"], {
    global: {},
    command: "ps",
    options: { format: "json" },
    args: ["c1"],
  }],
  ["events", ["events", "--stats", "--interval=1s", "c1"], {
    global: {},
    command: "events",
    options: { stats: true, interval: "1s" },
    args: ["c1"],
  }],
  ["update", ["update", "--memory", "100M", "--pids-limit", "10", "-r", "-", "c1"], {
    global: {},
    command: "update",
    options: { memory: "100M", "pids-limit": "10", resources: "-" },
    args: ["c1"],
  }],
  ["spec", ["spec", "--rootless", "-b", "/b"], {
    global: {},
    command: "spec",
    options: { rootless: true, bundle: "/b" },
    args: [],
  }],
  ["features", ["features"], { global: {}, command: "features", options: {}, args: [] }],
  ["help alias", ["h"], { global: {}, command: "help", options: {}, args: [] }],
  ["double dash", ["kill", "--", "c1", "-9"], { global: {}, command: "kill", options: {}, args: ["c1", "-9"] }],
  ["subcommand help flag", ["create", "--help"], { global: {}, command: "create", options: { help: true }, args: [] }],
];

Deno.test("parseRuncArgv parses every runc subcommand", async (t) => {
  for (const [name, argv, expected] of cases) {
    await t.step(name, () => {
      const result = parseRuncArgv(argv);
      assertEquals(result, { ok: true, call: expected });
    });
  }
});

Deno.test("parseRuncArgv refuses what runc would refuse", async (t) => {
  const bad: [string, string[], string][] = [
    ["unknown global flag", ["--nope", "state", "c1"], "flag provided but not defined: -nope"],
    ["unknown command", ["frobnicate", "c1"], 'no such command "frobnicate"'],
    ["unknown command flag", ["create", "--bundel", "/b", "c1"], "flag provided but not defined: -bundel"],
    ["value flag without value", ["--root"], "flag needs an argument: --root"],
    ["bad boolean", ["--debug=maybe", "state", "c1"], 'invalid boolean value "maybe" for flag --debug'],
  ];
  for (const [name, argv, reason] of bad) {
    await t.step(name, () => assertEquals(parseRuncArgv(argv), { ok: false, reason }));
  }
});

Deno.test("formatRuncCall round-trips through parseRuncArgv", async (t) => {
  for (const [name, argv] of cases) {
    await t.step(name, () => {
      const first = parseRuncArgv(argv);
      if (!first.ok) throw new Error(first.reason);
      assertEquals(parseRuncArgv(formatRuncCall(first.call)), first);
    });
  }
});

Deno.test("formatOptions writes booleans, values and lists", () => {
  assertEquals(formatOptions({ detach: true, debug: false, root: "/r", "empty-ns": ["a", "b"] }), [
    "--detach",
    "--debug=false",
    "--root",
    "/r",
    "--empty-ns",
    "a",
    "--empty-ns",
    "b",
  ]);
});
