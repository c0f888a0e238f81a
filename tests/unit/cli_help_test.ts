/** Every operator command's `--help` ends with examples (what an operator copies first). */

import { ok } from "node:assert/strict";
import { buildProgram } from "../../src/cli/main.ts";

const MOD = new URL("../../mod.ts", import.meta.url).pathname;

Deno.test("every visible command's --help shows examples", async (t) => {
  const commands = buildProgram(() => {}).commands.filter((c) => !(c as unknown as { _hidden: boolean })._hidden);
  ok(commands.length >= 10, `${commands.length} commands`);
  for (const command of commands) {
    await t.step(command.name(), async () => {
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", MOD, command.name(), "--help"],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const text = new TextDecoder().decode(out.stdout);
      ok(out.success, new TextDecoder().decode(out.stderr));
      ok(/Examples?:\n\s+arch /.test(text), `no examples in "arch ${command.name()} --help":\n${text}`);
    });
  }
});
