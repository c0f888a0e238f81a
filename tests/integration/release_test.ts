/**
 * The release artifact (`deno task release`) as a node gets it: installed from the one file
 * on a clean root (no network, no checkout, no Deno or npm cache visible), then used as the
 * engines' runtime to run, checkpoint and resume a container; and through the ECS/AWS Batch
 * userdata ARCH prints (download from a server, sha256, install, Docker's default runtime, the
 * watcher's unit). Also what a bad download or a foreign file in the way gets: one sentence,
 * nothing changed.
 */

import { deepEqual as assertEquals, ok } from "node:assert/strict";
import { release } from "../../scripts/release.ts";
import {
  ARCH,
  archDockerRun,
  ENGINES,
  eventually,
  ROOT,
  SKIP,
  startStack,
  uniqueName,
  withoutArchRuntime,
} from "./_env.ts";
import { buildTestImage } from "../harness/image.ts";
import { dockerProgress, fullId, parseProgress, waitTicks } from "./_workload.ts";
import { mustRun, runCommand } from "../../src/process/exec.ts";
import { ARCH_VERSION } from "../../src/version.ts";

const assertStringIncludes = (text: string, part: string) => ok(text.includes(part), `"${part}" not in: ${text}`);
const CLEAN_PATH = "PATH=/usr/sbin:/usr/bin:/sbin:/bin";
/** Where the release file installs on a node by default (README). */
const NODE_PREFIX = "/usr/local";
/** ARCH itself, installed on a node from the release file. */
const INSTALLED_ARCH = `${NODE_PREFIX}/bin/arch`;
/** A node's root PATH: /usr/local first, where the release file installs. */
const NODE_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/**
 * Runs `script` (sh, with positional arguments `args`) in a new mount and network namespace
 * where the checkout and Deno's caches are hidden under empty tmpfs mounts and the
 * environment is empty: what a freshly booted node without ARCH's sources has.
 */
function onCleanRoot(script: string, args: string[]) {
  const hidden = [ROOT, `${Deno.env.get("HOME") ?? "/root"}/.cache`].filter((d) => {
    try {
      return Deno.statSync(d).isDirectory;
    } catch {
      return false;
    }
  });
  const hide = hidden.map((d) => `mount -t tmpfs -o mode=0700 arch-hidden '${d}'`).join(" && ");
  return runCommand({
    cmd: "unshare",
    args: [
      "--mount",
      "--net",
      "--propagation",
      "private",
      "sh",
      "-c",
      `${hide} && exec env -i ${CLEAN_PATH} sh -c '${script}' sh "$@"`,
      "sh",
      ...args,
    ],
  });
}

Deno.test({
  name: "release artifact: installs on a clean root and runs, checkpoints and resumes a container",
  ignore: SKIP,
  sanitizeResources: false,
  sanitizeOps: false,
}, async (t) => {
  const work = Deno.makeTempDirSync({ prefix: "arch-release-test-" });
  try {
    const artifact = await release(`${work}/out`);
    const prefix = `${work}/root/usr/local`;

    await t.step("the .sha256 file verifies the artifact with sha256sum -c", async () => {
      const r = await runCommand({ cmd: "sha256sum", args: ["-c", `${artifact}.sha256`], cwd: `${work}/out` });
      assertEquals(r.code, 0, r.stdout + r.stderr);
    });

    await t.step("install without network, checkout or Deno cache; the commands run there", async () => {
      const r = await onCleanRoot(
        'sh "$1" install --prefix "$2" && "$2/bin/arch" --version && "$2/bin/arch" --help',
        [artifact, prefix],
      );
      assertEquals(r.code, 0, r.stdout + r.stderr);
      assertStringIncludes(r.stdout, `installed ARCH ${ARCH_VERSION}`);
      assertStringIncludes(r.stdout, "Usage: arch");
      for (const cmd of ["arch", "arch-runc"]) {
        const text = Deno.readTextFileSync(`${prefix}/bin/${cmd}`);
        ok(!text.includes(ROOT), `${cmd} refers to nothing in the checkout`);
        const info = Deno.statSync(`${prefix}/bin/${cmd}`);
        assertEquals([info.uid, info.mode! & 0o777], [0, 0o755]);
      }
      const again = await onCleanRoot('sh "$1" install --prefix "$2"', [artifact, prefix]);
      assertEquals(again.code, 0, again.stderr);
      assertStringIncludes(again.stdout, "already unpacked");
    });

    await t.step("a truncated download is refused before anything is written", async () => {
      const bytes = Deno.readFileSync(artifact);
      const damaged = `${work}/damaged.run`;
      Deno.writeFileSync(damaged, bytes.subarray(0, bytes.length - 4096));
      const other = `${work}/other/usr/local`;
      const r = await runCommand({ cmd: "sh", args: [damaged, "install", "--prefix", other] });
      assertEquals(r.code, 1);
      assertStringIncludes(r.stderr, "is damaged");
      assertEquals(r.stderr.trim().split("\n").length, 1, r.stderr);
      const left = [...Deno.readDirSync(`${other}/lib/arch`)].map((e) => e.name);
      assertEquals(left, [], "no version directory and no leftover unpacking directory");
      assertEquals([...Deno.readDirSync(`${other}/bin`)].length, 0);
    });

    await t.step("a file that is not ARCH's at the target is never overwritten", async () => {
      const other = `${work}/foreign/usr/local`;
      Deno.mkdirSync(`${other}/bin`, { recursive: true });
      Deno.writeTextFileSync(`${other}/bin/arch`, "#!/bin/sh\necho coreutils arch\n");
      const r = await runCommand({ cmd: "sh", args: [artifact, "install", "--prefix", other] });
      assertEquals(r.code, 1);
      assertStringIncludes(r.stderr, "is not ARCH's");
      assertEquals(Deno.readTextFileSync(`${other}/bin/arch`), "#!/bin/sh\necho coreutils arch\n");
      Deno.removeSync(`${other}/bin/arch`);
      Deno.symlinkSync("/usr/bin/true", `${other}/bin/arch`);
      const link = await runCommand({ cmd: "sh", args: [artifact, "install", "--prefix", other] });
      assertEquals(link.code, 1, "a link that leads out of ARCH's directory is not ARCH's");
      assertEquals(Deno.readLinkSync(`${other}/bin/arch`), "/usr/bin/true");
      const bad = await runCommand({ cmd: "sh", args: [artifact, "install", "--prefix", "usr/local"] });
      assertEquals(bad.code, 1);
      assertStringIncludes(bad.stderr, "is not an absolute path");
    });

    await t.step(
      "a node as the README sets it up: the .run file, arch install docker --default and containerd; finalize; " +
        "Docker and ctr jobs resume in new containers",
      async () => {
        // The node: engines on their default paths and ARCH on its own (/usr/local, /etc/arch,
        // /var/lib/arch, /var/log/arch private in the node), nothing but configuration files.
        const nodeSh = (scratch: string, script: string) =>
          mustRun({
            cmd: "nsenter",
            args: [`--mount=${scratch}/ns/mnt`, "--", "env", "-i", NODE_PATH, "sh", "-c", script, artifact],
            timeoutMs: 120_000,
          });
        await using stack = await startStack(ENGINES[0], {
          installedArch: true,
          prepare: async (scratch) => {
            // The README's three commands, as root on the node, before the engines start.
            await nodeSh(scratch, 'sh "$0" install && arch install docker --default && arch install containerd');
          },
        });
        const node = (args: string[]) => stack.run({ cmd: INSTALLED_ARCH, args, timeoutMs: 120_000 }, false);
        const daemon = JSON.parse(Deno.readTextFileSync(stack.dockerConfig));
        assertEquals([daemon["default-runtime"], daemon.runtimes?.arch?.path], ["arch", "/usr/local/bin/arch-runc"]);

        // A Docker job (no --runtime: ARCH is Docker's default) and a ctr job in a namespace of its own.
        const key = uniqueName("node"), ctrKey = uniqueName("nodectr"), ns = "batch";
        const first = uniqueName("a");
        const job = ["workload", "--interval-ms", "50", "--verify-every", "10"];
        // No --runtime: ARCH is Docker's default on this node.
        const dockerJob = (name: string) => withoutArchRuntime(archDockerRun(name, key, [], job));
        await stack.docker(dockerJob(first));
        const image = await buildTestImage(`${ROOT}/.cache/image`, `${ROOT}/tests/fixtures/workload.c`);
        await stack.ctr(["images", "import", image], { namespace: ns });
        const ctrJob = (id: string, log: string) =>
          stack.ctr([
            "run",
            "-d",
            "--runc-binary",
            "/usr/local/bin/arch-runc",
            "--log-uri",
            `file://${log}`,
            "--env",
            "ARCH_ENABLE=1",
            "--env",
            `ARCH_CHECKPOINT_ID=${ctrKey}`,
            "docker.io/library/arch-test:latest",
            id,
            ...job,
          ], { namespace: ns });
        const ctrFirst = uniqueName("c"), ctrFirstLog = `${stack.scratch}/${ctrFirst}.log`;
        await ctrJob(ctrFirst, ctrFirstLog);
        await waitTicks(stack, first, 10);
        const ctrTicks = async (log: string) => parseProgress(await Deno.readTextFile(log).catch(() => ""));
        await eventually("the ctr job's ticks", async () => (await ctrTicks(ctrFirstLog)).lastTick >= 10 || undefined);
        const dockerId = await fullId(stack, first);

        const ls = await node(["ls", "--json"]);
        assertEquals(ls.code, 0, ls.stderr);
        const rows = JSON.parse(ls.stdout) as { namespace: string; id: string; key: string; protection: string }[];
        assertEquals(
          rows.map((r) => [r.namespace, r.id, r.key, r.protection]).sort(),
          [["batch", ctrFirst, ctrKey, "protected"], ["moby", dockerId, key, "protected"]],
        );
        const doctor = await node(["doctor", "--json"]);
        const checks = (JSON.parse(doctor.stdout) as { checks: { name: string; status: string; detail: string }[] })
          .checks;
        const check = (name: string) => checks.find((c) => c.name === name);
        assertEquals(check("docker runtime")?.status, "ok", JSON.stringify(check("docker runtime")));
        ok(check("docker runtime")!.detail.includes("/usr/local/bin/arch-runc"), check("docker runtime")!.detail);
        assertEquals(check("containerd runtime")?.status, "ok", JSON.stringify(check("containerd runtime")));
        assertEquals(check("opted-in containers")?.detail, "2 running, all protected");

        // The spot notice.
        const fin = await node(["finalize"]);
        assertEquals(fin.code, 0, fin.stdout + fin.stderr);
        ok(/^finalize: 2 saved, 0 failed, 0 not started in /m.test(fin.stdout), fin.stdout);
        const before = await dockerProgress(stack, first);
        const ctrBefore = await ctrTicks(ctrFirstLog);
        assertEquals((await stack.docker(["inspect", "-f", "{{.State.Running}}", first])).stdout.trim(), "false");
        assertEquals((await node(["finalize", "--undo"])).code, 0);

        // The retried jobs: new containers, same keys, on the same node.
        const second = uniqueName("b");
        await stack.docker(dockerJob(second));
        const after = await waitTicks(stack, second, before.lastTick + 5);
        assertEquals([after.starts, after.firstTick], [0, before.lastTick + 1], "the Docker job resumed");
        await stack.ctr(["tasks", "delete", ctrFirst], { namespace: ns, check: false });
        const ctrSecond = uniqueName("c"), ctrSecondLog = `${stack.scratch}/${ctrSecond}.log`;
        await ctrJob(ctrSecond, ctrSecondLog);
        const ctrAfter = await eventually("the ctr job going on", async () => {
          const p = await ctrTicks(ctrSecondLog);
          return p.lastTick >= ctrBefore.lastTick + 5 ? p : undefined;
        });
        assertEquals([ctrAfter.starts, ctrAfter.ticks[0]], [0, ctrBefore.lastTick + 1], "the ctr job resumed");
        await stack.docker(["rm", "-f", first, second]);
      },
    );

    await t.step(
      "the ECS/AWS Batch userdata downloads, verifies and installs it, and makes arch Docker's default",
      async () => {
        const bytes = Deno.readFileSync(artifact);
        await using server = Deno.serve(
          { hostname: "127.0.0.1", port: 0, onListen: () => {} },
          (req) =>
            new URL(req.url).pathname === "/arch.run"
              ? new Response(bytes)
              : new Response("not found", { status: 404 }),
        );
        const url = `http://127.0.0.1:${server.addr.port}/arch.run`;
        const sha256 = Deno.readTextFileSync(`${artifact}.sha256`).split(" ")[0]!;
        const userdata = async (sum: string) => {
          const script = `${work}/userdata-${sum.slice(0, 8)}.sh`;
          const printed = await runCommand({
            cmd: ARCH,
            args: ["install", "--print", "ecs-userdata", "--artifact-url", url, "--artifact-sha256", sum],
          });
          assertEquals(printed.code, 0, printed.stderr);
          Deno.writeTextFileSync(script, printed.stdout);
          // A node's own paths, each on an empty tmpfs of a private mount namespace.
          const dirs = ["/usr/local", "/etc/docker", "/etc/systemd/system", "/var/lib/arch"];
          // A mount point must exist on the host: remember the ones made for this, to remove them after.
          const made = new Set<string>();
          for (let d of dirs) {
            for (
              ;
              d !== "/" && !(await Deno.stat(d).then(() => true, () => false));
              d = d.slice(0, d.lastIndexOf("/")) || "/"
            ) {
              made.add(d);
            }
          }
          try {
            return await runCommand({
              cmd: "unshare",
              args: [
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                `${dirs.map((d) => `mkdir -p ${d} && mount -t tmpfs arch-node ${d}`).join(" && ")} && ` +
                `sh "$0" && echo '#####' && cat /etc/docker/daemon.json && echo '#####' && ` +
                `cat /etc/systemd/system/arch-watch.service && echo '#####' && /usr/local/bin/arch --version`,
                script,
              ],
            });
          } finally {
            // Empty on the host (what the userdata wrote went to the tmpfs); deepest first.
            for (const d of [...made].sort((a, b) => b.length - a.length)) Deno.removeSync(d);
          }
        };
        const bad = await userdata("0".repeat(64));
        ok(bad.code !== 0, "a wrong sha256 stops the userdata");
        ok(!bad.stdout.includes("installed ARCH"), bad.stdout);
        const r = await userdata(sha256);
        assertEquals(r.code, 0, r.stdout + r.stderr);
        const [daemon, unit, version] = r.stdout.split("#####\n").slice(-3);
        const json = JSON.parse(daemon!);
        assertEquals([json["default-runtime"], json.runtimes?.arch?.path], ["arch", "/usr/local/bin/arch-runc"]);
        ok(unit!.includes("ExecStart=/usr/local/bin/arch watch --provider aws"), unit!);
        assertEquals(version!.trim(), ARCH_VERSION);
      },
    );

    await t.step("uninstall refuses while engines use ARCH, then removes the commands and the versions", async () => {
      // Engines still pointed at ARCH (an install record): refused, nothing removed.
      const record = `${work}/install.json`;
      Deno.writeTextFileSync(record, '{"entries":[{"target":"docker"}]}\n');
      const refused = await runCommand({
        cmd: "sh",
        args: [artifact, "uninstall", "--prefix", prefix, "--record", record],
      });
      assertEquals(refused.code, 1);
      assertStringIncludes(refused.stderr, "engines still use ARCH");
      ok(Deno.statSync(`${prefix}/bin/arch-runc`).isFile);
      Deno.removeSync(record);
      const r = await runCommand({ cmd: "sh", args: [artifact, "uninstall", "--prefix", prefix, "--record", record] });
      assertEquals(r.code, 0, r.stderr);
      assertEquals([...Deno.readDirSync(`${prefix}/bin`)].length, 0);
      ok(!(await Deno.stat(`${prefix}/lib/arch`).then(() => true, () => false)));
    });
  } finally {
    Deno.removeSync(work, { recursive: true });
  }
});
