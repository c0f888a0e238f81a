/**
 * `arch install containerd`, pure parts and planning against files in a temporary directory:
 * the drop-in's text for containerd 1.7 and 2.x, how the user's config.toml is read (imports,
 * globs, relative paths, which CRI table and runc options are copied), the one edit made to it
 * (adding the import) and its revert, and refusals that change nothing; a config.toml that is a
 * symlink is changed where it points and restored exactly, the link kept.
 */

import { deepEqual as assertEquals, ok, throws } from "node:assert/strict";
import { parse } from "smol-toml";
import {
  addImport,
  containerdDropIn,
  globMatches,
  parseContainerdMajor,
  planContainerd,
  removeImport,
  resolveImport,
  revertContainerdConfig,
} from "../../src/install/containerd.ts";
import { UsageError } from "../../src/util/errors.ts";
import { install, uninstall } from "../../src/cli/install.ts";
import { loadRecord } from "../../src/install/changes.ts";

const RUNC = "/usr/local/bin/arch-runc";
// deno-lint-ignore no-explicit-any
type T = Record<string, any>;

function tmp(): string {
  return Deno.makeTempDirSync({ prefix: "arch-install-ctd-unit-" });
}

Deno.test("containerdDropIn", async (t) => {
  await t.step("containerd 2.x (version 3): only the arch runtime, under io.containerd.cri.v1.runtime", () => {
    const text = containerdDropIn({
      archRunc: RUNC,
      configVersion: 3,
      makeDefault: true,
      runcRuntime: { runtime_type: "io.containerd.runc.v2", options: { SystemdCgroup: true, BinaryName: "/x/runc" } },
    });
    ok(text.startsWith("# Written by `arch install containerd`"));
    assertEquals(parse(text), {
      version: 3,
      plugins: {
        "io.containerd.cri.v1.runtime": {
          containerd: {
            default_runtime_name: "arch",
            runtimes: {
              arch: { runtime_type: "io.containerd.runc.v2", options: { SystemdCgroup: true, BinaryName: RUNC } },
            },
          },
        },
      },
    });
  });
  await t.step("containerd 1.7 (version 2): the user's whole CRI table plus arch", () => {
    const criBase = {
      sandbox_image: "p:1",
      containerd: { runtimes: { runc: { runtime_type: "io.containerd.runc.v2" } } },
    };
    const text = containerdDropIn({ archRunc: RUNC, configVersion: 2, makeDefault: false, criBase });
    const cri = (parse(text) as T).plugins["io.containerd.grpc.v1.cri"];
    assertEquals(cri.sandbox_image, "p:1");
    assertEquals(Object.keys(cri.containerd.runtimes).sort(), ["arch", "runc"]);
    assertEquals(cri.containerd.runtimes.arch.options, { BinaryName: RUNC });
    ok(!("default_runtime_name" in cri.containerd));
    ok(text.includes("carries a copy"), "the header says why");
  });
  await t.step("a relative arch-runc is refused", () => {
    throws(() => containerdDropIn({ archRunc: "arch-runc", configVersion: 3, makeDefault: false }), UsageError);
  });
});

Deno.test("imports: containerd's resolution and the minimal edit", async (t) => {
  await t.step("relative entries are taken from the importing file's directory, cleaned", () => {
    assertEquals(resolveImport("/etc/containerd/config.toml", "conf.d/*.toml"), "/etc/containerd/conf.d/*.toml");
    assertEquals(resolveImport("/etc/containerd/config.toml", "./x/../arch.toml"), "/etc/containerd/arch.toml");
    assertEquals(resolveImport("/etc/containerd/config.toml", "/opt/a.toml"), "/opt/a.toml");
  });
  await t.step("globs as filepath.Glob: * does not cross /", () => {
    ok(globMatches("/etc/containerd/conf.d/*.toml", "/etc/containerd/conf.d/arch.toml"));
    ok(!globMatches("/etc/containerd/*.toml", "/etc/containerd/conf.d/arch.toml"));
    ok(globMatches("/etc/containerd/conf.d/a?ch.toml", "/etc/containerd/conf.d/arch.toml"));
    ok(globMatches("/etc/c/[ab]rch.toml", "/etc/c/arch.toml"));
  });
  const cases: [string, string, string][] = [
    [
      "no imports, version line",
      'version = 2\nroot = "/r"\n[grpc]\n',
      'version = 2\nimports = ["/d/arch.toml"]\nroot = "/r"\n[grpc]\n',
    ],
    ["no version", '[grpc]\naddress = "x"\n', 'imports = ["/d/arch.toml"]\n[grpc]\naddress = "x"\n'],
    ["empty array", "version = 3\nimports = []\n", 'version = 3\nimports = ["/d/arch.toml"]\n'],
    ["one entry", 'imports = ["/a.toml"] # mine\n', 'imports = ["/a.toml", "/d/arch.toml"] # mine\n'],
    ["multi-line, trailing comma", 'imports = [\n  "/a.toml",\n]\n', 'imports = [\n  "/a.toml", "/d/arch.toml"\n]\n'],
    [
      "a table key named imports is not the top-level one",
      '[x]\nimports = ["/a"]\n',
      'imports = ["/d/arch.toml"]\n[x]\nimports = ["/a"]\n',
    ],
  ];
  for (const [name, before, after] of cases) {
    await t.step(`addImport: ${name}`, () => {
      const added = addImport(before, "/d/arch.toml");
      assertEquals(added, after);
      const a = parse(added) as T, b = parse(before) as T;
      assertEquals(a.imports, [...(b.imports ?? []), "/d/arch.toml"]);
      const { imports: _1, ...restA } = a;
      const { imports: _2, ...restB } = b;
      assertEquals(restA, restB);
    });
    await t.step(`removeImport undoes it: ${name}`, () => {
      const removed = removeImport(
        addImport(before, "/d/arch.toml"),
        "/d/arch.toml",
        !/^imports/m.test(before.split("[")[0]!),
      );
      assertEquals(parse(removed), parse(before));
    });
  }
  await t.step("revert of a config ARCH created that holds nothing else: removed", () => {
    assertEquals(revertContainerdConfig('version = 3\nimports = ["/d/arch.toml"]\n', "/d/arch.toml", true), null);
    assertEquals(
      revertContainerdConfig('version = 3\nimports = ["/d/arch.toml"]\nroot = "/r"\n', "/d/arch.toml", true),
      'version = 3\nroot = "/r"\n',
    );
  });
  await t.step("containerd --version", () => {
    assertEquals(parseContainerdMajor("containerd github.com/containerd/containerd 1.7.24~ds1 1.7.24~ds1-6\n"), 1);
    assertEquals(parseContainerdMajor("containerd github.com/containerd/containerd/v2 2.1.9+unknown \n"), 2);
    assertEquals(parseContainerdMajor("containerd containerd.io v2.0.4 1a43cb6\n"), 2);
    assertEquals(parseContainerdMajor("garbage"), undefined);
  });
});

Deno.test("planContainerd", async (t) => {
  const dir = tmp();
  const config = `${dir}/config.toml`;
  const dropIn = `${dir}/conf.d/arch.toml`;
  const base = { config, dropIn, archRunc: RUNC, makeDefault: false };
  const dropInOf = (plan: ReturnType<typeof planContainerd>) =>
    parse(plan.changes.find((c) => c.path === dropIn)!.after!) as T;
  try {
    await t.step("1.7: copies the CRI table of the last file that sets it, and runc's options", () => {
      Deno.writeTextFileSync(
        `${dir}/other.toml`,
        [
          "version = 2",
          '[plugins."io.containerd.grpc.v1.cri"]',
          '  sandbox_image = "from-other"',
          '[plugins."io.containerd.grpc.v1.cri".containerd]',
          '  default_runtime_name = "crun"',
          '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.crun]',
          '  runtime_type = "io.containerd.runc.v2"',
          '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.crun.options]',
          '  BinaryName = "/usr/bin/crun"',
          "  SystemdCgroup = true",
          "",
        ].join("\n"),
      );
      Deno.writeTextFileSync(
        config,
        'version = 2\nimports = ["other.toml"]\n[plugins."io.containerd.grpc.v1.cri"]\n  sandbox_image = "main"\n',
      );
      const plan = planContainerd({ ...base, containerdMajor: 1 });
      assertEquals(plan.configVersion, 2);
      const cri = dropInOf(plan).plugins["io.containerd.grpc.v1.cri"];
      assertEquals(cri.sandbox_image, "from-other", "containerd 1.7: the imported table replaced the main one");
      assertEquals(cri.containerd.runtimes.arch.options, { BinaryName: RUNC, SystemdCgroup: true });
      assertEquals(cri.containerd.default_runtime_name, "crun", "no --default: the user's default stays");
      assertEquals(plan.changes[0]!.path, config, "the import is added");
    });
    await t.step("2.x with a version 2 config: a sparse version 2 drop-in (2.x migrates it with the rest)", () => {
      const plan = planContainerd({ ...base, containerdMajor: 2, makeDefault: true });
      assertEquals(plan.configVersion, 2);
      const cri = dropInOf(plan).plugins["io.containerd.grpc.v1.cri"];
      assertEquals(Object.keys(cri), ["containerd"]);
      assertEquals(cri.containerd.default_runtime_name, "arch");
    });
    await t.step("an imports glob that covers the drop-in: config.toml is not touched", () => {
      Deno.writeTextFileSync(config, 'version = 3\nimports = ["conf.d/*.toml"]\n');
      const plan = planContainerd({ ...base, containerdMajor: 2 });
      assertEquals(plan.changes.map((c) => c.path), [dropIn]);
      assertEquals(plan.configVersion, 3);
      ok(dropInOf(plan).plugins["io.containerd.cri.v1.runtime"].containerd.runtimes.arch);
    });
    await t.step("no config.toml: created with version and imports (2 if containerd's version is unknown)", () => {
      Deno.removeSync(config);
      const plan = planContainerd({ ...base, containerdMajor: undefined });
      assertEquals(plan.changes[0]!.after, `version = 2\nimports = ["${dropIn}"]\n`);
      ok(plan.notes.some((n) => n.includes("version is unknown")));
      assertEquals(
        planContainerd({ ...base, containerdMajor: 2 }).changes[0]!.after,
        `version = 3\nimports = ["${dropIn}"]\n`,
      );
    });
    await t.step("refused with one sentence: invalid TOML, version 1", () => {
      Deno.writeTextFileSync(config, "version = 2\n[plugins\n");
      throws(
        () => planContainerd({ ...base, containerdMajor: 1 }),
        (e: Error) =>
          e instanceof UsageError && e.message.startsWith(`containerd config "${config}" is not valid TOML (`) &&
          !e.message.includes("\n"),
      );
      Deno.writeTextFileSync(config, '[plugins.cri]\n  sandbox_image = "x"\n');
      throws(() => planContainerd({ ...base, containerdMajor: 1 }), /containerd config migrate/);
    });
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("arch install containerd on a symlinked config.toml: the link's target changes, the link stays", async () => {
  const dir = tmp();
  const log = console.log;
  console.log = () => {};
  try {
    Deno.mkdirSync(`${dir}/shared`);
    Deno.mkdirSync(`${dir}/etc`);
    const real = `${dir}/shared/config.toml`;
    const link = `${dir}/etc/config.toml`;
    const original = 'version = 3\nroot = "/r"\n';
    Deno.writeTextFileSync(real, original);
    Deno.symlinkSync("../shared/config.toml", link);
    const record = `${dir}/install.json`;
    const opts = { containerdConfig: link, containerd: `${dir}/no-containerd`, archRunc: RUNC, record };
    assertEquals(await install(["containerd"], opts), 0);
    ok(Deno.lstatSync(link).isSymlink, "the link stays");
    // the import is the drop-in beside the link, as containerd resolves it from the path it is given
    assertEquals(Deno.readTextFileSync(real), `version = 3\nimports = ["${dir}/etc/conf.d/arch.toml"]\nroot = "/r"\n`);
    ok(Deno.readTextFileSync(`${dir}/etc/conf.d/arch.toml`).includes(RUNC));
    assertEquals(loadRecord(record).entries.find((e) => e.path === link)?.resolved, real);
    assertEquals(await uninstall(["containerd"], { record }), 0);
    ok(Deno.lstatSync(link).isSymlink);
    assertEquals(Deno.readTextFileSync(real), original, "the original bytes, exactly");
    assertEquals([...Deno.readDirSync(`${dir}/etc`)].map((e) => e.name), ["config.toml"], "the drop-in is gone");
  } finally {
    console.log = log;
    Deno.removeSync(dir, { recursive: true });
  }
});
