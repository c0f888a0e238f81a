/** `arch doctor` against the real node, and against a CRIU too old for the running kernel. */

import { deepEqual as assertEquals, ok } from "node:assert/strict";
import { ARCH, SKIP } from "./_env.ts";
import { SEARCH_PATH } from "../../src/process/programs.ts";

async function doctor(path: string) {
  const out = await new Deno.Command(ARCH, { args: ["doctor"], env: { PATH: path }, clearEnv: true }).output();
  return { code: out.code, stdout: new TextDecoder().decode(out.stdout) };
}

Deno.test({ name: "arch doctor", ignore: SKIP }, async (t) => {
  await t.step("this node: CRIU fits the kernel", async () => {
    const r = await doctor(SEARCH_PATH);
    assertEquals(r.code, 0, r.stdout);
    ok(r.stdout.includes(`ok    criu: criu 4.`) && r.stdout.includes(`fits Linux ${Deno.osRelease()}`), r.stdout);
  });
  await t.step("CRIU 4.1 on Linux >= 6.16: one sentence saying why and how to fix it", async () => {
    const dir = Deno.makeTempDirSync();
    Deno.writeTextFileSync(`${dir}/criu`, "#!/bin/sh\necho 'Version: 4.1.1'\n", { mode: 0o755 });
    const r = await doctor(`${dir}:${SEARCH_PATH}`);
    Deno.removeSync(dir, { recursive: true });
    const line = r.stdout.split("\n").find((l) => l.includes("criu:"))!;
    const [major, minor] = Deno.osRelease().split(".").map(Number);
    if (major! > 6 || (major === 6 && minor! >= 16)) {
      assertEquals(r.code, 1);
      assertEquals(
        line,
        `FAIL  criu: Linux ${Deno.osRelease()} needs CRIU 4.2 or later to checkpoint any container with a TCP or ` +
          "UDP socket, found CRIU 4.1: run install.ts (it installs CRIU from Debian sid, pinned)",
      );
    } else {
      ok(!line.startsWith("FAIL") || !line.includes("needs CRIU"), line);
    }
  });
});
