/**
 * Text a tenant can shape (checkpoint paths, error messages that embed a container's paths,
 * CRIU log lines) never reaches the operator's terminal with a control character: `arch
 * checkpoint`/`arch finalize` result lines, the progress line, the CLI's error printing and
 * the watcher's relay of `arch finalize` output. Subprocesses capture what really goes out.
 */

import { deepEqual as assertEquals, ok } from "node:assert/strict";
import { terminalLine, terminalLines, terminalSafe } from "../../src/cli/output.ts";
import { summary } from "../../src/cli/checkpoint.ts";
import { runArchFinalize } from "../../src/spot/finalize.ts";

/** What a hostile tenant would like the terminal to obey: retitle, clear, overwrite, backspace, 8-bit CSI. */
const HOSTILE = 'cannot read "/ckpt/\x1b]0;pwned\x07x\x1b[2J"\r\bfaked line\u009b2J\nsecond';

// deno-lint-ignore no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;

const module = (path: string) => new URL(`../../src/${path}`, import.meta.url).href;

/** Runs `code` in a fresh Deno and returns its stdout and stderr as text. */
async function run(code: string): Promise<{ stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--ext=ts", code],
    cwd: new URL("../../", import.meta.url).pathname,
    signal: AbortSignal.timeout(60_000),
  }).output();
  const decode = (b: Uint8Array) => new TextDecoder().decode(b);
  return { stdout: decode(out.stdout), stderr: decode(out.stderr) };
}

Deno.test("terminalSafe, terminalLine, terminalLines: no control character of the message survives", () => {
  for (const text of [terminalSafe(HOSTILE), terminalLine(HOSTILE)]) {
    ok(!CONTROL.test(text), JSON.stringify(text));
    ok(text.includes("]0;pwned") && text.includes("faked line"), "the printable text stays");
  }
  assertEquals(terminalLine(HOSTILE), 'cannot read "/ckpt/]0;pwnedx[2J" faked line2J second');
  const kept = terminalLines(HOSTILE);
  assertEquals(kept.split("\n").length, 2, "lines kept");
  ok(kept.split("\n").every((l) => !CONTROL.test(l)), JSON.stringify(kept));
});

Deno.test("arch checkpoint / finalize result lines carry no control character", () => {
  const record = { namespace: "moby", id: "c1", root: "/run/runc", bundle: "/b", key: "job-1", createdAt: "" };
  const failed = summary(record, new Error(HOSTILE));
  ok(!CONTROL.test(failed), JSON.stringify(failed));
  ok(failed.startsWith("FAIL  moby/c1 key=job-1: cannot read"));
  const saved = summary(record, { bytes: 1 << 20, timings: { total: 1500 }, dir: "/ckpt/\x1b]0;pwned\x07\r" } as never);
  assertEquals(saved, "ok    moby/c1 key=job-1 1.0 MiB in 1.50 s -> /ckpt/]0;pwned ");
});

Deno.test("the CLI's error printing strips control characters (own errors and commander's)", async () => {
  const printed = await run(`
    import { printError, runCli } from ${JSON.stringify(module("cli/main.ts"))};
    printError(${JSON.stringify(HOSTILE)});
    await runCli([${JSON.stringify("bogus\x1b]0;pwned\x07\x1b[2J\r")}]);
  `);
  const [own, ...commander] = printed.stderr.split("\n").filter((l) => l !== "");
  assertEquals(own, 'arch: cannot read "/ckpt/]0;pwnedx[2J" faked line2J second');
  ok(commander.join("\n").includes("bogus]0;pwned[2J"), printed.stderr);
  ok(!CONTROL.test(printed.stderr.replaceAll("\n", "")), JSON.stringify(printed.stderr));
});

Deno.test("the finalize progress line writes ARCH's own sequences only, never the tenant's", async () => {
  const printed = await run(`
    import { Progress } from ${JSON.stringify(module("cli/output.ts"))};
    const progress = new Progress(1, Date.now(), undefined);
    progress.line(${JSON.stringify(`FAIL  moby/c1 key=job-1: ${HOSTILE}`)}, true);
    progress.stop();
  `);
  ok(printed.stdout.includes("]0;pwnedx[2J") && printed.stdout.includes("faked line2J second"), printed.stdout);
  for (const bad of ["\x1b]", "\x07", "\b", "\u009b", "\x1b[2J"]) {
    ok(!printed.stdout.includes(bad), JSON.stringify(bad));
  }
  // what remains is the progress line's own "\r\x1b[2K" redraws and the line feed after the result
  const own = printed.stdout.replaceAll("\r\x1b[2K", "").replace(/\n/g, "");
  ok(!CONTROL.test(own), JSON.stringify(printed.stdout));
});

Deno.test("arch watch relays arch finalize's output with every control character escaped", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "arch-finalize-" });
  try {
    const fake = `${dir}/arch`;
    Deno.writeTextFileSync(fake, "#!/bin/sh\nprintf 'FAIL  moby/c1: \\033]0;pwned\\007 \\033[2J\\r\\bfaked\\n'\n", {
      mode: 0o755,
    });
    const said: string[] = [];
    const code = await runArchFinalize(fake, `${dir}/config.json`, 10, undefined, (l) => said.push(l));
    assertEquals(code, 0);
    assertEquals(said, ["finalize: FAIL  moby/c1: \\x1b]0;pwned\\x07 \\x1b[2J\\x0d\\x08faked"]);
    ok(said.every((l) => !CONTROL.test(l)));
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
