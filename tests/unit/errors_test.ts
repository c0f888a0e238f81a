/**
 * src/util/errors.ts: one error model. Every error class of ARCH is an ArchError (so it has a
 * stable code and an exit status), and `arch` ends with the status the error names.
 */
import { deepEqual as assertEquals, ok } from "node:assert/strict";
import { ArchError, errorMessage, PreconditionError, UsageError } from "../../src/util/errors.ts";

const ROOT = new URL("../../", import.meta.url).pathname;

function sources(dir: string): string[] {
  return [...Deno.readDirSync(`${ROOT}${dir}`)].flatMap((e) =>
    e.isDirectory ? sources(`${dir}/${e.name}`) : e.name.endsWith(".ts") ? [`${dir}/${e.name}`] : []
  );
}

Deno.test("every error class in src/ and hooks/ extends ArchError (only errors.ts extends Error)", () => {
  const direct = [...sources("src"), ...sources("hooks")].flatMap((file) =>
    [...Deno.readTextFileSync(`${ROOT}${file}`).matchAll(/class (\w+) extends (\w*Error)\b/g)]
      .filter((m) => m[2] === "Error" && file !== "src/util/errors.ts")
      .map((m) => `${file}: ${m[1]}`)
  );
  assertEquals(direct, []);
});

Deno.test("exit statuses: usage 2, precondition 3, other ARCH errors 1; the name is the class's", () => {
  assertEquals([new UsageError("x").exitCode, new UsageError("x").code], [2, "usage"]);
  assertEquals([new PreconditionError("x", "no-cloud").exitCode, new PreconditionError("x").code], [3, "precondition"]);
  const e = new ArchError("x", "some-code");
  assertEquals([e.exitCode, e.name, new UsageError("x").name], [1, "ArchError", "UsageError"]);
  ok(e instanceof Error);
});

Deno.test("errorMessage: an Error's message, anything else as a string", () => {
  assertEquals([errorMessage(new Error("boom")), errorMessage("text"), errorMessage(42)], ["boom", "text", "42"]);
});

Deno.test("runCli ends with the error's status: 2 for a config file that is not JSON (3 for a PreconditionError: spot_watch_cli_test.ts)", async () => {
  const { runCli } = await import("../../src/cli/main.ts");
  const dir = Deno.makeTempDirSync({ prefix: "arch-errors-" });
  try {
    Deno.writeTextFileSync(`${dir}/config.json`, "{ not json");
    const previous = Deno.env.get("ARCH_CONFIG");
    Deno.env.set("ARCH_CONFIG", `${dir}/config.json`);
    try {
      assertEquals(await runCli(["gc", "--keep", "many"]), 2);
    } finally {
      if (previous === undefined) Deno.env.delete("ARCH_CONFIG");
      else Deno.env.set("ARCH_CONFIG", previous);
    }
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
