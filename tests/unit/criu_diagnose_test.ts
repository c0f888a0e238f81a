/** src/criu/diagnose.ts: a failed CRIU run's cause in one sentence, never the known noise. */
import { deepEqual as assertEquals, ok } from "node:assert/strict";
import { criuCause, firstCriuError } from "../../src/criu/diagnose.ts";

const NOISE = "(00.000123) Error (criu/rlimit.c:42): rlimit: Can't setup RLIMIT_NOFILE for self\n";

Deno.test("the first meaningful error, after the rlimit noise every dump here logs", () => {
  const log = NOISE + "(00.1) Warn  (criu/x.c:1): a warning\n(00.2) Error (criu/mount.c:7): mnt: No mapping for 42\n" +
    "(00.3) Error (criu/cr-dump.c:9): Dumping FAILED.\n";
  assertEquals(firstCriuError(log), "mnt: No mapping for 42");
  assertEquals(criuCause(log), "CRIU: mnt: No mapping for 42");
  assertEquals(criuCause(NOISE), undefined);
  assertEquals(criuCause(""), undefined);
});

Deno.test("known causes say what they mean and the fix", () => {
  const cases: [string, RegExp][] = [
    [
      "Can't dump ghost file /var/log/old of 8388608 size, increase limit",
      /"\/var\/log\/old", 8\.0 MiB.*ghostFileLimitBytes/,
    ],
    ["fsnotify:  Can't dump that handle", /inotify or fanotify.*cannot be checkpointed.*exit-code path/], // two spaces, as CRIU 4.2 writes it
    ["Some file locks are hold by dumping tasks! You can try --file-locks", /file locks.*"file-locks"/],
    ["Unable to seize 123: Operation not permitted", /could not be frozen/],
  ];
  for (const [text, want] of cases) {
    const cause = criuCause(`${NOISE}(00.5) Error (criu/x.c:1): ${text}\n`);
    ok(cause !== undefined && want.test(cause), `${text} → ${cause}`);
  }
});

Deno.test("only CRIU's own error lines count: a debug line quoting the tenant's file names does not", () => {
  const log = NOISE + "(00.1) Debug: open /tmp/Error (x): Can't dump ghost file /a of 1 size, increase limit\n" +
    "(00.2) Error (criu/mount.c:7): mnt: No mapping for 42\n";
  assertEquals(criuCause(log), "CRIU: mnt: No mapping for 42");
});
