/**
 * The operator CLI. The only place that writes to a terminal: results on stdout, errors on
 * stderr as `arch: <sentence>`, no colours. Each command lives in its own file and is loaded
 * only when invoked.
 */

import { Command, CommanderError } from "commander";
import { UsageError } from "../util/errors.ts";
import { ensureSystemPath } from "../process/programs.ts";
import { ARCH_VERSION } from "../version.ts";

function printError(msg: string): void {
  Deno.stderr.writeSync(new TextEncoder().encode(`arch: ${msg}\n`));
}

/** Builds the command tree (exported for help snapshot tests). */
export function buildProgram(onResult: (code: number) => void): Command {
  const program = new Command("arch")
    .description("Checkpoint/restore for containers on spot instances (ARCH)")
    .version(ARCH_VERSION, "--version", "print the version")
    .helpOption("-h, --help", "show help")
    .exitOverride()
    .configureOutput({ outputError: (str) => printError(str.replace(/^error: /, "").trimEnd()) });

  // Every command first finishes what a dead ARCH process left undone: containers left paused.
  program.hook("preAction", async () => {
    const { recoverNode } = await import("./recover.ts");
    for (const line of await recoverNode()) printError(line);
  });

  program.command("ls")
    .description("list the ARCH-enabled containers known on this node")
    .option("--json", "print JSON instead of a table")
    .action(async (opts: { json?: boolean }) => {
      const { ls } = await import("./ls.ts");
      onResult(await ls(opts));
    });

  program.command("checkpoint")
    .description("checkpoint ARCH containers (id, id prefix or namespace/id) and stop them")
    .argument("<container...>")
    .option("--leave-running", "keep the container running after the checkpoint")
    .action(async (ids: string[], opts: { leaveRunning?: boolean }) => {
      const { checkpoint } = await import("./checkpoint.ts");
      onResult(await checkpoint(ids, opts));
    });

  program.command("finalize")
    .description("checkpoint and stop every running ARCH container on this node (spot notice), then drain it")
    .option("--concurrency <n>", "containers checkpointed at once (host config finalizeConcurrency)")
    .option("--deadline <seconds>", "start no checkpoint after this (host config finalizeDeadlineSeconds)")
    .option("--undo", "lift the drain: let ARCH containers start and restore here again")
    .action(async (opts: { concurrency?: string; deadline?: string; undo?: boolean }) => {
      const { finalize } = await import("./checkpoint.ts");
      onResult(await finalize(opts));
    });

  program.command("recover", { hidden: true })
    .description("release containers a stuck or dead ARCH process left paused (what every command does first)")
    .action(() => onResult(0));

  program.command("doctor")
    .description("check this node: host configuration, runc, CRIU, kernel")
    .action(async () => {
      const { doctor } = await import("./doctor.ts");
      onResult(await doctor());
    });
  return program;
}

/** Runs the CLI and returns the exit status. */
export async function runCli(argv: string[]): Promise<number> {
  ensureSystemPath(); // cron and systemd units may start arch with a PATH without /usr/sbin (criu)
  let code = 0;
  const program = buildProgram((c) => (code = c));
  try {
    await program.parseAsync(argv, { from: "user" });
    return code;
  } catch (error) {
    if (error instanceof CommanderError) return error.exitCode;
    if (error instanceof UsageError) {
      printError(error.message);
      return 2;
    }
    printError(error instanceof Error ? error.message : String(error));
    return 1;
  }
}
