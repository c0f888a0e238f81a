/**
 * A hostile tenant, through Docker with runtime `arch`: root in its container (no user
 * namespace, the Docker and Kubernetes default), on a shared file system that does not squash
 * root. Each step is one finding of the security audit (issue 24), attacked as a tenant would
 * — retrying races many times — plus what the audit did not reach: concurrent creates of one
 * key, a process tree that forks during the dump, a layer of many files and deep directories.
 * The tenant's tools are a static C program (`tests/fixtures/tenant_tools.c`) bind-mounted in.
 */

import { deepEqual as assertEquals, ok } from "node:assert/strict";
import type { EmbeddedStack } from "../harness/stack.ts";
import { archCli, archDockerRun, eventually, sharedScratch, stackTest, uniqueName } from "./_env.ts";
import { dockerProgress, fullId, waitTicks } from "./_workload.ts";
import { mustRun, runCommand } from "../../src/process/exec.ts";

const base = sharedScratch("arch-tenant-test-");
const SHARED = `${base}/shared`;
/** A host directory no tenant may reach: every attack aims at it. */
const CANARY = `${base}/canary`;
/** The directory of the tenant's tools, bind-mounted at /tools. */
const TOOLS_DIR = `${base}/tools`;
const TOOLS = `${TOOLS_DIR}/tenant_tools`;

async function prepare(): Promise<void> {
  Deno.mkdirSync(SHARED, { recursive: true, mode: 0o755 });
  Deno.mkdirSync(CANARY, { recursive: true, mode: 0o755 });
  Deno.writeTextFileSync(`${CANARY}/precious`, "precious\n");
  Deno.mkdirSync(TOOLS_DIR, { recursive: true, mode: 0o755 }); // one per test process, both engine generations
  await mustRun({
    cmd: "gcc",
    args: ["-static", "-O2", "-s", "-o", TOOLS, new URL("../fixtures/tenant_tools.c", import.meta.url).pathname],
  });
  await mustRun({ cmd: "mount", args: ["-t", "tmpfs", "-o", "mode=0755,size=1g", "arch-tenant-shared", SHARED] });
}

const exists = (path: string) => {
  try {
    Deno.lstatSync(path);
    return true;
  } catch {
    return false;
  }
};

const canaryIntact = () => {
  assertEquals(Deno.readTextFileSync(`${CANARY}/precious`), "precious\n", "the host directory is untouched");
  assertEquals([...Deno.readDirSync(CANARY)].map((e) => e.name), ["precious"]);
};

const tools = ["-v", `${TOOLS_DIR}:/tools:ro`];

/** Whether the tenant's tool runs in container `name` (an attack that never ran proves nothing). */
async function toolRunning(stack: EmbeddedStack, name: string): Promise<boolean> {
  const top = await stack.docker(["top", name], { check: false });
  return top.stdout.includes("tenant_tools");
}
const sharedEnv = (path = SHARED) => [
  "--env",
  `ARCH_SHAREDFS_HOST_PATH=${path}`,
  "--env",
  "ARCH_WORKDIR_CONTAINER_PATH=/work",
];

/** Sets host configuration fields for the time of `fn`. */
async function withConfig(stack: EmbeddedStack, fields: object, fn: () => Promise<void>): Promise<void> {
  const text = Deno.readTextFileSync(stack.archConfig);
  Deno.writeTextFileSync(stack.archConfig, JSON.stringify({ ...JSON.parse(text), ...fields }));
  try {
    await fn();
  } finally {
    Deno.writeTextFileSync(stack.archConfig, text);
  }
}

/**
 * Rounds of `remove(root)` (removing key `moby/job` below `root`) while `tenant_tools swap`
 * exchanges `root/moby` with a link to `victim`, which holds a `job/keep` of its own: how many
 * rounds lost the victim's file.
 */
async function removalRaceRounds(
  root: string,
  victim: string,
  remove: (root: string) => void,
  tried = 150,
): Promise<{ tried: number; lost: number }> {
  let lost = 0;
  for (let round = 0; round < tried; round++) {
    Deno.mkdirSync(`${root}/moby/job/ckpt-1`, { recursive: true, mode: 0o700 });
    Deno.writeTextFileSync(`${root}/moby/job/ckpt-1/pages.img`, "x");
    Deno.mkdirSync(`${victim}/job`, { recursive: true, mode: 0o700 });
    Deno.writeTextFileSync(`${victim}/job/keep`, "keep");
    Deno.symlinkSync(victim, `${root}/swap`);
    const swapper = new Deno.Command(TOOLS, { args: ["swap", `${root}/moby`, `${root}/swap`] }).spawn();
    try {
      await new Promise((r) => setTimeout(r, 2));
      try {
        remove(root);
      } catch { /* refused (a link met on the way): nothing followed */ }
    } finally {
      swapper.kill("SIGKILL");
      await swapper.status;
    }
    if (!exists(`${victim}/job/keep`)) lost++;
    for (const p of [`${root}/moby`, `${root}/swap`, victim]) Deno.removeSync(p, { recursive: true });
  }
  return { tried, lost };
}

stackTest("a hostile tenant", async (t, stack: EmbeddedStack) => {
  await prepare();
  try {
    await t.step("finding 1: a root inside another job's work directory is refused, swap or not", async () => {
      // Job A: its work directory is the tenant's; it swaps a directory and a link to "/" there, forever.
      const keyA = uniqueName("tenant-a");
      const a = uniqueName("tenant-a");
      await stack.docker(
        archDockerRun(a, keyA, [...sharedEnv(), ...tools], [
          "sh",
          "-c",
          "mkdir -p /work/moby && ln -s / /work/link && exec /tools/tenant_tools swap /work/moby /work/link",
        ]),
      );
      const workA = `${SHARED}/work/moby/${keyA}`;
      await eventually("job A's swap running", () => exists(`${workA}/link`) || undefined);
      ok(await toolRunning(stack, a), "the tenant's swap loop runs");
      for (let i = 0; i < 3; i++) {
        for (const path of [workA, `${workA}/moby`, `${SHARED}/work`, `${SHARED}/checkpoint/moby`]) {
          for (const variable of ["ARCH_SHAREDFS_HOST_PATH", "ARCH_CHECKPOINT_HOST_PATH"]) {
            const env = variable === "ARCH_SHAREDFS_HOST_PATH" ? sharedEnv(path) : ["--env", `${variable}=${path}`];
            const r = await stack.docker(archDockerRun(uniqueName("tenant-b"), uniqueName("k"), env, ["true"], false), {
              check: false,
            });
            ok(r.code !== 0, `${variable}=${path} refused`);
            ok(r.stderr.includes("is not one of the roots the admin allows"), r.stderr);
          }
        }
      }
      // ARCH created nothing in job A's work directory.
      const names = [...Deno.readDirSync(workA)].map((e) => e.name).sort();
      assertEquals(names, ["link", "moby"]);
      canaryIntact();
      await stack.docker(["rm", "-f", a]);
    });

    await t.step(
      "findings 2 and 3: removing a finished job's files never leaves them, whatever a twin swaps",
      async () => {
        await withConfig(stack, { removeWorkdirOnSuccess: true }, async () => {
          for (let round = 0; round < 6; round++) {
            const key = uniqueName("tenant-rm");
            const workdir = `${SHARED}/work/moby/${key}`;
            // The twin (same key, so the same work directory) exchanges a full directory with a link
            // to the host's canary while the job ends with exit code 0 and ARCH removes the work directory.
            const twin = uniqueName("tenant-twin");
            await stack.docker(
              archDockerRun(twin, key, [...sharedEnv(), ...tools], [
                "sh",
                "-c",
                `mkdir -p d/e && for i in 1 2 3 4 5 6 7 8; do echo x > d/e/f$i; done && ln -s ${CANARY} l && ` +
                "exec /tools/tenant_tools swap d l",
              ]),
            );
            await eventually("the twin's files", () => exists(`${workdir}/l`) || undefined);
            ok(await toolRunning(stack, twin), "the twin's swap loop runs");
            const job = uniqueName("tenant-job");
            await stack.docker(
              archDockerRun(job, key, sharedEnv(), ["workload", "--interval-ms", "20", "--exit-after", "3"], false),
            );
            await stack.docker(["rm", job]);
            await eventually(
              "the finished job's work directory removed",
              () => exists(workdir) ? undefined : true,
              30_000,
            );
            await stack.docker(["rm", "-f", twin]);
            canaryIntact();
          }
        });
      },
    );

    await t.step("finding 3: a key's removal from descriptors, against an exchange loop on its path", async () => {
      // The store's own removal (a job's checkpoints after exit 0), attacked directly: a process
      // exchanges the key's scope directory with a link to a host directory that has a "job" too.
      const root = Deno.makeTempDirSync({ dir: base, prefix: "store-" });
      const victim = `${base}/victim-scope`;
      Deno.chmodSync(root, 0o700);
      const { KeyStore } = await import("../../src/store/store.ts");
      const rounds = await removalRaceRounds(root, victim, (r) => new KeyStore(r, "moby", "job").removeAll());
      assertEquals(rounds.lost, 0, `the host directory lost its files in ${rounds.lost} of ${rounds.tried} rounds`);
      canaryIntact();
    });

    await t.step("finding 4: another key's checkpoint directory is not a root", async () => {
      const victim = uniqueName("tenant-victim");
      const name = uniqueName("tenant-victim");
      await stack.docker(archDockerRun(name, victim));
      await waitTicks(stack, name, 3);
      const r = await archCli(stack, ["checkpoint", "--leave-running", await fullId(stack, name)]);
      assertEquals(r.code, 0, r.stdout + r.stderr);
      const current = Deno.readLinkSync(`${stack.checkpointRoot}/moby/${victim}/current`);
      for (const path of [`${stack.checkpointRoot}/moby/${victim}/current`, `${stack.checkpointRoot}/moby`]) {
        const bad = await stack.docker(
          archDockerRun(
            uniqueName("tenant-x"),
            victim,
            ["--env", `ARCH_CHECKPOINT_HOST_PATH=${path}`],
            ["true"],
            false,
          ),
          { check: false },
        );
        ok(bad.code !== 0 && bad.stderr.includes("is not one of the roots the admin allows"), bad.stderr);
      }
      assertEquals(Deno.readLinkSync(`${stack.checkpointRoot}/moby/${victim}/current`), current, "victim's kept");
      await stack.docker(["rm", "-f", name]);
    });

    await t.step("finding 5: the size limit stops the writer at the limit, the container runs on", async () => {
      const small = stack.extraCheckpointRoot;
      Deno.mkdirSync(small, { recursive: true, mode: 0o700 });
      await mustRun({ cmd: "mount", args: ["-t", "tmpfs", "-o", "size=160m,mode=0700", "tmpfs", small] });
      try {
        /** A job with a layer of `mb` random MiB, checkpointed: ARCH's answer, and the job still running after it. */
        const checkpointBigLayer = async (mb: number, key = uniqueName("tenant-big")) => {
          const name = uniqueName("tenant-big");
          await stack.docker(
            archDockerRun(name, key, ["--env", `ARCH_CHECKPOINT_HOST_PATH=${small}`], [
              "sh",
              "-c",
              `dd if=/dev/urandom of=/big bs=1M count=${mb} 2>/dev/null && exec workload --interval-ms 50`,
            ]),
          );
          await waitTicks(stack, name, 3);
          const r = await archCli(stack, ["checkpoint", await fullId(stack, name)]);
          const before = (await dockerProgress(stack, name)).lastTick;
          await waitTicks(stack, name, before + 3); // still running
          await stack.docker(["rm", "-f", name]);
          return r;
        };
        await withConfig(stack, { maxCheckpointBytes: 50 * 2 ** 20, checkpointReserveBytes: 0 }, async () => {
          const key = uniqueName("tenant-big");
          const r = await checkpointBigLayer(300, key);
          assertEquals(r.code, 1, r.stdout);
          ok(r.stdout.includes("the writable layer reached the") && r.stdout.includes("maxCheckpointBytes"), r.stdout);
          ok(!/No space left/i.test(r.stdout), "stopped by ARCH, not by a full disk");
          assertEquals([...Deno.readDirSync(`${small}/moby/${key}`)].filter((e) => e.name !== ".claim").length, 0);
        });
        // The reserve: no checkpoint takes the root's last free bytes.
        await withConfig(stack, { checkpointReserveBytes: 150 * 2 ** 20 }, async () => {
          const r = await checkpointBigLayer(20);
          assertEquals(r.code, 1, r.stdout);
          ok(r.stdout.includes("checkpointReserveBytes"), r.stdout);
        });
      } finally {
        await runCommand({ cmd: "umount", args: [small] });
      }
    });

    await t.step("finding 6: a refused create does not write the tenant's value whole into arch.log", async () => {
      const before = Deno.statSync(stack.archLog).size;
      const huge = "x".repeat(120_000);
      const r = await stack.docker(archDockerRun(uniqueName("tenant-log"), huge, [], ["true"], false), {
        check: false,
      });
      ok(r.code !== 0, "refused");
      const grown = Deno.statSync(stack.archLog).size - before;
      ok(grown < 16_384, `arch.log grew by ${grown} bytes for one refused docker run`);
    });

    await t.step("finding 8: a FIFO planted as a manifest does not hang the restore", async () => {
      const key = uniqueName("tenant-fifo");
      const name = uniqueName("tenant-fifo");
      await stack.docker(archDockerRun(name, key));
      await waitTicks(stack, name, 3);
      assertEquals((await archCli(stack, ["checkpoint", await fullId(stack, name)])).code, 0);
      const current = `${stack.checkpointRoot}/moby/${key}/current`;
      Deno.removeSync(`${current}/manifest.json`);
      await mustRun({ cmd: "mkfifo", args: ["-m", "0600", `${current}/manifest.json`] });
      const again = uniqueName("tenant-fifo");
      const started = Date.now();
      await stack.docker(archDockerRun(again, key));
      const p = await waitTicks(stack, again, 2);
      assertEquals(p.starts, 1, "started fresh: the planted checkpoint is not restored");
      ok(Date.now() - started < 30_000, `docker run took ${Date.now() - started} ms`);
      await stack.docker(["rm", "-f", name, again]);
    });

    await t.step("many creates of one key at once: one restores, the others start fresh, none hangs", async () => {
      const key = uniqueName("tenant-many");
      const first = uniqueName("tenant-many");
      await stack.docker(archDockerRun(first, key));
      await waitTicks(stack, first, 5);
      assertEquals((await archCli(stack, ["checkpoint", await fullId(stack, first)])).code, 0);
      const names = Array.from({ length: 6 }, () => uniqueName("tenant-many"));
      const runs = await Promise.all(names.map((n) => stack.docker(archDockerRun(n, key), { check: false })));
      assertEquals(runs.map((r) => r.code), names.map(() => 0), runs.map((r) => r.stderr).join("\n"));
      const progress = await Promise.all(names.map((n) => waitTicks(stack, n, 2)));
      assertEquals(progress.filter((p) => p.starts === 0).length, 1, JSON.stringify(progress));
      await stack.docker(["rm", "-f", first, ...names]);
    });

    await t.step("a process tree that forks during the dump is saved and resumes", async () => {
      const key = uniqueName("tenant-forks");
      const name = uniqueName("tenant-forks");
      await stack.docker(
        archDockerRun(name, key, tools, ["sh", "-c", "/tools/tenant_tools forks & exec workload --interval-ms 50"]),
      );
      await waitTicks(stack, name, 5);
      ok(await toolRunning(stack, name), "the fork loop runs");
      const r = await archCli(stack, ["checkpoint", await fullId(stack, name)]);
      assertEquals(r.code, 0, r.stdout + r.stderr);
      const saved = (await dockerProgress(stack, name)).lastTick;
      const again = uniqueName("tenant-forks");
      await stack.docker(
        archDockerRun(again, key, tools, ["sh", "-c", "/tools/tenant_tools forks & exec workload --interval-ms 50"]),
      );
      const p = await waitTicks(stack, again, saved + 5);
      assertEquals(p.starts, 0, "restored");
      ok(await toolRunning(stack, again), "the fork loop runs on after the restore");
      await stack.docker(["rm", "-f", name, again]);
    });

    await t.step("a layer of 100,000 files and 400 nested directories is saved and comes back", async () => {
      const key = uniqueName("tenant-files");
      const name = uniqueName("tenant-files");
      const cmd = ["sh", "-c", "/tools/tenant_tools files /data 100000 400 && exec workload --interval-ms 50"];
      await stack.docker(archDockerRun(name, key, tools, cmd));
      try {
        await eventually("the files made and the workload ticking", async () => {
          const p = await dockerProgress(stack, name);
          return p.lastTick >= 3 ? p : undefined;
        }, 180_000);
      } catch (error) {
        const logs = await stack.docker(["logs", "--tail", "5", name], { check: false });
        const state = await stack.docker(["inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", name], {
          check: false,
        });
        throw new Error(`${(error as Error).message}: ${state.stdout.trim()} ${logs.stdout}${logs.stderr}`);
      }
      const r = await archCli(stack, ["checkpoint", await fullId(stack, name)]);
      assertEquals(r.code, 0, r.stdout + r.stderr);
      const again = uniqueName("tenant-files");
      await stack.docker(archDockerRun(again, key, tools, cmd));
      const p = await waitTicks(stack, again, 5);
      assertEquals(p.starts, 0, "restored");
      const count = await stack.docker(["exec", again, "sh", "-c", "find /data -type f | wc -l"]);
      assertEquals(count.stdout.trim(), "100001");
      const deep = await stack.docker(["exec", again, "sh", "-c", `cat /data/${"deep/".repeat(400)}bottom`]);
      assertEquals(deep.stdout, "bottom\n");
      await stack.docker(["rm", "-f", name, again]);
    });
  } finally {
    await runCommand({ cmd: "umount", args: ["-l", SHARED] });
  }
}, { archConfigExtra: { sharedFsRoots: [SHARED] } });
