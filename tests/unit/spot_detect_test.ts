/**
 * `--provider auto`: each cloud is detected from its own protocol (local servers), a plain
 * web server or a closed port is no cloud, none is said clearly, and the DMI vendor breaks a
 * tie and is named when nothing answered.
 */

import { deepEqual, equal, ok } from "node:assert/strict";
import { detectProvider, dmiProvider } from "../../src/spot/detect.ts";
import { AwsImds, AzureImds, GcpMetadata, NotACloud } from "../harness/metadata_servers.ts";

async function closedUrl(): Promise<string> {
  const s = new NotACloud();
  const url = s.url;
  await s.close();
  return url;
}

function dmiFile(vendor: string): string {
  const path = Deno.makeTempFileSync({ prefix: "arch-dmi-" });
  Deno.writeTextFileSync(path, vendor + "\n");
  return path;
}

Deno.test("detect: each cloud is recognised by its own protocol", async (t) => {
  await using aws = new AwsImds();
  await using gcp = new GcpMetadata();
  await using azure = new AzureImds();
  await using plain = new NotACloud();
  const dmiPath = dmiFile("QEMU");
  for (const [name, url] of [["aws", aws.url], ["gcp", gcp.url], ["azure", azure.url]] as const) {
    await t.step(name, async () => {
      // The other two clouds' probes go to a web server that is no cloud's, as on a real node.
      const endpoints = { aws: plain.url, gcp: plain.url, azure: plain.url, [name]: url };
      const d = await detectProvider({ endpoints, dmiPath, timeoutMs: 1_000 });
      equal(d.provider, name);
      ok(d.message.startsWith(`detected ${name}: its metadata server answered at ${url}`), d.message);
    });
  }
  Deno.removeSync(dmiPath);
});

Deno.test("detect: no cloud: says so, names what each probe saw, within the timeout", async () => {
  await using plain = new NotACloud();
  await using slow = new NotACloud();
  slow.delayMs = 5_000;
  const closed = await closedUrl();
  const started = Date.now();
  const d = await detectProvider({
    endpoints: { aws: plain.url, gcp: closed, azure: slow.url },
    dmiPath: "/nonexistent/sys_vendor",
    timeoutMs: 300,
  });
  ok(Date.now() - started < 1_500, "probes run in parallel, each bounded");
  equal(d.provider, null);
  ok(d.message.startsWith("no cloud detected: no metadata server answered within 300 ms"), d.message);
  ok(d.message.includes(`aws at ${plain.url}: token PUT answered HTTP 404`), d.message);
  ok(d.message.includes(`gcp at ${closed}: GET ${closed}/computeMetadata/v1/instance/preempted:`), d.message);
  ok(d.message.includes("no answer within 300 ms"), d.message);
  ok(d.message.endsWith("no DMI vendor: pass --provider aws, gcp or azure"), d.message);
});

Deno.test("detect: a server answering 200 to anything is no cloud", async () => {
  await using fake = new NotACloud();
  fake.answer = { status: 200, body: "FALSE" };
  const d = await detectProvider({ endpoints: { aws: fake.url, gcp: fake.url, azure: fake.url }, timeoutMs: 500 });
  equal(d.provider, null, "a server that answers 200 to anything is no cloud");
  ok(d.probes.gcp.why.includes("without Metadata-Flavor: Google"), d.probes.gcp.why);
  ok(d.probes.azure.why.includes("without a compute document"), d.probes.azure.why);
  ok(d.probes.aws.why.includes("without X-aws-ec2-metadata-token-ttl-seconds"), d.probes.aws.why);
});

Deno.test("detect: the DMI vendor breaks a tie and is named when nothing answered", async () => {
  await using aws = new AwsImds();
  await using azure = new AzureImds();
  const closed = await closedUrl();
  const ms = dmiFile("Microsoft Corporation");
  const tie = await detectProvider({ endpoints: { aws: aws.url, gcp: closed, azure: azure.url }, dmiPath: ms });
  equal(tie.provider, "azure");
  ok(tie.message.includes("metadata servers of aws, azure answered"), tie.message);
  const none = await detectProvider({ endpoints: { aws: closed, gcp: closed, azure: closed }, dmiPath: ms });
  equal(none.provider, null);
  ok(none.message.includes(`DMI vendor "Microsoft Corporation" suggests azure`), none.message);
  Deno.removeSync(ms);
});

Deno.test("detect: DMI vendors", () => {
  deepEqual(
    ["Amazon EC2", "Google", "Microsoft Corporation", "QEMU", ""].map(dmiProvider),
    ["aws", "gcp", "azure", null, null],
  );
});
