/**
 * The runc wrapper as a process: what an engine sees when it runs `dist/arch-runc`
 * must be what it sees from runc itself (output, exit status, pid, fds, environment,
 * signal dispositions, limits), and the wrapper itself never writes to stdout/stderr.
 */

import { deepEqual as assertEquals, ok } from "node:assert/strict";
import { ARCH_RUNC, RUNC, SKIP } from "./_env.ts";

const dec = new TextDecoder();

async function run(cmd: string, args: string[], env: Record<string, string> = {}) {
  const out = await new Deno.Command(cmd, { args, env, stdin: "null" }).output();
  return { code: out.code, signal: out.signal, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** A private ARCH host configuration naming `runc` as the "real runc". */
function configWith(dir: string, runc: string, mode = 0o644): string {
  const path = `${dir}/config-${crypto.randomUUID().slice(0, 6)}.json`;
  Deno.writeTextFileSync(path, JSON.stringify({ runc, stateDir: `${dir}/run`, logFile: `${dir}/arch.log` }));
  Deno.chmodSync(path, mode);
  return path;
}

/** Strips time stamps, and argv[0] (runc prints the path it was invoked by). */
const untimed = (s: string) =>
  s.replace(/time="[^"]*"/g, "time=T").replaceAll(ARCH_RUNC, RUNC).replaceAll("arch-runc ", "runc ");

Deno.test({ name: "arch-runc is indistinguishable from runc", ignore: SKIP }, async (t) => {
  const dir = Deno.makeTempDirSync({ prefix: "arch-wrapper-" });
  const root = `${dir}/runc-root`;
  const config = configWith(dir, RUNC);
  const env = { ARCH_CONFIG: config };
  try {
    const cases: [string, string[]][] = [
      ["--version", ["--version"]],
      ["help", ["--help"]],
      ["list (empty root)", ["--root", root, "list"]],
      ["list json", ["--root", root, "list", "--format", "json"]],
      ["state of a missing container", ["--root", root, "state", "nope"]],
      ["delete --force of a missing container", ["--root", root, "delete", "--force", "nope"]],
      ["unknown global flag", ["--nope", "state", "x"]],
      ["unknown command", ["frobnicate"]],
      ["wrong argument count", ["--root", root, "state"]],
      ["features", ["features"]],
    ];
    for (const [name, args] of cases) {
      await t.step(name, async () => {
        const direct = await run(RUNC, args);
        const wrapped = await run(ARCH_RUNC, args, env);
        const norm = (r: typeof direct) => ({ ...r, stdout: untimed(r.stdout), stderr: untimed(r.stderr) });
        assertEquals(norm(wrapped), norm(direct));
      });
    }
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test({ name: "the hand-off keeps pid, exit status, signals, fds and limits", ignore: SKIP }, async (t) => {
  const dir = Deno.makeTempDirSync({ prefix: "arch-wrapper-" });
  // /usr/bin/dash stands in for runc here: a root-owned ELF that lets us look at the
  // process runc would be. Its argv is not runc's, so the wrapper passes it through.
  const env = { ARCH_CONFIG: configWith(dir, "/usr/bin/dash") };
  try {
    await t.step("exit status", async () => {
      assertEquals((await run(ARCH_RUNC, ["-c", "exit 42"], env)).code, 42);
    });
    await t.step("death by signal", async () => {
      const r = await run(ARCH_RUNC, ["-c", "kill -TERM $$"], env);
      assertEquals([r.code, r.signal], [143, "SIGTERM"]);
    });
    await t.step("same pid as the process the engine started", async () => {
      const child = new Deno.Command(ARCH_RUNC, { args: ["-c", "echo $$"], env, stdout: "piped" }).spawn();
      const out = await child.output();
      assertEquals(dec.decode(out.stdout).trim(), String(child.pid));
    });
    await t.step("stdin, stdout and stderr are the caller's", async () => {
      const child = new Deno.Command(ARCH_RUNC, {
        args: ["-c", "read line; echo out:$line; echo err:$line >&2"],
        env,
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const w = child.stdin.getWriter();
      await w.write(new TextEncoder().encode("hello\n"));
      await w.close();
      const out = await child.output();
      assertEquals([dec.decode(out.stdout), dec.decode(out.stderr)], ["out:hello\n", "err:hello\n"]);
    });
    await t.step("no file descriptor beyond the caller's leaks into runc", async () => {
      const fds = (await run(ARCH_RUNC, ["-c", "ls /proc/self/fd"], env)).stdout.split("\n").filter(Boolean);
      const direct = (await run("/usr/bin/dash", ["-c", "ls /proc/self/fd"])).stdout.split("\n").filter(Boolean);
      assertEquals(fds, direct);
    });
    await t.step("signal dispositions and mask as the caller's (Deno ignores SIGPIPE)", async () => {
      const probe = ["-c", "grep -E '^Sig(Ign|Blk)' /proc/self/status"];
      assertEquals((await run(ARCH_RUNC, probe, env)).stdout, (await run("/usr/bin/dash", probe)).stdout);
    });
    await t.step("open-files limit as the caller's (Deno raises it)", async () => {
      const probe = ["-c", "ulimit -Sn 1000 && exec " + ARCH_RUNC + " -c 'ulimit -Sn'"];
      assertEquals((await run("/usr/bin/dash", probe, env)).stdout, "1000\n");
    });
    await t.step("environment as the caller's (no launcher variables)", async () => {
      const wrapped = (await run(ARCH_RUNC, ["-c", "env | sort"], { ...env, X_PROBE: "1" })).stdout;
      const direct = (await run("/usr/bin/dash", ["-c", "env | sort"], { ...env, X_PROBE: "1" })).stdout;
      const strip = (s: string) => s.split("\n").filter((l) => !l.startsWith("PWD=") && !l.startsWith("_=")).join("\n");
      assertEquals(strip(wrapped), strip(direct));
    });
    await t.step("Deno's variables keep the values the caller gave them (the launcher sets its own)", async () => {
      const callers = { ...env, DENO_DIR: "/callers/cache", DENO_NO_PROMPT: "" };
      const wrapped = (await run(ARCH_RUNC, ["-c", "env | grep ^DENO | sort"], callers)).stdout;
      assertEquals(wrapped, "DENO_DIR=/callers/cache\nDENO_NO_PROMPT=\n");
    });
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test(
  { name: "an unsafe host configuration is ignored without a word on stdout/stderr", ignore: SKIP },
  async () => {
    const dir = Deno.makeTempDirSync({ prefix: "arch-wrapper-" });
    try {
      // World-writable: anyone could point "runc" at their own program. ARCH falls back to
      // the default runc location and says why in its own log only.
      const config = configWith(dir, "/usr/bin/dash", 0o666);
      const wrapped = await run(ARCH_RUNC, ["--version"], { ARCH_CONFIG: config });
      assertEquals(wrapped, await run(RUNC, ["--version"]));
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
);

Deno.test(
  { name: "an unusable configured runc falls back to the default one, said in ARCH's log only", ignore: SKIP },
  async () => {
    const dir = Deno.makeTempDirSync({ prefix: "arch-wrapper-" });
    try {
      const config = configWith(dir, "/nonexistent/runc");
      const fallback = await run(ARCH_RUNC, ["--version"], { ARCH_CONFIG: config });
      assertEquals(fallback.code, 0);
      const archLog = Deno.readTextFileSync(`${dir}/arch.log`);
      ok(archLog.includes('ignoring configured runc: runc \\"/nonexistent/runc\\" does not exist'), archLog);
      assertEquals(fallback, await run(RUNC, ["--version"]));
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
);
