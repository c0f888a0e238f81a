/**
 * `arch doctor`: checks what ARCH needs on this node and prints one line per check
 * (`ok` or `FAIL` with the reason and the fix). Exit status 1 if any check failed. The CRIU
 * check compares CRIU's version with the running kernel (`engine/compat.ts`): a CRIU that
 * passes `criu check` can still fail every dump of a container with a network socket.
 */

import { loadHostConfig } from "../config/host_schema.ts";
import { runCommand } from "../process/exec.ts";
import { criuProblem, parseMajorMinor } from "../engine/compat.ts";

interface Check {
  readonly name: string;
  readonly run: () => Promise<string>;
}

/** `arch doctor`: prints `ok` or `FAIL` for each check; returns 1 if any failed, else 0. `criu check` needs root. */
export async function doctor(): Promise<number> {
  let runc = "runc";
  const checks: Check[] = [
    {
      name: "host configuration",
      run: () => {
        const config = loadHostConfig();
        runc = config.runcPath;
        return Promise.resolve(`${config.configPath}, runc ${config.runcPath}`);
      },
    },
    {
      name: "runc",
      run: async () => {
        const r = await runCommand({ cmd: runc, args: ["--version"] });
        if (r.code !== 0) throw new Error(`"${runc} --version" failed: ${r.stderr.trim()}`);
        return r.stdout.split("\n")[0]!;
      },
    },
    {
      name: "criu",
      run: async () => {
        const version = await runCommand({ cmd: "criu", args: ["--version"] });
        const problem = criuProblem(version.stdout, Deno.osRelease());
        if (problem !== undefined) throw new Error(problem);
        const check = await runCommand({ cmd: "criu", args: ["check"] });
        if (check.code !== 0) throw new Error(`"criu check" failed: ${check.stderr.trim().split("\n").pop()}`);
        return `criu ${parseMajorMinor(version.stdout)!.join(".")} fits Linux ${Deno.osRelease()}, criu check passed`;
      },
    },
  ];
  let failed = 0;
  for (const check of checks) {
    try {
      console.log(`ok    ${check.name}: ${await check.run()}`);
    } catch (error) {
      failed++;
      console.log(`FAIL  ${check.name}: ${error instanceof Error ? error.message : String(error)}`);
    }
  }
  return failed === 0 ? 0 : 1;
}
