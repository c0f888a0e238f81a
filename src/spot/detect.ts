/**
 * `--provider auto`: which cloud this node runs on. Probes the three metadata protocols in
 * parallel, each bounded by a short timeout, and reads the DMI vendor as a hint:
 * AWS answers IMDSv2's token `PUT` (echoing the TTL header); GCP answers with the header `Metadata-Flavor: Google`;
 * Azure answers `/metadata/instance/compute` (asked with `Metadata: true`) with a compute
 * document naming the VM (`vmId`, `name`). A probe that answers proves its cloud; the DMI
 * vendor only breaks a tie and names the likely cloud when no probe answered. Never throws.
 */

import { errorMessage } from "../util/errors.ts";
import { httpRequest } from "./http.ts";
import { type ProviderName, PROVIDERS } from "./notice.ts";
import { AWS_DEFAULT_ENDPOINT } from "./aws.ts";
import { GCP_DEFAULT_ENDPOINT } from "./gcp.ts";
import { AZURE_DEFAULT_ENDPOINT } from "./azure.ts";

/** Where detection looks; every field has the cloud's default. */
export interface DetectOptions {
  readonly endpoints?: Partial<Readonly<Record<ProviderName, string>>>;
  /** The DMI vendor file (default `/sys/class/dmi/id/sys_vendor`). */
  readonly dmiPath?: string;
  /** Bound of each probe, milliseconds. */
  readonly timeoutMs?: number;
}

/** What detection found: the provider (or `null`), what each probe said, and one sentence for people. */
export interface Detection {
  readonly provider: ProviderName | null;
  readonly dmiVendor: string | null;
  readonly dmiHint: ProviderName | null;
  readonly probes: Readonly<
    Record<ProviderName, { readonly endpoint: string; readonly answered: boolean; readonly why: string }>
  >;
  readonly message: string;
}

/** Default DMI vendor file. */
export const DMI_VENDOR_PATH = "/sys/class/dmi/id/sys_vendor";

/**
 * The cloud a DMI `sys_vendor` names, if any ("Microsoft Corporation" is also plain Hyper-V:
 * a hint, not a proof).
 *
 * @example
 * ```ts
 * import { dmiProvider } from "./detect.ts";
 * if (dmiProvider("Amazon EC2\n") !== "aws" || dmiProvider("Google") !== "gcp") throw new Error();
 * if (dmiProvider("QEMU") !== null) throw new Error();
 * ```
 */
export function dmiProvider(vendor: string): ProviderName | null {
  const v = vendor.trim();
  if (/^Amazon/i.test(v)) return "aws";
  if (/^Google/i.test(v)) return "gcp";
  if (/^Microsoft Corporation$/i.test(v)) return "azure";
  return null;
}

async function probe(provider: ProviderName, endpoint: string, timeoutMs: number): Promise<string | true> {
  try {
    if (provider === "aws") {
      const r = await httpRequest({
        method: "PUT",
        url: `${endpoint}/latest/api/token`,
        headers: { "X-aws-ec2-metadata-token-ttl-seconds": "60" },
        timeoutMs,
      });
      if (r.status !== 200 || r.body.trim() === "") return `token PUT answered HTTP ${r.status}`;
      // IMDS echoes the token's TTL in its answer: a web server answering 200 to anything does not.
      return r.headers["x-aws-ec2-metadata-token-ttl-seconds"] === "60"
        ? true
        : "token PUT answered without X-aws-ec2-metadata-token-ttl-seconds";
    }
    if (provider === "gcp") {
      const r = await httpRequest({
        url: `${endpoint}/computeMetadata/v1/instance/preempted`,
        headers: { "Metadata-Flavor": "Google" },
        timeoutMs,
      });
      if (r.headers["metadata-flavor"] !== "Google") return `answered HTTP ${r.status} without Metadata-Flavor: Google`;
      return r.status === 200 ? true : `answered HTTP ${r.status}`;
    }
    const r = await httpRequest({
      url: `${endpoint}/metadata/instance/compute?api-version=2021-02-01`,
      headers: { Metadata: "true" },
      timeoutMs,
    });
    if (r.status !== 200) return `instance metadata answered HTTP ${r.status}`;
    try {
      const compute = JSON.parse(r.body);
      if (typeof compute?.vmId === "string" && typeof compute?.name === "string") return true;
    } catch { /* below */ }
    return "instance metadata answered without a compute document (vmId, name)";
  } catch (error) {
    return errorMessage(error);
  }
}

/** The default metadata endpoint of each cloud. */
export const DEFAULT_ENDPOINTS: Readonly<Record<ProviderName, string>> = {
  aws: AWS_DEFAULT_ENDPOINT,
  gcp: GCP_DEFAULT_ENDPOINT,
  azure: AZURE_DEFAULT_ENDPOINT,
};

/** Detects the cloud (see the module doc). Takes at most about `timeoutMs` (default 1500). */
export async function detectProvider(options: DetectOptions = {}): Promise<Detection> {
  const timeoutMs = options.timeoutMs ?? 1_500;
  let dmiVendor: string | null = null;
  try {
    dmiVendor = Deno.readTextFileSync(options.dmiPath ?? DMI_VENDOR_PATH).trim();
  } catch { /* no DMI (containers, some VMs) */ }
  const dmiHint = dmiVendor === null ? null : dmiProvider(dmiVendor);
  const endpointOf = (p: ProviderName) => (options.endpoints?.[p] ?? DEFAULT_ENDPOINTS[p]).replace(/\/+$/, "");
  const answers = await Promise.all(PROVIDERS.map((p) => probe(p, endpointOf(p), timeoutMs)));
  const probes = Object.fromEntries(PROVIDERS.map((p, i) => {
    const a = answers[i]!;
    return [p, { endpoint: endpointOf(p), answered: a === true, why: a === true ? "answered" : a }];
  })) as Record<ProviderName, { endpoint: string; answered: boolean; why: string }>;
  const answered = PROVIDERS.filter((p) => probes[p].answered);
  const vendorText = dmiVendor === null ? "no DMI vendor" : `DMI vendor "${dmiVendor}"`;
  let provider: ProviderName | null = null;
  let message: string;
  if (answered.length === 1) {
    provider = answered[0]!;
    message = `detected ${provider}: its metadata server answered at ${probes[provider].endpoint} (${vendorText})`;
  } else if (answered.length > 1) {
    provider = dmiHint !== null && answered.includes(dmiHint) ? dmiHint : answered[0]!;
    message = `detected ${provider}: metadata servers of ${answered.join(", ")} answered, ${
      dmiHint === provider ? `the ${vendorText} names ${provider}` : `${provider} comes first`
    }`;
  } else {
    const tried = PROVIDERS.map((p) => `${p} at ${probes[p].endpoint}: ${probes[p].why}`).join("; ");
    message = `no cloud detected: no metadata server answered within ${timeoutMs} ms (${tried}); ${vendorText}${
      dmiHint !== null ? ` suggests ${dmiHint}` : ""
    }: pass --provider aws, gcp or azure`;
  }
  return { provider, dmiVendor, dmiHint, probes, message };
}
