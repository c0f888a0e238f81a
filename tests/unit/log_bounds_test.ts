/**
 * ARCH's log stays bounded whatever a hostile tenant puts in the values it logs: strings cut
 * to 1024 characters, lines to 8 KiB, the file rotated to `<file>.1` at a size cap by one
 * process only, even when many write at once; runc's log gets the whole refusal sentence up
 * to 4 KiB. Real files in a temporary directory; no engine.
 */

import { deepEqual as assertEquals, ok } from "node:assert/strict";
import {
  appendJsonLine,
  Logger,
  MAX_FIELD_CHARS,
  MAX_LINE_BYTES,
  MAX_RUNC_MSG_CHARS,
  quoteValue,
  truncate,
  writeRuncLogError,
} from "../../src/log/log.ts";

const LOG_MODULE = new URL("../../src/log/log.ts", import.meta.url).href;

function lines(path: string): Record<string, unknown>[] {
  return Deno.readTextFileSync(path).split("\n").filter((l) => l !== "").map((l) => JSON.parse(l));
}

function withDir(fn: (dir: string) => void | Promise<void>): () => Promise<void> {
  return async () => {
    const dir = Deno.makeTempDirSync({ prefix: "arch-log-" });
    try {
      await fn(dir);
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  };
}

Deno.test(
  "a tenant's 120 KB value gives a short line: every string cut with a marker, recursively",
  withDir((dir) => {
    const path = `${dir}/arch.log`;
    const huge = "A".repeat(120_000);
    const log = new Logger(path, { component: "t" });
    log.warn(`refused: ARCH_CHECKPOINT_ID="${huge}"`, {
      env: { ARCH_CHECKPOINT_ID: huge },
      args: [huge, 1, true, null],
      at: new Date(0),
      error: new Error(huge),
    });
    const text = Deno.readTextFileSync(path);
    ok(new TextEncoder().encode(text).length <= MAX_LINE_BYTES, `${text.length} bytes`);
    const [record] = lines(path);
    const cut = (s: string) => `${s.slice(0, MAX_FIELD_CHARS)}…(+${s.length - MAX_FIELD_CHARS} chars)`;
    assertEquals(record!.msg, cut(`refused: ARCH_CHECKPOINT_ID="${huge}"`));
    assertEquals(record!.env, { ARCH_CHECKPOINT_ID: cut(huge) });
    assertEquals(record!.args, [cut(huge), 1, true, null]);
    assertEquals(record!.at, "1970-01-01T00:00:00.000Z");
    assertEquals(record!.error, cut(`Error: ${huge}`));
    assertEquals([record!.level, record!.component, record!.pid], ["warn", "t", Deno.pid]);
  }),
);

Deno.test(
  "deep, wide and over-long records are bounded; a line over 8 KiB keeps its message and says its fields went",
  withDir((dir) => {
    const path = `${dir}/arch.log`;
    type Nested = { next?: Nested };
    const deep: Nested = {};
    let at = deep;
    for (let i = 0; i < 100; i++) at = at.next = {};
    const wide = Object.fromEntries([...Array(1000).keys()].map((i) => [`k${i}`, i]));
    appendJsonLine(path, { msg: "shapes", deep, wide, list: [...Array(1000).keys()] });
    const [shapes] = lines(path);
    ok(JSON.stringify(shapes!.deep).includes("…(nested too deep)"));
    assertEquals(Object.keys(shapes!.wide as object).length, 65);
    assertEquals((shapes!.wide as Record<string, unknown>)["…"], "+936 fields");
    assertEquals((shapes!.list as unknown[]).at(-1), "…(+936 items)");

    const many = Object.fromEntries([...Array(20).keys()].map((i) => [`f${i}`, "x".repeat(5000)]));
    new Logger(path).error("the message " + "m".repeat(5000), many);
    const last = lines(path).at(-1)!;
    ok(Deno.readTextFileSync(path).split("\n").every((l) => new TextEncoder().encode(l).length < MAX_LINE_BYTES));
    assertEquals(last.level, "error");
    assertEquals(last.msg, truncate("the message " + "m".repeat(5000), 1024));
    assertEquals(last.f0, undefined);
    ok(/over 8192: its fields were dropped/.test(String(last.truncated)), String(last.truncated));
  }),
);

Deno.test(
  "the log rotates to <file>.1 at its cap (the older .1 goes), files 0600, no record lost",
  withDir((dir) => {
    const path = `${dir}/arch.log`;
    const log = new Logger(path, {}, "info", 300);
    for (let i = 0; i < 20; i++) log.info(`record ${i}`);
    const now = lines(path).map((r) => r.msg);
    const older = lines(`${path}.1`).map((r) => r.msg);
    const all = [...older, ...now];
    assertEquals(all, all.map((_, i) => `record ${20 - all.length + i}`), "the newest records, in order");
    ok(now.includes("record 19"));
    ok(Deno.statSync(path).size < 300 + 100);
    assertEquals(Deno.statSync(path).mode! & 0o777, 0o600);
    assertEquals(Deno.statSync(`${path}.1`).mode! & 0o777, 0o600);
    assertEquals(log.with({ id: "c" }).rotateBytes, 300);
  }),
);

Deno.test(
  "processes writing at once: exactly one rotates, the full file becomes .1 whole, every record lands",
  withDir(async (dir) => {
    const path = `${dir}/arch.log`;
    const cap = 1 << 20;
    const filler = JSON.stringify({ msg: "old", pad: "p".repeat(200) }) + "\n";
    const prefill = filler.repeat(Math.ceil(cap / filler.length));
    Deno.writeTextFileSync(path, prefill, { mode: 0o600 });
    const writers = 8, records = 100;
    // Each writer waits for the same start signal, so that they find the file full together.
    const go = `${dir}/go`;
    const script = `
      import { Logger } from ${JSON.stringify(LOG_MODULE)};
      const log = new Logger(${JSON.stringify(path)}, { w: Number(Deno.args[0]) }, "info", ${cap});
      Deno.writeTextFileSync(${JSON.stringify(dir)} + "/ready-" + Deno.args[0], "");
      for (;;) { try { Deno.statSync(${JSON.stringify(go)}); break; } catch { /* not yet */ } }
      for (let i = 0; i < ${records}; i++) log.info("r", { i });
    `;
    const file = `${dir}/writer.ts`;
    Deno.writeTextFileSync(file, script);
    const children = [...Array(writers).keys()].map((w) =>
      new Deno.Command(Deno.execPath(), { args: ["run", "-A", "--no-config", file, String(w)], stdout: "null" })
        .output()
    );
    while ([...Deno.readDirSync(dir)].filter((e) => e.name.startsWith("ready-")).length < writers) {
      await new Promise((r) => setTimeout(r, 10));
    }
    Deno.writeTextFileSync(go, "");
    for (const out of await Promise.all(children)) assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
    assertEquals(Deno.readTextFileSync(`${path}.1`), prefill, "the full file was renamed once, untouched");
    const seen = lines(path).map((r) => `${r.w}/${r.i}`).sort();
    const wanted = [...Array(writers).keys()].flatMap((w) => [...Array(records).keys()].map((i) => `${w}/${i}`)).sort();
    assertEquals(seen, wanted);
  }),
);

Deno.test(
  "runc's log gets the refusal sentence whole up to 4 KiB, cut with the marker beyond, never rotated",
  withDir((dir) => {
    const sentence = `ARCH_CHECKPOINT_ID=${quoteValue("k".repeat(120_000))} is not a valid checkpoint id`;
    ok(sentence.length < MAX_RUNC_MSG_CHARS);
    writeRuncLogError(`${dir}/log.json`, "json", sentence);
    assertEquals(lines(`${dir}/log.json`)[0]!.msg, sentence);
    const long = "refused: " + "z".repeat(120_000);
    writeRuncLogError(`${dir}/log.json`, "json", long);
    assertEquals(lines(`${dir}/log.json`)[1]!.msg, truncate(long, MAX_RUNC_MSG_CHARS));
    writeRuncLogError(`${dir}/log.txt`, "text", long);
    const text = Deno.readTextFileSync(`${dir}/log.txt`);
    const msg = JSON.parse(/ msg=(".*")\n$/.exec(text)![1]!);
    assertEquals(msg, truncate(long, MAX_RUNC_MSG_CHARS));
    ok(msg.endsWith(`…(+${long.length - MAX_RUNC_MSG_CHARS} chars)`));
    assertEquals(Deno.statSync(`${dir}/log.txt`).mode! & 0o777, 0o600);
  }),
);

Deno.test("quoteValue: JSON-quoted, cut to max characters, every control character escaped", () => {
  assertEquals(quoteValue("job-1"), '"job-1"');
  const raw = "a\x1b]0;pwned\x07\x1b[2J\r\b\u009b\u202e" + "x".repeat(1000);
  const quoted = quoteValue(raw);
  // deno-lint-ignore no-control-regex
  ok(!/[\u0000-\u001f\u007f-\u009f\u202e]/.test(quoted), quoted);
  ok(quoted.startsWith('"a\\u001b]0;pwned\\u0007\\u001b[2J\\r\\b\\u009b\\u202e'), quoted);
  ok(quoted.endsWith(`…(+${raw.length - 200} chars)"`), quoted);
  assertEquals(JSON.parse(quoteValue("x".repeat(500), 10)), "x".repeat(10) + "…(+490 chars)");
  assertEquals(truncate("😀😀", 3), "😀…(+2 chars)", "a surrogate pair is never split");
});
