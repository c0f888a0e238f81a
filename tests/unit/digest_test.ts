import { deepEqual as assertEquals } from "node:assert/strict";
import { createHash, createHmac } from "node:crypto";
import { hmacHex, sha256Hex, streamingSha256, verifyHmac, WHOLE_FILE_LIMIT } from "../../src/util/digest.ts";
import { sha256File } from "../../src/store/manifest.ts";

const random = (n: number) => {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i += 65536) crypto.getRandomValues(out.subarray(i, Math.min(n, i + 65536)));
  return out;
};
const nodeSha = (data: Uint8Array | string) => createHash("sha256").update(data).digest("hex");

Deno.test("Web Crypto digests equal node:crypto's (the manifests of earlier ARCH versions still verify)", async () => {
  for (const data of [new Uint8Array(0), random(1), random(4097), "é\0 layer/path\n", "\ud800 lone surrogate"]) {
    assertEquals(await sha256Hex(data), nodeSha(data));
  }
  const data = random(1000);
  // a secret file ARCH makes is 65 bytes (64 hex digits and a newline): longer than HMAC's block
  for (const size of [32, 63, 64, 65, 100, 4096]) {
    const secret = random(size);
    assertEquals(await hmacHex(secret, data), createHmac("sha256", secret).update(data).digest("hex"), String(size));
  }
  const secret = random(70);
  assertEquals(
    await hmacHex(secret.subarray(3, 68), data.subarray(5)),
    createHmac("sha256", secret.subarray(3, 68))
      .update(data.subarray(5)).digest("hex"),
    "views into larger buffers",
  );
  const streamed = await streamingSha256();
  streamed.update(data.subarray(0, 10));
  streamed.update(data.subarray(10));
  assertEquals(streamed.digest(), nodeSha(data));
});

Deno.test("verifyHmac accepts the right mac only", async () => {
  const secret = random(32), data = random(100);
  const mac = await hmacHex(secret, data);
  assertEquals(await verifyHmac(secret, data, mac + "\n"), true);
  assertEquals(await verifyHmac(secret, data, mac.toUpperCase()), true); // the same bytes
  const flipped = (mac[0] === "0" ? "1" : "0") + mac.slice(1);
  assertEquals(await verifyHmac(secret, data, flipped), false);
  assertEquals(await verifyHmac(random(32), data, mac), false);
  assertEquals(await verifyHmac(secret, random(100), mac), false);
  for (const bad of ["", mac.slice(2), mac + "00", "zz" + mac.slice(2), " ".repeat(64)]) {
    assertEquals(await verifyHmac(secret, data, bad), false, JSON.stringify(bad));
  }
});

Deno.test("sha256File: whole below the limit, streamed at and above it, same digests", async () => {
  const dir = Deno.makeTempDirSync();
  try {
    for (const size of [0, 1, 65536, WHOLE_FILE_LIMIT - 1, WHOLE_FILE_LIMIT, WHOLE_FILE_LIMIT + 4097]) {
      const data = random(size);
      Deno.writeFileSync(`${dir}/f`, data);
      assertEquals(await sha256File(`${dir}/f`), { size, sha256: nodeSha(data) }, String(size));
    }
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
