/**
 * The operator CLI. The only place that writes to a terminal: results on stdout, errors on
 * stderr as `arch: <sentence>`, no colours. Each command lives in its own file and is loaded
 * only when invoked. Every error is printed without control characters (`output.ts`): a
 * message that embeds a tenant's path or text cannot drive the terminal or fake a line.
 */

import { Command, CommanderError } from "commander";
import { ArchError, errorMessage } from "../util/errors.ts";
import { ensureSystemPath } from "../process/programs.ts";
import { ARCH_VERSION } from "../version.ts";
import { terminalLine, terminalLines } from "./output.ts";

/**
 * Writes `arch: <msg>` on stderr: `msg` as one line ({@link terminalLine}), or with its own
 * line breaks kept when `multiline` (commander's usage errors and hints), each line stripped.
 */
export function printError(msg: string, multiline = false): void {
  const text = multiline ? terminalLines(msg) : terminalLine(msg);
  Deno.stderr.writeSync(new TextEncoder().encode(`arch: ${text}\n`));
}

/** Builds the command tree (exported for help snapshot tests). */
export function buildProgram(onResult: (code: number) => void): Command {
  const program = new Command("arch")
    .description("Checkpoint/restore for containers on spot instances (ARCH)")
    .version(ARCH_VERSION, "--version", "print the version")
    .helpOption("-h, --help", "show help")
    .exitOverride()
    .configureOutput({ outputError: (str) => printError(str.replace(/^error: /, "").trimEnd(), true) });

  // Every command first finishes what a dead ARCH process left undone: containers left paused.
  program.hook("preAction", async () => {
    const { recoverNode } = await import("./recover.ts");
    for (const line of await recoverNode()) printError(line);
  });

  program.command("ls")
    .description("list the ARCH containers of this node (with runc's state) and the checkpoints on its roots")
    .option("--json", "print JSON: the containers (an array), or the checkpoints with --checkpoints")
    .option("--checkpoints", "only the checkpoints (key, status, age, size)")
    .addHelpText(
      "after",
      `
Checkpoint status: committed, consumed (restored once, by whom), superseded, quarantined (its restore
failed), in-progress (a live process writes it), stale (left by a writer that died: "arch gc" removes it).

Examples:
  arch ls
  arch ls --checkpoints
  arch ls --json | jq -r '.[] | select(.protection == "unprotected") | "\(.id) \(.reason)"'
  arch ls --checkpoints --json`,
    )
    .action(async (opts: { json?: boolean; checkpoints?: boolean }) => {
      const { ls } = await import("./ls.ts");
      onResult(await ls(opts));
    });

  program.command("checkpoint")
    .description("checkpoint ARCH containers (id, id prefix or namespace/id) and stop them")
    .argument("<container...>")
    .option("--leave-running", "keep the container running after the checkpoint")
    .option(
      "--dry-run",
      "dump as a checkpoint would, then discard it and resume the container: prints how long it was paused and how big a checkpoint is",
    )
    .option(
      "--requested",
      "the container asked for this checkpoint itself (ARCH_CHECKPOINT_REQUESTS): it is at its safe point, so no notice is sent",
    )
    .addHelpText(
      "after",
      `
A failed checkpoint leaves its container running. A new container with the same checkpoint key
(ARCH_CHECKPOINT_ID) resumes from the checkpoint.

Examples:
  arch checkpoint 9c5a9ae4c55f                 # an id prefix, as "arch ls" shows it
  arch checkpoint moby/9c5a9ae4c55f k8s.io/3f2e  # namespace/id
  arch checkpoint --leave-running 9c5a9ae4c55f # a safety copy; the job goes on
  arch checkpoint --dry-run 9c5a9ae4c55f       # can this job be checkpointed? how long, how big`,
    )
    .action(async (ids: string[], opts: { leaveRunning?: boolean; dryRun?: boolean; requested?: boolean }) => {
      const { checkpoint } = await import("./checkpoint.ts");
      onResult(await checkpoint(ids, opts));
    });

  program.command("finalize")
    .description("checkpoint and stop every running ARCH container on this node (spot notice), then drain it")
    .option(
      "--concurrency <n|auto>",
      'containers checkpointed at once; "auto" measures the best number during the run (host config finalizeConcurrency)',
    )
    .option("--deadline <seconds>", "start no checkpoint after this (host config finalizeDeadlineSeconds)")
    .option("--undo", "lift the drain: let ARCH containers start and restore here again")
    .addHelpText(
      "after",
      `
Run it from the spot handler ("arch watch" does, with the deadline of the notice). One line per
container ("ok" or "FAIL" with the reason); exit status 1 if any failed.

Examples:
  arch finalize --deadline 25                  # GCP/Azure: 30 s notice, 5 s margin
  arch finalize --deadline 110 --concurrency 8
  arch finalize --undo                         # the node stays: let ARCH containers start here again`,
    )
    .action(async (opts: { concurrency?: string; deadline?: string; undo?: boolean }) => {
      const { finalize } = await import("./checkpoint.ts");
      onResult(await finalize(opts));
    });

  program.command("publish")
    .description("make a key's committed checkpoint a named, read-only template (ARCH_RESTORE_FROM=<name>)")
    .argument("<key>", "checkpoint key, or scope/key")
    .argument("<name>", "the template's name")
    .addHelpText(
      "after",
      `
A container of the same key scope and image started with ARCH_RESTORE_FROM=<name> (and its own
ARCH_CHECKPOINT_ID) is restored from the template, as many times as asked, unless its own key has
a checkpoint to resume. Publishing again replaces the template. See docs/task-aware.md.

Examples:
  arch publish model-warmup warm-model-v2
  arch inspect template:warm-model-v2
  arch unpublish warm-model-v2`,
    )
    .action(async (key: string, name: string) => {
      const { publish } = await import("./publish.ts");
      onResult(await publish(key, name));
    });

  program.command("unpublish")
    .description("remove a template (name, or scope/name)")
    .argument("<name>")
    .addHelpText(
      "after",
      `
Containers already restored from it run on; new ones with ARCH_RESTORE_FROM=<name> are refused.

Examples:
  arch unpublish warm-model-v2
  arch unpublish moby/warm-model-v2   # when several scopes hold one of that name`,
    )
    .action(async (name: string) => {
      const { unpublish } = await import("./publish.ts");
      onResult(await unpublish(name));
    });

  program.command("recover", { hidden: true })
    .description("release containers a stuck or dead ARCH process left paused (what every command does first)")
    .action(() => onResult(0));

  program.command("doctor")
    .description("check this node: configuration, runc, CRIU, kernel, engines, roots, watcher, log")
    .option("--json", "print JSON instead of one line per check")
    .addHelpText(
      "after",
      `
One line per check: ok, WARN (works, but something is missing: the fix is on the line) or FAIL (exit 1).

Examples:
  arch doctor
  arch doctor --json | jq '.checks[] | select(.status != "ok")'`,
    )
    .action(async (opts: { json?: boolean }) => {
      const { doctor } = await import("./doctor.ts");
      onResult(await doctor(opts));
    });

  program.command("watch")
    .description("watch the cloud's spot/preemption notice and run arch finalize on one (runs until stopped)")
    .option("--provider <cloud>", "aws, gcp, azure, or auto to detect it", "auto")
    .option(
      "--endpoint <url>",
      "metadata server base URL (repeatable; with auto: aws=URL, gcp=URL, azure=URL)",
      (v: string, prev: string[]) => [...prev, v],
      [] as string[],
    )
    .option("--interval <seconds>", "between two polls (AWS, Azure), 0.1 to 60", "5")
    .option("--margin <seconds>", "finalize must end this long before the notice time", "5")
    .option("--on-rebalance <policy>", "AWS rebalance recommendation: log or finalize", "log")
    .option("--once", "poll once, act on what it shows, and exit")
    .addOption(program.createOption("--dmi <path>", "DMI vendor file read by auto (tests)").hideHelp())
    .addHelpText(
      "after",
      `
The finalize deadline is the notice time minus --margin, at least 10 s (also when the notice has no
time). Each notice runs finalize once; the watcher then keeps watching. Status: <stateDir>/watch.json.

Examples:
  arch watch --provider aws                      # what arch-watch.service runs
  arch watch --provider auto                     # detect AWS, GCP or Azure and say which
  arch watch --provider aws --on-rebalance finalize --margin 10
  arch watch --provider gcp --endpoint http://169.254.169.254
  arch watch --provider aws --endpoint http://127.0.0.1:8080 --once`,
    )
    .action(async (opts: Record<string, unknown>) => {
      const { watch } = await import("./watch.ts");
      onResult(await watch(opts));
    });

  // arch install / arch uninstall: host integration (src/cli/install.ts)
  const installOptions = (command: Command, uninstall: boolean) => {
    command.option("--dry-run", "print the diff of every file, change nothing")
      .option("--record <path>", "install record (what was there before)", "/var/lib/arch/install.json")
      .option("--restart", "restart the engine whose config changed (systemctl, only when systemd runs)")
      .option("--json", "print JSON instead of text");
    if (uninstall) return command;
    return command.option("--default", "make ARCH the engine's default runtime")
      .option("--arch <path>", "the arch binary (hooks, watcher unit)", "/usr/local/bin/arch")
      .option("--arch-runc <path>", "the runtime binary engines run", "/usr/local/bin/arch-runc")
      .option("--containerd-config <path>", "containerd's main config", "/etc/containerd/config.toml")
      .option("--containerd-dropin <path>", "ARCH's containerd drop-in (default: conf.d/arch.toml beside the config)")
      .option("--containerd <path>", "containerd binary asked for its version", "containerd")
      .option("--docker-config <path>", "Docker's daemon.json", "/etc/docker/daemon.json")
      .option("--podman-hooks-dir <path>", "OCI hooks.d directory", "/etc/containers/oci/hooks.d")
      .option("--podman-config <path>", "containers.conf drop-in", "/etc/containers/containers.conf.d/arch.conf")
      .option("--watch-unit <path>", "the watcher's unit", "/etc/systemd/system/arch-watch.service")
      .option("--provider <cloud>", "watch: aws, gcp, azure or auto (default auto; aws for --print ecs-userdata)")
      .option("--force", 'docker: replace an existing runtime "arch" that names another binary')
      .option("--print <what>", "print text, change nothing: kubernetes, ecs-userdata or batch-env")
      .option("--artifact-url <url>", "--print: URL of the ARCH release artifact (arch-<version>-linux-<arch>.run)")
      .option("--artifact-sha256 <hex>", "--print: its sha256")
      .option(
        "--node-selector <key=value>",
        "--print kubernetes: nodes to install on",
        "karpenter.sh/capacity-type=spot",
      )
      .option("--image <ref>", "--print kubernetes: image of the installer init containers (glibc)")
      .option("--checkpoint-path <dir>", "--print batch-env: ARCH_CHECKPOINT_HOST_PATH")
      .option("--shared-fs-path <dir>", "--print batch-env: ARCH_SHAREDFS_HOST_PATH (shared-FS mode)");
  };
  installOptions(
    program.command("install")
      .description("integrate ARCH with this node's engines: containerd, docker, podman, watch")
      .argument("[target...]", "containerd, docker, podman, watch"),
    false,
  ).addHelpText(
    "after",
    `
Targets: containerd (drop-in + imports), docker (daemon.json runtimes.arch), podman (hooks.d + containers.conf
drop-in), watch (arch-watch.service). Idempotent; the system's runc is never touched; engines are not restarted
unless --restart. "arch uninstall <target>" restores what was there before.

Examples:
  arch install containerd --dry-run
  arch install containerd --default --restart
  arch install docker --default
  arch install podman watch --provider aws
  arch install containerd --containerd-config /tmp/c/config.toml --arch-runc /opt/arch/bin/arch-runc
  arch install --print kubernetes --artifact-url https://example.com/arch-0.1.0-linux-amd64.run --artifact-sha256 <hex>
  arch install --print ecs-userdata --artifact-url https://example.com/arch-0.1.0-linux-amd64.run --artifact-sha256 <hex>
  arch install --print batch-env --shared-fs-path /mnt/efs/arch`,
  ).action(async (targets: string[], opts: Record<string, unknown>) => {
    const { install } = await import("./install.ts");
    onResult(await install(targets, opts as import("./install.ts").InstallOptions));
  });
  installOptions(
    program.command("uninstall")
      .description("undo arch install: restore what the install record says was there before")
      .argument("<target...>", "containerd, docker, podman, watch"),
    true,
  ).addHelpText(
    "after",
    `
Examples:
  arch uninstall docker --dry-run
  arch uninstall containerd docker podman watch`,
  ).action(async (targets: string[], opts: Record<string, unknown>) => {
    const { uninstall } = await import("./install.ts");
    onResult(await uninstall(targets, opts as import("./install.ts").InstallOptions));
  });
  // arch inspect / gc / log: operator commands on checkpoints and ARCH's log (src/cli/{inspect,gc,log}.ts)
  program.command("inspect")
    .description("show one key's checkpoint: manifest, signature, process tree, memory, writable layer")
    .argument("<key>", "checkpoint key, or scope/key when several scopes hold it")
    .option("--json", "print JSON instead of text")
    .addHelpText(
      "after",
      `
Examples:
  arch inspect job-17
  arch inspect moby/job-17 --json | jq .criu.processes`,
    )
    .action(async (key: string, opts: { json?: boolean }) => {
      const { inspect } = await import("./inspect.ts");
      onResult(await inspect(key, opts));
    });

  program.command("gc")
    .description("remove checkpoints no longer needed: stale temporaries, quarantined, consumed, old ones")
    .option("--older-than <age>", "remove committed checkpoints older than this (30m, 12h, 7d, 2w; host gc.maxAgeDays)")
    .option("--keep <n>", "committed checkpoints kept per key, newest first (host gc.keepPerKey, default 1)")
    .option("--include-current", "also remove a key's current checkpoint when --older-than/--keep say so")
    .option("--quarantined", "remove quarantined checkpoints of any age (default: after host gc.quarantineDays, 7)")
    .option("--dry-run", "list what would be removed and the bytes, change nothing")
    .option("--json", "print JSON instead of a table")
    .addHelpText(
      "after",
      `
A key whose claim a live checkpoint, restore or delete holds is skipped. A key's current checkpoint
(what its next container resumes) is kept unless --include-current. A quarantined checkpoint (moved
aside after a failed restore; it may be a job's only state) goes only once it failed more than
host gc.quarantineDays (default 7) ago, or with --quarantined.

Examples:
  arch gc --dry-run
  arch gc
  arch gc --quarantined --dry-run
  arch gc --older-than 7d --keep 1
  arch gc --older-than 30d --include-current --dry-run`,
    )
    .action(async (opts: Record<string, string | boolean | undefined>) => {
      const { gc } = await import("./gc.ts");
      onResult(await gc(opts));
    });

  program.command("log")
    .description("print ARCH's log (host config logFile) for people, or as JSON lines")
    .option("--level <level>", "minimum level: debug, info, warn or error", "debug")
    .option("--file <path>", "another log file (default: host config logFile)")
    .option("--container <id>", "only records of this container (id or prefix)")
    .option("--key <key>", "only records of this checkpoint key")
    .option("--since <when>", "only records since a duration ago (30m, 2h, 1d) or a date (2026-11-29T10:00Z)")
    .option("-f, --follow", "keep printing records as they are written")
    .option("--json", "print the records as JSON lines")
    .addHelpText(
      "after",
      `
Examples:
  arch log --level warn --since 1h
  arch log --container 3f2a --follow
  arch log --key job-17 --json | jq -r .msg`,
    )
    .action(async (opts: Record<string, string | boolean | undefined>) => {
      const { log } = await import("./log.ts");
      onResult(await log(opts));
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
    // Every ARCH failure says its exit status (usage 2, precondition 3, else 1); anything else is 1.
    printError(errorMessage(error));
    return error instanceof ArchError ? error.exitCode : 1;
  }
}
