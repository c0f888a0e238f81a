/**
 * The parser's flag table against the runc installed on this machine: every flag that
 * `runc <command> --help` prints must be known, with the right kind (value or boolean).
 * Needs runc on the machine (the CI installs it); elsewhere the test is ignored.
 */
import { deepEqual as assertEquals } from "node:assert/strict";
import { COMMAND_FLAGS, findFlag, GLOBAL_FLAGS } from "../../src/runc/spec.ts";

const RUNC = "/usr/sbin/runc";
const haveRunc = (() => {
  try {
    return Deno.statSync(RUNC).isFile;
  } catch {
    return false;
  }
})();

function helpFlags(text: string): { name: string; aliases: string[]; takesValue: boolean }[] {
  const out = [];
  for (const line of text.split("\n")) {
    const m = /^\s+(--?[a-z][\w-]*(?: value)?(?:, -{1,2}[\w-]+(?: value)?)*)\s{2,}/.exec(line);
    if (m === null) continue;
    const parts = m[1]!.split(", ").map((p) => p.trim());
    const names = parts.map((p) => p.replace(/ value$/, "").replace(/^-+/, ""));
    out.push({ name: names[0]!, aliases: names.slice(1), takesValue: parts[0]!.endsWith(" value") });
  }
  return out;
}

async function help(args: string[]): Promise<string> {
  const out = await new Deno.Command(RUNC, { args: [...args, "--help"], stdout: "piped", stderr: "piped" }).output();
  return new TextDecoder().decode(out.stdout);
}

Deno.test({
  name: "the flag table covers the installed runc",
  ignore: !haveRunc && Deno.env.get("CI") !== "true",
  fn: async (t) => {
    await t.step("global flags", async () => {
      for (const flag of helpFlags(await help([]))) {
        const spec = findFlag(GLOBAL_FLAGS, flag.name);
        assertEquals(spec !== undefined, true, `global --${flag.name} missing`);
        assertEquals(spec!.kind !== "bool", flag.takesValue, `global --${flag.name} kind`);
      }
    });
    for (const command of Object.keys(COMMAND_FLAGS).filter((c) => c !== "help" && c !== "init")) {
      await t.step(command, async () => {
        const specs = COMMAND_FLAGS[command]!;
        const printed = helpFlags(await help([command]));
        if (specs.length > 0) assertEquals(printed.length > 0, true, `no flags read from runc ${command} --help`);
        for (const flag of printed) {
          if (flag.name === "help") continue;
          const spec = findFlag(specs, flag.name);
          assertEquals(spec !== undefined, true, `${command} --${flag.name} missing`);
          assertEquals(spec!.kind !== "bool", flag.takesValue, `${command} --${flag.name} kind`);
          for (const alias of flag.aliases) assertEquals(spec!.aliases?.includes(alias), true, `${command} -${alias}`);
        }
      });
    }
  },
});
