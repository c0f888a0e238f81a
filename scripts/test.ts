/**
 * `deno task test`: unit and integration tests in one `deno test` run, then one summary
 * line `tests: N passed, M failed` (counted from the JUnit report) for CI logs.
 * Integration tests need root and the engines; with CI=true they fail instead of skipping.
 */

import { sweepScratch } from "../tests/harness/stack.ts";

const root = new URL("..", import.meta.url).pathname;
const stacks = `${root}.cache/stacks-${Deno.pid}.txt`;
const junit = `${root}.cache/junit.xml`;
Deno.mkdirSync(`${root}.cache`, { recursive: true });
// `--doc src` runs the @example blocks of the modules too.
const filters = Deno.args.length > 0 ? Deno.args : ["--doc", "src", "tests/unit", "tests/integration"];
const status = await new Deno.Command(Deno.execPath(), {
  args: ["test", "--allow-all", `--junit-path=${junit}`, ...filters],
  cwd: root,
  env: { ARCH_TEST_STACKS: stacks },
  stdout: "inherit",
  stderr: "inherit",
}).spawn().status;

// A test process that died (or was killed) before stopping its stacks must not leave their
// daemons, containers or mounts behind: sweep the stacks this run started (each one is
// listed in `stacks`), never another run's.
if (Deno.env.get("ARCH_KEEP_STACK") !== "1") { // kept on purpose, for debugging
  for (const dir of (await Deno.readTextFile(stacks).catch(() => "")).split("\n").filter(Boolean)) {
    if (!(await Deno.stat(dir).then(() => true, () => false))) continue;
    const problems = await sweepScratch(dir, "/usr/sbin/runc");
    console.log(`tests: swept a stack left behind in ${dir}${problems.length ? ` (${problems.join("; ")})` : ""}`);
  }
}
await Deno.remove(stacks).catch(() => {});

let summary = "tests: no report";
try {
  const xml = Deno.readTextFileSync(junit);
  const cases = [...xml.matchAll(/<testcase\b[^>]*?(\/>|>([\s\S]*?)<\/testcase>)/g)];
  const failures = cases.filter((c) => (c[2] ?? "").includes("<failure"));
  const failed = failures.length;
  const skipped = cases.filter((c) => (c[2] ?? "").includes("<skipped")).length;
  summary = `tests: ${cases.length - failed - skipped} passed, ${failed} failed` +
    (skipped ? `, ${skipped} skipped` : "") +
    (failed ? ` (${failures.slice(0, 5).map((c) => /name="([^"]*)"/.exec(c[0])?.[1] ?? "?").join("; ")})` : "");
} catch { /* no report: deno test failed before running */ }
console.log(summary);
Deno.exit(status.code);
