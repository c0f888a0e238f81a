/**
 * `arch install docker`, pure parts: merging the `arch` runtime into a user's daemon.json
 * (other keys, order and indentation kept), refusals with one sentence, and the revert by
 * meaning used when the file changed since the install; a daemon.json that is a symlink is
 * changed where it points and restored exactly, the link kept.
 */

import { deepEqual as assertEquals, ok, throws } from "node:assert/strict";
import { parseDaemonJson, renderDaemonJson, revertDocker, withArchRuntime } from "../../src/install/docker.ts";
import { UsageError } from "../../src/util/errors.ts";
import { install, uninstall } from "../../src/cli/install.ts";
import { loadRecord } from "../../src/install/changes.ts";

const RUNC = "/usr/local/bin/arch-runc";
const P = "/etc/docker/daemon.json";

Deno.test("docker daemon.json", async (t) => {
  await t.step("merge keeps every other key and its order; --default sets default-runtime", () => {
    const v = withArchRuntime({ "log-level": "warn", runtimes: { nvidia: { path: "/n" } } }, RUNC, true, false, P);
    assertEquals(
      JSON.stringify(v),
      JSON.stringify({
        "log-level": "warn",
        runtimes: { nvidia: { path: "/n" }, arch: { path: RUNC } },
        "default-runtime": "arch",
      }),
    );
  });
  await t.step("already installed: the same value (nothing to do)", () => {
    const v = { runtimes: { arch: { path: RUNC } } };
    assertEquals(withArchRuntime(v, RUNC, false, false, P), v);
  });
  await t.step("another arch runtime: refused unless forced", () => {
    const v = { runtimes: { arch: { path: "/other" } } };
    throws(
      () => withArchRuntime(v, RUNC, false, false, P),
      (e: Error) => e instanceof UsageError && /--force/.test(e.message),
    );
    assertEquals(withArchRuntime(v, RUNC, false, true, P), { runtimes: { arch: { path: RUNC } } });
  });
  await t.step("invalid JSON or not an object: one sentence naming the file and the fix", () => {
    for (const text of ['{"a": 1,}', "[1]", "null"]) {
      throws(
        () => parseDaemonJson(P, text),
        (e: Error) =>
          e instanceof UsageError && e.message.startsWith(`docker config "${P}" is not`) &&
          e.message.endsWith("fix the file, then run arch install again") && !e.message.includes("\n"),
      );
    }
    assertEquals(parseDaemonJson(P, "  \n"), {});
  });
  await t.step("rendering keeps the file's indentation and final newline (or its absence)", () => {
    assertEquals(renderDaemonJson({ a: 1 }, '{\n\t"b": 2\n}'), '{\n\t"a": 1\n}');
    assertEquals(renderDaemonJson({ a: 1 }, '{\n    "b": 2\n}\n'), '{\n    "a": 1\n}\n');
    assertEquals(renderDaemonJson({ a: 1 }, null), '{\n  "a": 1\n}\n');
    assertEquals(renderDaemonJson({ a: 1 }, '{"b": 2}\n'), '{"a":1}\n');
  });
  await t.step("revert by meaning: arch runtime out, the previous default runtime back", () => {
    const original = '{"default-runtime": "runc", "runtimes": {"x": {"path": "/x"}}}';
    const current = JSON.stringify({
      "default-runtime": "arch",
      runtimes: { x: { path: "/x" }, arch: { path: RUNC } },
      "added-by-user-since": true,
    });
    assertEquals(JSON.parse(revertDocker(P, current, original)), {
      "default-runtime": "runc",
      runtimes: { x: { path: "/x" } },
      "added-by-user-since": true,
    });
    const noDefault = revertDocker(
      P,
      JSON.stringify({ "default-runtime": "arch", runtimes: { arch: { path: RUNC } } }),
      "{}",
    );
    assertEquals(JSON.parse(noDefault), {});
    ok(revertDocker(P, '{"a": 1}\n', null) === '{"a": 1}\n', "nothing of ARCH's: unchanged bytes");
  });
});

Deno.test("arch install docker on a symlinked daemon.json: the link's target changes, the link stays", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "arch-install-docker-link-" });
  const log = console.log;
  const lines: string[] = [];
  console.log = (s: string) => lines.push(s);
  try {
    Deno.mkdirSync(`${dir}/config`);
    Deno.mkdirSync(`${dir}/docker`);
    const real = `${dir}/config/daemon.json`;
    const link = `${dir}/docker/daemon.json`;
    const original = '{\n\t"log-level": "warn"\n}';
    Deno.writeTextFileSync(real, original);
    Deno.chmodSync(real, 0o640);
    Deno.symlinkSync(real, link);
    const record = `${dir}/install.json`;
    assertEquals(await install(["docker"], { dockerConfig: link, archRunc: RUNC, record, default: true }), 0);
    ok(Deno.lstatSync(link).isSymlink, "the link stays");
    assertEquals(Deno.readLinkSync(link), real);
    assertEquals(JSON.parse(Deno.readTextFileSync(real))["default-runtime"], "arch");
    assertEquals(Deno.statSync(real).mode! & 0o777, 0o640);
    assertEquals(loadRecord(record).entries.map((e) => [e.path, e.resolved]), [[link, real]]);
    ok(lines.some((l) => l.includes(`${link} is a symlink: changed ${real}, the link stays`)), lines.join("\n"));
    assertEquals(await uninstall(["docker"], { record }), 0);
    ok(Deno.lstatSync(link).isSymlink);
    assertEquals(Deno.readTextFileSync(real), original, "the original bytes, exactly");
    assertEquals(Deno.statSync(real).mode! & 0o777, 0o640);
    assertEquals([...Deno.readDirSync(`${dir}/config`)].map((e) => e.name), ["daemon.json"], "no temporary file");
  } finally {
    console.log = log;
    Deno.removeSync(dir, { recursive: true });
  }
});
