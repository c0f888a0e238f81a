/**
 * `dist/arch-runc` is fail-open: when ARCH cannot run at all (Deno or the bundle missing, a
 * chunk of the bundle missing or corrupt), a call still reaches the real runc, with runc's
 * own output and exit status, nothing added on stdout or stderr, and runc run once.
 *
 * Each case writes a launcher (the build's own `launcherScript`/`runcShim`) into a temporary
 * directory, beside a copy of the built bundle (`dist/lib`) damaged as the case says.
 * Needs the built dist/ and runc; the `runc run` case also needs root and busybox.
 */

import { deepEqual as assertEquals, ok } from "node:assert/strict";
import { launcherScript, runcShim, STAGE0, staticClosure } from "../../scripts/build.ts";
import { FAST_PATH_FILE } from "../../src/wrapper/fast_path.ts";
import { Registry } from "../../src/registry/registry.ts";

const ROOT = new URL("../../", import.meta.url).pathname.replace(/\/$/, "");
const LIB = `${ROOT}/dist/lib`;
const RUNC = "/usr/sbin/runc";
const BUSYBOX = "/usr/bin/busybox";
const dec = new TextDecoder();

function missing(): string | undefined {
  for (const path of [`${LIB}/mod.js`, `${LIB}/${STAGE0}`, RUNC]) {
    try {
      Deno.statSync(path);
    } catch {
      return `${path} is missing (deno task build; install.ts)`;
    }
  }
  return undefined;
}
const why = missing();
if (why !== undefined && Deno.env.get("CI") === "true") throw new Error(`launcher tests cannot run in CI: ${why}`);
if (why !== undefined) console.error(`skipping launcher tests: ${why}`);

async function run(cmd: string, args: string[], env: Record<string, string> = {}) {
  const out = await new Deno.Command(cmd, { args, env, stdin: "null" }).output();
  return { code: out.code, signal: out.signal, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** Strips time stamps and argv[0] (runc prints the path it was invoked by). */
const normal = (r: Awaited<ReturnType<typeof run>>, self: string) => {
  const clean = (s: string) => s.replace(/time="[^"]*"/g, "time=T").replaceAll(self, RUNC);
  return { ...r, stdout: clean(r.stdout), stderr: clean(r.stderr) };
};

function writeExecutable(path: string, text: string): void {
  Deno.writeTextFileSync(path, text, { mode: 0o755 });
  Deno.chmodSync(path, 0o755);
}

/** A launcher lab: a copy of the bundle, an ARCH configuration, `arch` and `arch-runc`. */
class Lab {
  readonly dir = Deno.makeTempDirSync({ prefix: "arch-launcher-" });
  readonly lib = `${this.dir}/lib`;
  readonly runc = `${this.dir}/arch-runc`;
  readonly env: Record<string, string>;

  constructor(deno = Deno.execPath()) {
    Deno.mkdirSync(this.lib);
    for (const entry of Deno.readDirSync(LIB)) {
      if (entry.isFile) Deno.copyFileSync(`${LIB}/${entry.name}`, `${this.lib}/${entry.name}`);
    }
    const config = `${this.dir}/config.json`;
    // A runc that does not exist: ARCH warns about it in its log (which tells that ARCH ran)
    // and uses the default runc.
    Deno.writeTextFileSync(
      config,
      JSON.stringify({ runc: "/nonexistent/runc", stateDir: `${this.dir}/run`, logFile: `${this.dir}/arch.log` }),
    );
    Deno.chmodSync(config, 0o600);
    this.env = { ARCH_CONFIG: config };
    const arch = `${this.dir}/arch`;
    writeExecutable(arch, launcherScript(deno, this.lib, `${this.dir}/.deno`, arch));
    writeExecutable(this.runc, launcherScript(deno, this.lib, `${this.dir}/.deno`, arch, "runc-wrapper "));
  }

  /** A chunk `mod.js` imports statically. */
  staticChunk(): string {
    const chunk = staticClosure(this.lib, "mod.js").files.find((f) => f !== "mod.js");
    ok(chunk !== undefined, "mod.js imports no chunk statically");
    return `${this.lib}/${chunk}`;
  }

  /** Whether ARCH's code ran (it logged the configuration problem). */
  archRan(): boolean {
    try {
      return Deno.readTextFileSync(`${this.dir}/arch.log`).includes("ignoring configured runc");
    } catch {
      return false;
    }
  }

  [Symbol.dispose](): void {
    Deno.removeSync(this.dir, { recursive: true });
  }
}

/** What the call must look like: runc's own result, through ARCH or not as `throughArch` says. */
async function assertLikeRunc(lab: Lab, throughArch: boolean, launcher = lab.runc): Promise<void> {
  const root = `${lab.dir}/runc-root`;
  for (const args of [["--version"], ["--root", root, "state", "nope"], ["--root", root, "list"]]) {
    const direct = normal(await run(RUNC, args), launcher);
    const wrapped = normal(await run(launcher, args, lab.env), launcher);
    assertEquals(wrapped, direct, args.join(" "));
  }
  assertEquals(lab.archRan(), throughArch, throughArch ? "ARCH did not run" : "ARCH ran");
}

const DAMAGES: [string, (lab: Lab) => void][] = [
  ["intact (the normal path)", () => {}],
  ["Deno missing", (lab) => {
    writeExecutable(
      lab.runc,
      launcherScript("/nonexistent/deno", lab.lib, `${lab.dir}/.deno`, `${lab.dir}/arch`, "runc-wrapper "),
    );
  }],
  ["Deno not executable", (lab) => {
    const deno = `${lab.dir}/deno`;
    Deno.writeTextFileSync(deno, "");
    writeExecutable(lab.runc, launcherScript(deno, lab.lib, `${lab.dir}/.deno`, `${lab.dir}/arch`, "runc-wrapper "));
  }],
  ["stage 0 missing", (lab) => Deno.removeSync(`${lab.lib}/${STAGE0}`)],
  ["program missing", (lab) => Deno.removeSync(`${lab.lib}/mod.js`)],
  ["a chunk of the program missing", (lab) => Deno.removeSync(lab.staticChunk())],
  ["the program truncated", (lab) => {
    const text = Deno.readTextFileSync(`${lab.lib}/mod.js`);
    Deno.writeTextFileSync(`${lab.lib}/mod.js`, text.slice(0, text.length / 2));
  }],
  [
    "a chunk that throws when loaded",
    (lab) => Deno.writeTextFileSync(lab.staticChunk(), "throw new Error('corrupt');\n"),
  ],
  ["a chunk that is not JavaScript", (lab) => Deno.writeTextFileSync(lab.staticChunk(), "\u0000\u0001garbage ((\n")],
  ["a lib directory gone", (lab) => Deno.removeSync(lab.lib, { recursive: true })],
];

Deno.test({ name: "arch-runc reaches the real runc whatever is broken", ignore: why !== undefined }, async (t) => {
  for (const [name, damage] of DAMAGES) {
    await t.step(name, async () => {
      using lab = new Lab();
      damage(lab);
      await assertLikeRunc(lab, name.startsWith("intact"));
    });
  }
});

Deno.test({ name: "the compiled-mode shim fails open too", ignore: why !== undefined }, async (t) => {
  await t.step("ARCH present: the call goes through ARCH", async () => {
    using lab = new Lab();
    const shim = `${lab.dir}/shim`;
    writeExecutable(shim, runcShim(`${lab.dir}/arch`));
    await assertLikeRunc(lab, true, shim);
  });
  await t.step("ARCH missing: the call goes to runc", async () => {
    using lab = new Lab();
    const shim = `${lab.dir}/shim`;
    writeExecutable(shim, runcShim(`${lab.dir}/no-arch`));
    await assertLikeRunc(lab, false, shim);
  });
});

Deno.test({ name: "the fallback never execs the launcher itself", ignore: why !== undefined }, async () => {
  using lab = new Lab();
  // arch-runc installed as the first runc candidate, its Deno gone: it must skip itself
  writeExecutable(
    lab.runc,
    launcherScript("/nonexistent/deno", lab.lib, `${lab.dir}/.deno`, `${lab.dir}/arch`, "runc-wrapper ", [
      lab.runc,
      RUNC,
    ]),
  );
  await assertLikeRunc(lab, false);
  // and with no runc at all it ends, silently, with 127
  writeExecutable(
    lab.runc,
    launcherScript("/nonexistent/deno", lab.lib, `${lab.dir}/.deno`, `${lab.dir}/arch`, "runc-wrapper ", [lab.runc]),
  );
  assertEquals(await run(lab.runc, ["--version"]), { code: 127, signal: null, stdout: "", stderr: "" });
});

function canRunContainers(): boolean {
  try {
    Deno.statSync(BUSYBOX);
    return Deno.uid() === 0;
  } catch {
    return false;
  }
}

Deno.test({
  name: "a container runs once, with its exit status, under a broken bundle",
  ignore: why !== undefined || !canRunContainers(),
}, async () => {
  using lab = new Lab();
  Deno.removeSync(lab.staticChunk());
  const bundle = `${lab.dir}/bundle`;
  const out = `${lab.dir}/out`;
  Deno.mkdirSync(`${bundle}/rootfs/bin`, { recursive: true });
  Deno.mkdirSync(out);
  Deno.copyFileSync(BUSYBOX, `${bundle}/rootfs/bin/busybox`);
  Deno.chmodSync(`${bundle}/rootfs/bin/busybox`, 0o755);
  for (const dir of ["proc", "dev", "sys", "out"]) Deno.mkdirSync(`${bundle}/rootfs/${dir}`);
  const spec = await run(RUNC, ["spec", "--bundle", bundle]);
  assertEquals(spec.code, 0, spec.stderr);
  const config = JSON.parse(Deno.readTextFileSync(`${bundle}/config.json`));
  config.process.terminal = false;
  config.process.args = ["/bin/busybox", "sh", "-c", "echo ran >> /out/runs; exit 7"];
  config.root = { path: "rootfs", readonly: false };
  config.mounts.push({ destination: "/out", type: "bind", source: out, options: ["rbind", "rw"] });
  Deno.writeTextFileSync(`${bundle}/config.json`, JSON.stringify(config));
  const id = `launcher-${crypto.randomUUID().slice(0, 8)}`;
  const result = await run(lab.runc, ["--root", `${lab.dir}/runc-root`, "run", "--bundle", bundle, id], lab.env);
  assertEquals(result, { code: 7, signal: null, stdout: "", stderr: "" });
  assertEquals(Deno.readTextFileSync(`${out}/runs`), "ran\n");
});

/**
 * A record of a restored container "rec" in the test's runc root, with its mark (`registry/registry.ts`): runc's
 * state of the id as restored ("restored"), replaced since (as runc does, by a rename), absent, or the mark a
 * symbolic link to it.
 */
function restoredRecord(lab: Lab, state: "restored" | "replaced" | "absent" | "symlink-mark"): void {
  const registry = new Registry(`${lab.dir}/run`);
  const runcState = `${lab.dir}/runc-root/rec/state.json`;
  Deno.mkdirSync(`${lab.dir}/runc-root/rec`, { recursive: true });
  if (state !== "absent") Deno.writeTextFileSync(runcState, "{}");
  registry.put({
    namespace: "runc-root",
    id: "rec",
    root: `${lab.dir}/runc-root`,
    bundle: "/nonexistent",
    key: "k",
    createdAt: new Date().toISOString(),
    restored: true,
  });
  const mark = registry.restoredMark("runc-root", "rec");
  if (state === "replaced") {
    Deno.writeTextFileSync(`${runcState}.new`, "{}");
    Deno.renameSync(`${runcState}.new`, runcState);
  }
  if (state === "symlink-mark") {
    Deno.removeSync(mark);
    Deno.symlinkSync(runcState, mark);
  }
}

Deno.test(
  { name: "calls ARCH passes on unchanged skip Deno (the fast path)", ignore: why !== undefined },
  async (t) => {
    const setup = (lab: Lab) => {
      const root = `${lab.dir}/runc-root`;
      Deno.mkdirSync(root, { recursive: true });
      Deno.writeTextFileSync(`${root}/${FAST_PATH_FILE}`, `${RUNC}\n${lab.dir}/run\n`, { mode: 0o600 });
      return root;
    };
    const same = async (lab: Lab, args: string[]) => {
      const direct = normal(await run(RUNC, args), lab.runc);
      const wrapped = normal(await run(lab.runc, args, lab.env), lab.runc);
      assertEquals(wrapped, direct, args.join(" "));
    };

    await t.step("state, list, kill, and a start or delete of a container ARCH does not know: runc alone", async () => {
      using lab = new Lab();
      const root = setup(lab);
      // a stray restored mark without a record speaks for nothing
      Deno.mkdirSync(`${lab.dir}/run/registry/runc-root`, { recursive: true });
      Deno.writeTextFileSync(`${lab.dir}/run/registry/runc-root/nope.restored`, "");
      for (
        const args of [
          ["--root", root, "state", "nope"],
          [`--root=${root}/`, "list"],
          ["--root", root, "kill", "nope"],
          ["--root", root, "start", "nope"],
        ]
      ) {
        await same(lab, args);
      }
      await same(lab, ["--log", `${lab.dir}/log`, "--log-format", "json", "--root", root, "delete", "--force", "nope"]);
      assertEquals(lab.archRan(), false, "ARCH ran");
    });

    for (
      const [name, args, prepare] of [
        ["a delete of a container ARCH has a record of", ["delete", "rec"], (lab: Lab) => {
          Deno.mkdirSync(`${lab.dir}/run/registry/runc-root`, { recursive: true });
          Deno.writeTextFileSync(`${lab.dir}/run/registry/runc-root/rec.json`, "{}");
        }],
        ["a create", ["create", "--bundle", "/nonexistent", "c1"], () => {}],
        ["a start of a container ARCH has a record of", ["start", "rec"], (lab: Lab) => {
          Deno.mkdirSync(`${lab.dir}/run/registry/runc-root`, { recursive: true });
          Deno.writeTextFileSync(`${lab.dir}/run/registry/runc-root/rec.json`, "{}");
        }],
        ["a start of a restored container whose runc state was replaced since", ["start", "rec"], (lab: Lab) => {
          restoredRecord(lab, "replaced");
        }],
        ["a start of a restored container runc had no state of", ["start", "rec"], (lab: Lab) => {
          restoredRecord(lab, "absent");
        }],
        ["a start of a restored container whose mark is a symbolic link", ["start", "rec"], (lab: Lab) => {
          restoredRecord(lab, "symlink-mark");
        }],
        ["a global option it does not know", ["--unknown", "state", "nope"], () => {}],
        ["a note root does not own", ["state", "nope"], (lab: Lab) => {
          Deno.chownSync(`${lab.dir}/runc-root/${FAST_PATH_FILE}`, 65534, 65534);
        }],
        ["a note naming a relative runc", ["state", "nope"], (lab: Lab) => {
          Deno.writeTextFileSync(`${lab.dir}/runc-root/${FAST_PATH_FILE}`, `runc\n${lab.dir}/run\n`);
        }],
        ["a note that is a symbolic link", ["state", "nope"], (lab: Lab) => {
          const note = `${lab.dir}/runc-root/${FAST_PATH_FILE}`;
          Deno.renameSync(note, `${lab.dir}/note`);
          Deno.symlinkSync(`${lab.dir}/note`, note);
        }],
        ["a note naming a runc root does not own", ["state", "nope"], (lab: Lab) => {
          Deno.copyFileSync(RUNC, `${lab.dir}/runc-copy`);
          Deno.chownSync(`${lab.dir}/runc-copy`, 65534, 65534);
          Deno.writeTextFileSync(`${lab.dir}/runc-root/${FAST_PATH_FILE}`, `${lab.dir}/runc-copy\n${lab.dir}/run\n`);
        }],
        ["a note naming the launcher itself", ["state", "nope"], (lab: Lab) => {
          Deno.writeTextFileSync(`${lab.dir}/runc-root/${FAST_PATH_FILE}`, `${lab.runc}\n${lab.dir}/run\n`);
        }],
      ] as const
    ) {
      await t.step(`${name}: through ARCH`, async () => {
        using lab = new Lab();
        const root = setup(lab);
        prepare(lab);
        await run(lab.runc, ["--root", root, ...args], lab.env);
        assertEquals(lab.archRan(), true, "ARCH did not run");
      });
    }

    await t.step("the engine's start of a restored container: 0 without ARCH or runc (a no-op)", async () => {
      using lab = new Lab();
      const root = setup(lab);
      restoredRecord(lab, "restored");
      // runc itself would fail: the state it would read is not a container's
      assertEquals(await run(lab.runc, ["--root", root, "start", "rec"], lab.env), {
        code: 0,
        signal: null,
        stdout: "",
        stderr: "",
      });
      assertEquals(lab.archRan(), false, "ARCH ran");
    });

    await t.step(
      "the wrapper leaves the note at create, and removes it when the configuration has a problem",
      async () => {
        using lab = new Lab();
        const root = `${lab.dir}/runc-root`;
        Deno.mkdirSync(root);
        const config = lab.env.ARCH_CONFIG!;
        Deno.writeTextFileSync(
          config,
          JSON.stringify({ runc: RUNC, stateDir: `${lab.dir}/run`, logFile: `${lab.dir}/arch.log` }),
        );
        await run(lab.runc, ["--root", root, "create", "--bundle", "/nonexistent", "c1"], lab.env);
        const note = `${root}/${FAST_PATH_FILE}`;
        assertEquals(Deno.readTextFileSync(note), `${RUNC}\n${lab.dir}/run\n`);
        assertEquals(Deno.statSync(note).mode! & 0o777, 0o600);
        // runc ignores it
        await same(lab, ["--root", root, "list"]);
        Deno.writeTextFileSync(config, JSON.stringify({ runc: "/nonexistent/runc", stateDir: `${lab.dir}/run` }));
        await run(lab.runc, ["--root", root, "create", "--bundle", "/nonexistent", "c2"], lab.env);
        ok(!(await Deno.stat(note).then(() => true, () => false)), "the note is gone");
      },
    );
  },
);
