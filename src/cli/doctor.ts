/**
 * `arch doctor`: checks what ARCH needs on this node and prints one line per check
 * (`ok` or `FAIL` with the reason and the fix). Exit status 1 if any check failed.
 */

import { loadHostConfig } from "../config/host_schema.ts";
import { runCommand } from "../process/exec.ts";

interface Check {
  readonly name: string;
  readonly run: () => Promise<string>;
}

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
        const m = /Version: (\d+)\.(\d+)/.exec(version.stdout);
        if (m === null || Number(m[1]) < 4) {
          throw new Error(
            `CRIU 4.0 or later is needed, found "${version.stdout.trim()}": install criu from Debian trixie`,
          );
        }
        const check = await runCommand({ cmd: "criu", args: ["check"] });
        if (check.code !== 0) throw new Error(`"criu check" failed: ${check.stderr.trim().split("\n").pop()}`);
        return `criu ${m[1]}.${m[2]}, criu check passed`;
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
