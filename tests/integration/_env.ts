/**
 * Shared setup of the integration tests: they need root, the built `dist/arch`, runc and
 * the engines. Outside CI a missing prerequisite skips them (with the reason printed);
 * with CI=true it fails the run, so they never silently skip there.
 */

import { EmbeddedStack, shareMounts, type StackOptions } from "../harness/stack.ts";
import { describeEngines, type Engines, systemEngines, unpackedEngines } from "../harness/engines.ts";
import { TEST_ENGINES_DIR } from "../../scripts/setup/plan.ts";

export const ROOT = new URL("../../", import.meta.url).pathname.replace(/\/$/, "");
export const ARCH = `${ROOT}/dist/arch`;
export const ARCH_RUNC = `${ROOT}/dist/arch-runc`;
export const RUNC = "/usr/sbin/runc";

function missing(): string | undefined {
  if (Deno.uid() !== 0) return "not root";
  const system = systemEngines();
  const paths = [ARCH, ARCH_RUNC, "/usr/sbin/criu", system.runc, system.containerd, system.dockerd, system.docker];
  for (const path of paths) {
    try {
      Deno.statSync(path);
    } catch {
      return `${path} is missing (run scripts/run test)`;
    }
  }
  return undefined;
}

const why = missing();
if (why !== undefined && Deno.env.get("CI") === "true") {
  throw new Error(`integration tests cannot run in CI: ${why}`);
}
if (why !== undefined) console.error(`skipping integration tests: ${why}`);

/** `true` when the integration tests must be skipped (never in CI). */
export const SKIP = why !== undefined;

/**
 * The engine generations every integration test runs on: the system's packages (trixie) and
 * the newer generation unpacked by `install.ts --test-engines` (sid).
 */
export const ENGINES: readonly Engines[] = SKIP ? [] : [systemEngines(), ...newerEngines()];

function newerEngines(): Engines[] {
  const sid = unpackedEngines();
  if (sid !== undefined) return [sid];
  const msg = `the newer engine generation is missing in ${TEST_ENGINES_DIR} (run scripts/run test)`;
  if (Deno.env.get("CI") === "true") throw new Error(`integration tests cannot run in CI: ${msg}`);
  console.error(`integration tests run on the system's engines only: ${msg}`);
  return [];
}

/** Starts a private stack of one engine generation (the system's by default). */
export function startStack(
  engines: Engines = ENGINES[0] ?? systemEngines(),
  options: Partial<StackOptions> = {},
): Promise<EmbeddedStack> {
  return EmbeddedStack.start({
    archRunc: ARCH_RUNC,
    engines,
    workloadSource: `${ROOT}/tests/fixtures/workload.c`,
    imageCache: `${ROOT}/.cache/image`,
    keep: Deno.env.get("ARCH_KEEP_STACK") === "1",
    ...options,
  });
}

/**
 * Defines one integration test per engine generation, each with its own embedded stack
 * (stopped, whatever happens, when the test ends).
 */
export function stackTest(
  name: string,
  fn: (t: Deno.TestContext, stack: EmbeddedStack) => Promise<void>,
  options: Partial<StackOptions> = {},
): void {
  for (const engines of ENGINES.length > 0 ? ENGINES : [undefined]) {
    Deno.test({
      name: engines === undefined ? name : `${name} [${describeEngines(engines)}]`,
      ignore: SKIP,
      sanitizeResources: false,
      sanitizeOps: false,
    }, async (t) => {
      await using stack = await startStack(engines, options);
      await fn(t, stack);
    });
  }
}

/**
 * {@link stackTest}, and the same test again with the stack's node on cgroup v2 (`stack.ts`,
 * `cgroup2`): for the checkpoint, restore and finalize tests, which set no resource limits.
 */
export function stackTestOnV1AndV2(
  name: string,
  fn: (t: Deno.TestContext, stack: EmbeddedStack) => Promise<void>,
  options: Partial<StackOptions> = {},
): void {
  stackTest(name, fn, options);
  stackTest(`${name} (cgroup v2)`, fn, { ...options, cgroup2: true });
}

/** A name unique to this run, for containers. */
export function uniqueName(prefix: string): string {
  return `${prefix}-${crypto.randomUUID().slice(0, 8)}`;
}

/** Runs `dist/arch` (the CLI) in a stack's node, against its configuration. */
export async function archCli(stack: EmbeddedStack, args: string[], env: Record<string, string> = {}) {
  const r = await stack.run({ cmd: ARCH, args, env, timeoutMs: 300_000 }, false);
  return { code: r.code, stdout: r.stdout, stderr: r.stderr };
}

/** Polls until `probe` returns a value, or throws after `timeoutMs`. */
export async function eventually<T>(
  what: string,
  probe: () => Promise<T | undefined> | T | undefined,
  timeoutMs = 15_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const value = await probe();
    if (value !== undefined) return value;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/**
 * `docker run` arguments for an ARCH-enabled container of the test image with checkpoint
 * key `key`; `detach: false` for a foreground run. The default command is the workload, the
 * default network `none` (unless `extra` names one).
 */
export function archDockerRun(
  name: string,
  key: string,
  extra: string[] = [],
  cmd: string[] = [],
  detach = true,
): string[] {
  return [
    "run",
    ...(detach ? ["-d"] : []),
    "--name",
    name,
    ...(extra.includes("--network") ? [] : ["--network", "none"]),
    "--runtime",
    "arch",
    "--env",
    "ARCH_ENABLE=1",
    "--env",
    `ARCH_CHECKPOINT_ID=${key}`,
    ...extra,
    "arch-test",
    ...(cmd.length ? cmd : ["workload", "--interval-ms", "50", "--verify-every", "10"]),
  ];
}

/** `docker run` arguments without `--runtime arch`: Docker's default runtime (plain runc, or ARCH where it is the default). */
export function withoutArchRuntime(args: readonly string[]): string[] {
  return args.filter((a, i) =>
    !(a === "--runtime" && args[i + 1] === "arch") && !(a === "arch" && args[i - 1] === "--runtime")
  );
}

/**
 * `ctr run -d` arguments for an ARCH-enabled container of the test image through
 * dist/arch-runc with checkpoint key `key`; stdout goes to `log` when given.
 */
export function archCtrRun(id: string, key: string, cmd: string[], log?: string): string[] {
  return [
    "run",
    "-d",
    "--runc-binary",
    ARCH_RUNC,
    ...(log !== undefined ? ["--log-uri", `file://${log}`] : []),
    "--env",
    "ARCH_ENABLE=1",
    "--env",
    `ARCH_CHECKPOINT_ID=${key}`,
    "docker.io/library/arch-test:latest",
    id,
    ...cmd,
  ];
}

/**
 * A scratch directory on the host whose mounts (a test's shared file system) reach the
 * stacks' nodes; unshared and removed when the test process ends.
 */
export function sharedScratch(prefix: string): string {
  if (SKIP) return "/nonexistent";
  const base = Deno.makeTempDirSync({ prefix });
  const unshare = shareMounts(base);
  globalThis.addEventListener("unload", () => {
    unshare();
    try {
      Deno.removeSync(base, { recursive: true });
    } catch { /* a mount still busy: the sweep of the stacks has it */ }
  });
  return base;
}
