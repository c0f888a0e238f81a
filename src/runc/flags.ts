/**
 * The command-line surface of runc 1.1 to 1.3, as data.
 *
 * Guarantees: every global flag and every subcommand flag that runc 1.1.15 and 1.3.6 print
 * in `runc <command> --help` is listed here (a test compares this table with both), plus
 * flags that newer runcs still accept but no longer print (`kill --all`). The table says only what the parser needs: the long
 * name, short aliases, and whether the flag takes a value.
 */

/** How a flag consumes argv. */
export type FlagKind = "bool" | "value" | "list";

/** One flag of runc's CLI. `name` is the long name without dashes. */
export interface FlagSpec {
  readonly name: string;
  readonly kind: FlagKind;
  readonly aliases?: readonly string[];
}

const b = (name: string, ...aliases: string[]): FlagSpec => ({ name, kind: "bool", aliases });
const v = (name: string, ...aliases: string[]): FlagSpec => ({ name, kind: "value", aliases });
const l = (name: string, ...aliases: string[]): FlagSpec => ({ name, kind: "list", aliases });

/** Flags accepted before the subcommand. */
export const GLOBAL_FLAGS: readonly FlagSpec[] = [
  b("debug"),
  v("log"),
  v("log-format"),
  v("root"),
  v("criu"),
  b("systemd-cgroup"),
  v("rootless"),
  b("help", "h"),
  b("version", "v"),
];

const CREATE_FLAGS = [
  v("bundle", "b"),
  v("console-socket"),
  v("pid-file"),
  b("no-pivot"),
  b("no-new-keyring"),
  v("preserve-fds"),
  v("pidfd-socket"), // runc 1.2
];

const CRIU_COMMON = [
  v("image-path"),
  v("work-path"),
  b("tcp-established"),
  b("ext-unix-sk"),
  b("shell-job"),
  b("file-locks"),
  v("manage-cgroups-mode"),
  l("empty-ns"),
  b("auto-dedup"),
  b("lazy-pages"),
];

/** Flags of each subcommand (runc 1.1.15, plus 1.2 and 1.3 additions). */
export const COMMAND_FLAGS: Readonly<Record<string, readonly FlagSpec[]>> = {
  checkpoint: [
    ...CRIU_COMMON,
    v("parent-path"),
    b("leave-running"),
    v("status-fd"),
    v("page-server"),
    b("pre-dump"),
    b("tcp-skip-in-flight"), // runc 1.2
    b("link-remap"), // runc 1.3
  ],
  create: CREATE_FLAGS,
  delete: [b("force", "f")],
  events: [v("interval"), b("stats")],
  exec: [
    v("console-socket"),
    v("cwd"),
    l("env", "e"),
    b("tty", "t"),
    v("user", "u"),
    l("additional-gids", "g"),
    v("process", "p"),
    b("detach", "d"),
    v("pid-file"),
    v("process-label"),
    v("apparmor"),
    b("no-new-privs"),
    l("cap", "c"),
    v("preserve-fds"),
    l("cgroup"),
    b("ignore-paused"),
    v("pidfd-socket"), // runc 1.2
  ],
  features: [],
  init: [],
  kill: [b("all", "a")], // hidden from --help since runc 1.2, still accepted
  list: [v("format", "f"), b("quiet", "q")],
  pause: [],
  ps: [v("format", "f")],
  restore: [
    ...CRIU_COMMON,
    v("console-socket"),
    v("bundle", "b"),
    b("detach", "d"),
    v("pid-file"),
    b("no-subreaper"),
    b("no-pivot"),
    v("lsm-profile"),
    v("lsm-mount-context"),
  ],
  resume: [],
  run: [...CREATE_FLAGS, b("detach", "d"), b("keep"), b("no-subreaper")],
  spec: [v("bundle", "b"), b("rootless")],
  start: [],
  state: [],
  update: [
    v("resources", "r"),
    v("blkio-weight"),
    v("cpu-period"),
    v("cpu-quota"),
    v("cpu-share"),
    v("cpu-rt-period"),
    v("cpu-rt-runtime"),
    v("cpuset-cpus"),
    v("cpuset-mems"),
    v("kernel-memory"),
    v("kernel-memory-tcp"),
    v("memory"),
    v("memory-reservation"),
    v("memory-swap"),
    v("pids-limit"),
    v("l3-cache-schema"),
    v("mem-bw-schema"),
    v("cpu-idle"),
    v("cpu-burst"),
  ],
  help: [],
};

/** Command aliases urfave/cli accepts. */
export const COMMAND_ALIASES: Readonly<Record<string, string>> = { h: "help" };

/**
 * Commands whose flags must all come before the first positional argument; for the others
 * urfave/cli (v1) moves flags found after positionals to the front, and so do we.
 */
export const NO_REORDER: ReadonlySet<string> = new Set(["exec"]);

/** Looks a flag up by long name or alias. */
export function findFlag(flags: readonly FlagSpec[], name: string): FlagSpec | undefined {
  return flags.find((f) => f.name === name || (f.aliases?.includes(name) ?? false));
}
