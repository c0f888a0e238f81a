/**
 * Unpacks an engine generation (runc, containerd, Docker) from Debian packages into a
 * private prefix with `dpkg -x`, without installing them: the system's own packages stay
 * as they are. Used to run the tests on a second engine generation. Requires root, apt and
 * network access to the Debian mirror.
 *
 * Guarantees: the prefix appears whole or not at all (unpacked beside it, then renamed);
 * `engines.json` in it records each package's version.
 */

import { mustRun } from "../../src/process/exec.ts";

/** What `engines.json` holds: package name to version. */
export type EngineVersions = Record<string, string>;

/**
 * Downloads `packages` from Debian suite `suite` (`apt-get download`) and unpacks them into `dir`, replacing what
 * was there. Requires root, apt and network access.
 */
export async function unpackEngines(dir: string, packages: readonly string[], suite: string): Promise<void> {
  const parent = dir.slice(0, dir.lastIndexOf("/"));
  Deno.mkdirSync(parent, { recursive: true, mode: 0o755 });
  const tmp = Deno.makeTempDirSync({ dir: parent, prefix: ".unpack-" });
  try {
    Deno.mkdirSync(`${tmp}/debs`);
    await mustRun({
      cmd: "apt-get",
      args: ["download", "-qq", "-o", "APT::Sandbox::User=root", ...packages.map((p) => `${p}/${suite}`)],
      cwd: `${tmp}/debs`,
    });
    const versions: EngineVersions = {};
    for (const deb of [...Deno.readDirSync(`${tmp}/debs`)].map((e) => e.name).sort()) {
      const path = `${tmp}/debs/${deb}`;
      const fields = await mustRun({ cmd: "dpkg-deb", args: ["--field", path, "Package", "Version"] });
      const [name, version] = fields.stdout.trim().split("\n").map((l) => l.split(": ")[1]!);
      versions[name!] = version!;
      await mustRun({ cmd: "dpkg-deb", args: ["-x", path, `${tmp}/root`] });
    }
    Deno.removeSync(`${tmp}/debs`, { recursive: true });
    Deno.writeTextFileSync(`${tmp}/root/engines.json`, JSON.stringify(versions, null, 2) + "\n");
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    Deno.renameSync(`${tmp}/root`, dir);
  } finally {
    Deno.removeSync(tmp, { recursive: true });
  }
}
