/**
 * The instruction-set extensions of this node's CPU, recorded in each checkpoint and compared
 * on restore: a process restored on a CPU without an extension it used (chosen at its start by
 * glibc, a JIT or a math library) dies with SIGILL later, far from the cause. Spot fleets mix
 * instance types, so a checkpoint is restored only where every extension of the node that
 * made it is present (host config `cpuFeatureCheck`).
 *
 * Only extensions a program can use count: on x86_64 the `flags` of /proc/cpuinfo that name
 * instructions (not the host's quirks, bugs or hypervisor bits, which differ between identical
 * instance types); on aarch64 every `Features` entry but the two that name no instruction.
 * Known limit: a kernel older than the checkpoint's may not name an extension its CPU has
 * (names are added with kernel releases); such a restore is refused until `cpuFeatureCheck`
 * is `"off"` or the kernels match.
 */

/** x86_64 cpuinfo flags that name instructions user space may use; and every `avx512*`/`amx*` flag. */
const X86_ISA = new Set([
  "mmx",
  "sse",
  "sse2",
  "ssse3",
  "sse4_1",
  "sse4_2",
  "sse4a",
  "pni",
  "popcnt",
  "abm",
  "lzcnt",
  "movbe",
  "cx16",
  "avx",
  "avx2",
  "fma",
  "fma4",
  "f16c",
  "bmi1",
  "bmi2",
  "adx",
  "aes",
  "pclmulqdq",
  "sha_ni",
  "rdrand",
  "rdseed",
  "vaes",
  "vpclmulqdq",
  "gfni",
  "avx_vnni",
  "avx_vnni_int8",
  "avx_ifma",
  "avx_ne_convert",
  "clflushopt",
  "clwb",
  "xsave",
  "xsaveopt",
  "xsavec",
  "erms",
  "fsrm",
  "movdiri",
  "movdir64b",
  "serialize",
  "waitpkg",
  "rdpid",
  "xop",
  "tbm",
]);

/** aarch64 `Features` that are no instructions (the kernel's timer event stream, the cpuid emulation). */
const ARM_NOT_ISA = new Set(["evtstrm", "cpuid"]);

/**
 * The instruction-set extensions in a /proc/cpuinfo text for `arch` (`x86_64`, `aarch64`),
 * sorted; those of the first processor (the kernel lists the common ones).
 *
 * @example
 * ```ts
 * import { cpuFeatures } from "./cpu_features.ts";
 * const x86 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 hypervisor avx512f constant_tsc\n";
 * if (cpuFeatures(x86, "x86_64").join(",") !== "avx2,avx512f,sse2") throw new Error();
 * if (cpuFeatures("Features\t: fp asimd sve\n", "aarch64").join(",") !== "asimd,fp,sve") throw new Error();
 * ```
 */
export function cpuFeatures(cpuinfo: string, arch: string): string[] {
  const field = arch === "aarch64" ? "Features" : "flags";
  const line = cpuinfo.split("\n").find((l) => l.startsWith(field) && /^\S+\s*:/.test(l));
  const all = line?.slice(line.indexOf(":") + 1).trim().split(/\s+/).filter(Boolean) ?? [];
  const isa = arch === "x86_64"
    ? all.filter((f) => X86_ISA.has(f) || /^(avx512|amx)/.test(f))
    : all.filter((f) => !ARM_NOT_ISA.has(f));
  return [...new Set(isa)].sort();
}

/** This node's {@link cpuFeatures}; `undefined` if /proc/cpuinfo cannot be read. */
export function nodeCpuFeatures(): string[] | undefined {
  try {
    return cpuFeatures(Deno.readTextFileSync("/proc/cpuinfo"), Deno.build.arch);
  } catch {
    return undefined;
  }
}

/** The extensions of `saved` missing from `here` (none when either is unknown). */
export function missingCpuFeatures(
  saved: readonly string[] | undefined,
  here: readonly string[] | undefined,
): string[] {
  if (saved === undefined || here === undefined) return [];
  const have = new Set(here);
  return saved.filter((f) => !have.has(f));
}
