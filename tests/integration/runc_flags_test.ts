/**
 * The parser's flag table against both runc generations on this machine (the system's runc
 * 1.1 and the runc 1.3 that install.ts --test-engines unpacks): every command that
 * `runc --help` lists and every flag that `runc <command> --help` prints must be known, with
 * the right kind (value or boolean). Needs the runcs (the CI installs them); elsewhere the
 * missing ones are ignored.
 */
import { deepEqual as assertEquals } from "node:assert/strict";
import { COMMAND_ALIASES, COMMAND_FLAGS, findFlag, GLOBAL_FLAGS } from "../../src/runc/flags.ts";
import { TEST_ENGINES_DIR } from "../../scripts/setup/plan.ts";

const exists = (path: string) => {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
};

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

/** Command names from the COMMANDS section of `runc --help`. */
function helpCommands(text: string): string[] {
  const section = text.split("\nCOMMANDS:\n")[1]?.split("\n\n")[0] ?? "";
  return section.split("\n").map((l) => /^\s+([a-z][\w-]*)(?:,\s*[a-z]+)?\s/.exec(l)?.[1]).filter((c) =>
    c !== undefined
  );
}

async function help(RUNC: string, args: string[]): Promise<string> {
  const out = await new Deno.Command(RUNC, { args: [...args, "--help"], stdout: "piped", stderr: "piped" }).output();
  return new TextDecoder().decode(out.stdout);
}

for (const RUNC of ["/usr/sbin/runc", `${TEST_ENGINES_DIR}/usr/sbin/runc`]) {
  Deno.test({
    name: `the flag table covers ${RUNC}`,
    ignore: !exists(RUNC) && Deno.env.get("CI") !== "true",
    fn: async (t) => {
      const top = await help(RUNC, []);
      await t.step("commands", () => {
        const known = new Set([...Object.keys(COMMAND_FLAGS), ...Object.keys(COMMAND_ALIASES)]);
        const listed = helpCommands(top);
        assertEquals(listed.length > 5, true, "commands read from runc --help");
        assertEquals(listed.filter((c) => !known.has(c)), [], "commands the parser does not know");
      });
      await t.step("global flags", () => {
        for (const flag of helpFlags(top)) {
          const spec = findFlag(GLOBAL_FLAGS, flag.name);
          assertEquals(spec !== undefined, true, `global --${flag.name} missing`);
          assertEquals(spec!.kind !== "bool", flag.takesValue, `global --${flag.name} kind`);
        }
      });
      for (const command of Object.keys(COMMAND_FLAGS).filter((c) => c !== "help" && c !== "init")) {
        await t.step(command, async () => {
          const specs = COMMAND_FLAGS[command]!;
          const printed = helpFlags(await help(RUNC, [command]));
          const allHidden = command === "kill"; // runc >= 1.2 no longer prints kill --all
          if (specs.length > 0 && !allHidden) {
            assertEquals(printed.length > 0, true, `no flags read from runc ${command} --help`);
          }
          for (const flag of printed) {
            if (flag.name === "help") continue;
            const spec = findFlag(specs, flag.name);
            assertEquals(spec !== undefined, true, `${command} --${flag.name} missing`);
            assertEquals(spec!.kind !== "bool", flag.takesValue, `${command} --${flag.name} kind`);
            for (const alias of flag.aliases) {
              assertEquals(spec!.aliases?.includes(alias), true, `${command} -${alias}`);
            }
          }
        });
      }
    },
  });
}
