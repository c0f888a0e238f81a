/**
 * The pure parts of task-aware checkpoints: what a container may ask (`task/options.ts`), the
 * control directory's mount (`task/control_dir.ts`), and the manifest rule that ties a task
 * checkpoint to its own format version (`store/manifest.ts`).
 */

import { deepEqual as assertEquals, ok } from "node:assert/strict";
import { type TaskLimits, taskOptions } from "../../src/task/options.ts";
import { controlDevice, withControlDir } from "../../src/task/control_dir.ts";
import { ManifestSchema } from "../../src/store/manifest.ts";
import { forTenant } from "../../src/task/requests.ts";
import { MANIFEST_VERSION, TASK_MANIFEST_VERSION } from "../../src/store/layout.ts";

const LIMITS: TaskLimits = { notifyTimeoutMaxSeconds: 120, exitCodeCheckpoints: true };
const parse = (vars: Record<string, string>, limits = LIMITS) => taskOptions(new Map(Object.entries(vars)), limits);
const refused = (vars: Record<string, string>, pattern: RegExp, limits = LIMITS) => {
  const got = parse(vars, limits);
  ok(typeof got === "string" && pattern.test(got), `${JSON.stringify(vars)}: ${JSON.stringify(got)}`);
};

Deno.test("task options: a container that asks nothing gets nothing, and no control directory", () => {
  assertEquals(parse({ ARCH_ENABLE: "1" }), {});
});

Deno.test("task options: notify signal and timeout, with the default and the admin's cap", () => {
  assertEquals(parse({ ARCH_NOTIFY_SIGNAL: "usr1" }), { notify: { signal: "SIGUSR1", timeoutMs: 30_000 } });
  assertEquals(parse({ ARCH_NOTIFY_SIGNAL: "SIGTERM", ARCH_NOTIFY_TIMEOUT: "2.5" }), {
    notify: { signal: "SIGTERM", timeoutMs: 2_500 },
  });
  // The default never exceeds the cap.
  assertEquals(parse({ ARCH_NOTIFY_SIGNAL: "SIGUSR2" }, { ...LIMITS, notifyTimeoutMaxSeconds: 10 }), {
    notify: { signal: "SIGUSR2", timeoutMs: 10_000 },
  });
  refused({ ARCH_NOTIFY_SIGNAL: "SIGUSR1", ARCH_NOTIFY_TIMEOUT: "121" }, /more than this node allows \(120 s/);
  refused({ ARCH_NOTIFY_SIGNAL: "SIGUSR1", ARCH_NOTIFY_TIMEOUT: "-1" }, /not a positive number of seconds/);
  refused({ ARCH_NOTIFY_SIGNAL: "SIGUSR1", ARCH_NOTIFY_TIMEOUT: "1e9" }, /not a positive number/);
  refused({ ARCH_NOTIFY_TIMEOUT: "5" }, /needs ARCH_NOTIFY_SIGNAL/);
  refused({ ARCH_NOTIFY_SIGNAL: "SIGUSR1" }, /not allowed on this node .*"notifyTimeoutMaxSeconds" is 0/, {
    ...LIMITS,
    notifyTimeoutMaxSeconds: 0,
  });
});

Deno.test("task options: signals that cannot be caught or that stop the job are refused", () => {
  for (const signal of ["SIGKILL", "KILL", "SIGSTOP", "SIGTSTP", "SIGTTIN", "9", "", "SIGUSR1; rm -rf /"]) {
    refused({ ARCH_NOTIFY_SIGNAL: signal }, /is not a signal ARCH sends/);
    refused({ ARCH_RESTORED_SIGNAL: signal }, /ARCH_RESTORED_SIGNAL=.* is not a signal ARCH sends/);
  }
  assertEquals(parse({ ARCH_RESTORED_SIGNAL: "SIGHUP" }), { restoredSignal: "SIGHUP" });
});

Deno.test("task options: exit codes 1-125 only (126 and above mean could-not-run or a signal)", () => {
  assertEquals(parse({ ARCH_CHECKPOINT_EXIT_CODE: "42" }), { exitCode: 42 });
  assertEquals(parse({ ARCH_CHECKPOINT_EXIT_CODE: "125" }), { exitCode: 125 });
  for (const code of ["0", "126", "137", "143", "256", "-1", "4x", " "]) {
    refused({ ARCH_CHECKPOINT_EXIT_CODE: code }, /is not an exit code from 1 to 125/);
  }
  refused({ ARCH_CHECKPOINT_EXIT_CODE: "42" }, /"exitCodeCheckpoints" is false/, {
    ...LIMITS,
    exitCodeCheckpoints: false,
  });
});

Deno.test("task options: requests and templates", () => {
  assertEquals(parse({ ARCH_CHECKPOINT_REQUESTS: "1" }), { requests: true });
  assertEquals(parse({ ARCH_CHECKPOINT_REQUESTS: "0" }), {});
  refused({ ARCH_CHECKPOINT_REQUESTS: "yes" }, /neither 1 nor 0/);
  assertEquals(parse({ ARCH_RESTORE_FROM: "warm-v2" }), { restoreFrom: "warm-v2" });
  for (const name of ["../k", ".templates", "a/b", ""]) {
    refused({ ARCH_RESTORE_FROM: name }, /ARCH_RESTORE_FROM=.* is not a template name/);
  }
});

Deno.test("control directory: one small tmpfs of ARCH's at /run/arch; another mount there is refused", () => {
  const spec = withControlDir({ mounts: [{ destination: "/proc", type: "proc", source: "proc" }] });
  ok(typeof spec === "object");
  const mounts = spec.mounts as { destination: string; type: string; source: string; options: string[] }[];
  assertEquals(mounts.length, 2);
  assertEquals([mounts[1]!.destination, mounts[1]!.type, mounts[1]!.source], ["/run/arch", "tmpfs", "arch-control"]);
  for (const o of ["nosuid", "nodev", "noexec", "size=64k", "nr_inodes=64"]) ok(mounts[1]!.options.includes(o), o);
  assertEquals(withControlDir(spec), undefined, "already there: unchanged");
  const clash = withControlDir({ mounts: [{ destination: "/run/arch", type: "bind", source: "/etc" }] });
  ok(typeof clash === "string" && clash.includes('already mounts "/etc" at /run/arch'), String(clash));
});

Deno.test("control directory: its device is read from the container's own mount table only", () => {
  const mountinfo = [
    "600 500 0:52 / / rw,relatime - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w",
    "601 600 0:53 / /run/arch rw,nosuid,nodev,noexec - tmpfs tmpfs rw,size=64k", // the tenant's own tmpfs
    "602 600 0:300 / /run/arch rw,nosuid,nodev,noexec - tmpfs arch-control rw,size=64k,nr_inodes=64",
  ].join("\n");
  assertEquals(controlDevice(mountinfo), 300 - 256 + 1 * 2 ** 20, "minor 300 encoded as the kernel does");
  assertEquals(controlDevice(mountinfo.split("\n").slice(0, 2).join("\n")), undefined);
  // A tenant can name its own mount "arch-control", but only of another type: a bind is no tmpfs.
  assertEquals(controlDevice("603 600 8:1 / /run/arch rw - ext4 arch-control rw"), undefined);
});

Deno.test("manifest: a task checkpoint is of version 3, and only a task checkpoint is", () => {
  const base = {
    containerId: "c",
    namespace: "moby",
    scope: "moby",
    key: "k",
    image: "sha256:x",
    createdAt: "2026-12-07T00:00:00Z",
    arch: { version: "1" },
    runc: { version: "1" },
    criu: { version: "4" },
    kernel: "6",
    cpuArch: "x86_64",
    rootfs: { archive: "rootfs.tar", upperdir: "/u" },
    timings: {},
    files: [],
  };
  ok(ManifestSchema.safeParse({ ...base, version: MANIFEST_VERSION }).success);
  ok(ManifestSchema.safeParse({ ...base, version: TASK_MANIFEST_VERSION, kind: "task" }).success);
  ok(!ManifestSchema.safeParse({ ...base, version: MANIFEST_VERSION, kind: "task" }).success, "task under 2");
  ok(!ManifestSchema.safeParse({ ...base, version: TASK_MANIFEST_VERSION }).success, "process under 3");
});

Deno.test("requests: a failed checkpoint's answer gives CRIU's cause in the container's terms, never the node's paths", () => {
  const dump = 'FAIL  moby/c1 key=k: runc checkpoint of "c1" failed: the job holds open a deleted file ("/tmp/big", ' +
    "96.0 MiB) larger than the ghost-file limit; the job keeps running, nothing was saved (CRIU log: /var/log/arch/x.log)";
  assertEquals(
    forTenant(dump),
    'the dump failed: the job holds open a deleted file ("/tmp/big", 96.0 MiB) larger than the ghost-file limit; ' +
      "the job runs on",
  );
  const generic = "the checkpoint did not complete (the node's log says why); the job runs on";
  const host = 'FAIL  moby/c1 key=k: runc checkpoint of "c1" failed: cannot open /var/lib/docker/overlay2/x; the job ' +
    "keeps running, nothing was saved";
  assertEquals(forTenant(host), generic);
  assertEquals(forTenant('FAIL  moby/c1 key=k: cannot claim checkpoint key "k": held by pid 7 on node-3'), generic);
  assertEquals(forTenant(""), generic);
});
