import { deepEqual as assertEquals, ok } from "node:assert/strict";
import { sharedFsConfig } from "../../src/config/container_config.ts";
import { containerPathProblem } from "../../src/sharedfs/container_path.ts";
import { hooksDFile, hostOwner, withArchHooks, withWorkdir } from "../../src/sharedfs/config_json.ts";
import { ensureWorkdir, removeWorkdir, workdirProblem } from "../../src/sharedfs/workdir.ts";

const ARCH = { path: "/usr/local/bin/arch", env: ["ARCH_CONFIG=/etc/arch/config.json"] };

Deno.test("ARCH_WORKDIR_CONTAINER_PATH: absolute, normalized, never / or a kernel file system", async (t) => {
  for (const good of ["/work", "/home/job/data", "/proc-data", "/devices"]) {
    await t.step(`accepts ${good}`, () => assertEquals(containerPathProblem(good), undefined));
  }
  const bad: [string, RegExp][] = [
    ["work", /not an absolute path/],
    ["/", /whole file system/],
    ["/proc", /under \/proc/],
    ["/proc/self", /under \/proc/],
    ["/sys/fs", /under \/sys/],
    ["/dev", /under \/dev/],
    ["/a/../proc", /normalized/],
    ["/a//b", /normalized/],
    ["/work/", /normalized/],
    ["/a\nb", /control characters/],
  ];
  for (const [path, why] of bad) {
    await t.step(`refuses ${JSON.stringify(path)}`, () => ok(why.test(containerPathProblem(path) ?? ""), path));
  }
});

Deno.test("shared-FS mode: both variables or neither, an allowed root, mounted now", async (t) => {
  const dir = Deno.makeTempDirSync({ prefix: "arch-sharedfs-" });
  Deno.chmodSync(dir, 0o755);
  const mounted = `36 1 0:40 / ${dir} rw,relatime - fuse.sshfs srv:/x rw\n`;
  const env = (vars: Record<string, string>) => new Map(Object.entries(vars));
  const host = { sharedFsRoots: [dir] };
  try {
    await t.step("local mode when neither is set", () => {
      assertEquals(sharedFsConfig(env({}), host, mounted), undefined);
    });
    await t.step("one without the other is refused, naming the missing one", () => {
      ok(/needs ARCH_WORKDIR_CONTAINER_PATH/.test(String(sharedFsConfig(env({ ARCH_SHAREDFS_HOST_PATH: dir }), host))));
      ok(
        /needs ARCH_SHAREDFS_HOST_PATH/.test(String(sharedFsConfig(env({ ARCH_WORKDIR_CONTAINER_PATH: "/w" }), host))),
      );
    });
    const both = (shared: string, work = "/work") =>
      env({ ARCH_SHAREDFS_HOST_PATH: shared, ARCH_WORKDIR_CONTAINER_PATH: work });
    await t.step("a bad container path is refused before the host path is looked at", () => {
      ok(
        /ARCH_WORKDIR_CONTAINER_PATH="\/proc\/x" is under \/proc/.test(
          String(sharedFsConfig(both(dir, "/proc/x"), host)),
        ),
      );
    });
    await t.step("a path outside the allowed roots is refused without saying whether it exists", () => {
      const msg = String(sharedFsConfig(both("/etc"), host, mounted));
      ok(/ARCH_SHAREDFS_HOST_PATH="\/etc" is not one of the roots the admin allows/.test(msg), msg);
      ok(/sharedFsRoots/.test(msg), msg);
      ok(/is not an absolute path/.test(String(sharedFsConfig(both("relative/x"), host, mounted))));
      ok(/\.\./.test(String(sharedFsConfig(both(`${dir}/../etc`), host, mounted))));
    });
    await t.step("nothing allowed by default", () => {
      ok(
        /not one of the roots the admin allows/.test(String(sharedFsConfig(both(dir), { sharedFsRoots: [] }, mounted))),
      );
    });
    await t.step("an allowed root that is not mounted is refused", () => {
      const msg = String(sharedFsConfig(both(dir), host, "1 0 0:1 / / rw - ext4 /dev/vda rw\n"));
      ok(/is not mounted on this node/.test(msg), msg);
    });
    await t.step("mounted and allowed: the real path, the mount point, the container path", () => {
      assertEquals(sharedFsConfig(both(dir), host, mounted), { root: dir, mountPoint: dir, containerPath: "/work" });
    });
    await t.step("a shared root others can write is refused", () => {
      Deno.chmodSync(dir, 0o777);
      ok(/writable by group or others/.test(String(sharedFsConfig(both(dir), host, mounted))));
      Deno.chmodSync(dir, 0o755);
    });
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("config.json: the work directory is a declared bind mount and the working directory", async (t) => {
  await t.step("added once, idempotent", () => {
    const spec = withWorkdir(
      { process: { cwd: "/" }, mounts: [{ destination: "/proc", type: "proc" }] },
      "/s/w",
      "/work",
    );
    if (typeof spec !== "object") throw new Error(String(spec));
    assertEquals(spec.process?.cwd, "/work");
    assertEquals((spec.mounts as unknown[]).at(-1), {
      destination: "/work",
      type: "bind",
      source: "/s/w",
      options: ["rbind", "rprivate", "nosuid", "nodev"],
    });
    assertEquals(withWorkdir(spec, "/s/w", "/work"), undefined);
  });
  await t.step("a container that mounts something else there is refused", () => {
    const spec = { mounts: [{ destination: "/work/", type: "bind", source: "/tenant" }] };
    ok(/already mounts "\/tenant"/.test(String(withWorkdir(spec, "/s/w", "/work"))));
  });
  await t.step("hooks: both stages once, beside the engine's own; hooks.d ones are recognised", () => {
    const engineHook = { path: "/usr/bin/docker-proxy-hook", args: ["x"] };
    const spec = withArchHooks({ hooks: { createRuntime: [engineHook] } }, ARCH, "moby")!;
    const hooks = spec.hooks as Record<string, { path: string; args: string[]; env: string[] }[]>;
    assertEquals(hooks.createRuntime!.length, 2);
    assertEquals(hooks.createRuntime![0], engineHook);
    assertEquals(hooks.poststop![0]!.args, ["arch", "hook", "poststop"]);
    assertEquals(hooks.poststop![0]!.env, ARCH.env);
    assertEquals(spec.annotations?.["org.arch.namespace"], "moby");
    assertEquals(withArchHooks(spec, ARCH, "moby"), undefined);
    const fromHooksD = JSON.parse(hooksDFile("/opt/arch/arch", "poststop")) as { hook: unknown; stages: string[] };
    const podman = withArchHooks({ hooks: { poststop: [fromHooksD.hook as never] } }, ARCH, "runc")!;
    assertEquals((podman.hooks as Record<string, unknown[]>).poststop!.length, 1);
  });
  await t.step("the work directory's owner is the process's user, through user namespace mappings", () => {
    assertEquals(hostOwner({}), { uid: 0, gid: 0 });
    assertEquals(hostOwner({ process: { user: { uid: 1000, gid: 1000 } } }), { uid: 1000, gid: 1000 });
    const unmapped = {
      process: { user: { uid: 5 } },
      linux: { uidMappings: [{ containerID: 1000, hostID: 1, size: 1 }] },
    };
    ok(/no identity on the host/.test(String(hostOwner(unmapped))));
  });
});

Deno.test("work directory: created root-owned above, the user's own at the key, never through a symlink", async (t) => {
  const dir = Deno.makeTempDirSync({ prefix: "arch-workdir-" });
  Deno.chmodSync(dir, 0o755);
  // "/" is always mounted: ensureWorkdir checks the real mount table
  const shared = { root: dir, mountPoint: "/", containerPath: "/work" };
  try {
    await t.step("created with the owner, checkpoint root beside it", () => {
      const path = ensureWorkdir(shared, "moby", "job1", { uid: 1234, gid: 5678 }, "img-a");
      assertEquals(path, `${dir}/work/moby/job1`);
      const info = Deno.lstatSync(path);
      assertEquals([info.uid, info.gid, info.mode! & 0o777], [1234, 5678, 0o700]);
      assertEquals(Deno.lstatSync(`${dir}/work/moby`).mode! & 0o777, 0o700);
      assertEquals(Deno.lstatSync(`${dir}/checkpoint`).uid, 0);
      assertEquals(workdirProblem(path, "/"), undefined);
    });
    await t.step("a symlink planted at the key is refused, not followed", () => {
      Deno.symlinkSync("/etc", `${dir}/work/moby/job2`);
      ok(/not a directory/.test(String((() => {
        try {
          ensureWorkdir(shared, "moby", "job2", { uid: 0, gid: 0 }, "img-a");
        } catch (e) {
          return (e as Error).message;
        }
      })())));
    });
    await t.step("another image asking for the key's work directory is refused, nothing changed", () => {
      Deno.writeTextFileSync(`${dir}/work/moby/job1/result`, "job1's");
      let refused = "";
      try {
        ensureWorkdir(shared, "moby", "job1", { uid: 0, gid: 0 }, "img-b");
      } catch (e) {
        refused = (e as Error).message;
      }
      ok(/belongs to a job of another image/.test(refused), refused);
      assertEquals(Deno.lstatSync(`${dir}/work/moby/job1`).uid, 1234, "not handed to the other job's user");
      assertEquals(ensureWorkdir(shared, "moby", "job1", { uid: 1234, gid: 5678 }, "img-a"), `${dir}/work/moby/job1`);
    });
    await t.step("removal renames away, then removes without following the tenant's symlinks", () => {
      const path = `${dir}/work/moby/job1`;
      Deno.writeTextFileSync(`${dir}/keep-me`, "x");
      Deno.symlinkSync(`${dir}/keep-me`, `${path}/link`);
      removeWorkdir({ root: dir, mountPoint: "/" }, "moby", "job1");
      assertEquals(Deno.readDirSync(`${dir}/work-image/moby`).toArray().map((e) => e.name), [], "image record gone");
      ok(!Deno.readDirSync(`${dir}/work/moby`).some((e) => e.name.includes("job1")));
      assertEquals(Deno.readTextFileSync(`${dir}/keep-me`), "x");
    });
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
