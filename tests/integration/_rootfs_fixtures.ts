/**
 * Fixtures of the rootfs tests: scratch tmpfs mounts, real overlay mounts, tree snapshots.
 * Root only; everything is unmounted and removed on dispose.
 */

const decoder = new TextDecoder();

/** Runs mount(8) (or umount(8)); throws with its stderr on failure. */
export async function mountProgram(args: string[], cwd?: string): Promise<void> {
  const out = await new Deno.Command("mount", { args, stdout: "null", stderr: "piped", ...(cwd ? { cwd } : {}) })
    .output();
  if (!out.success) throw new Error(`mount ${args.join(" ")}: ${decoder.decode(out.stderr).trim()}`);
}

export async function umountProgram(target: string): Promise<void> {
  const out = await new Deno.Command("umount", { args: [target], stdout: "null", stderr: "piped" }).output();
  if (!out.success) throw new Error(`umount ${target}: ${decoder.decode(out.stderr).trim()}`);
}

export function isMounted(path: string): boolean {
  return Deno.readTextFileSync("/proc/self/mountinfo").split("\n").some((l) => l.split(" ")[4] === path);
}

/** A private directory on its own tmpfs of `sizeMiB` (so tests can run a file system full). */
export async function scratchFs(sizeMiB: number): Promise<{ dir: string } & AsyncDisposable> {
  const dir = Deno.makeTempDirSync({ prefix: "arch-rootfs-test-" });
  await mountProgram(["-t", "tmpfs", "-o", `size=${sizeMiB}m,mode=0700`, "tmpfs", dir]);
  return {
    dir,
    async [Symbol.asyncDispose]() {
      while (isMounted(dir)) await umountProgram(dir);
      Deno.removeSync(dir, { recursive: true });
    },
  };
}

export interface Overlay extends AsyncDisposable {
  readonly merged: string;
  readonly upper: string;
  readonly work: string;
}

/** Mounts an overlay of `lowers` (top first) with a new empty upperdir, all under `parent`. */
export async function mountOverlay(parent: string, lowers: string[]): Promise<Overlay> {
  const dir = Deno.makeTempDirSync({ dir: parent, prefix: "ovl-" });
  const [merged, upper, work] = ["merged", "upper", "work"].map((n) => `${dir}/${n}`) as [string, string, string];
  for (const d of [merged, upper, work]) Deno.mkdirSync(d);
  await mountProgram([
    "-t",
    "overlay",
    "-o",
    `lowerdir=${lowers.join(":")},upperdir=${upper},workdir=${work}`,
    "overlay",
    merged,
  ]);
  return {
    merged,
    upper,
    work,
    async [Symbol.asyncDispose]() {
      while (isMounted(merged)) await umountProgram(merged);
    },
  };
}

/** Builds a directory tree: `path → content` (string: file; `{ symlink }`; `null`: directory). */
export function writeTree(root: string, tree: Record<string, string | null | { symlink: string }>): void {
  for (const [rel, value] of Object.entries(tree)) {
    const path = `${root}/${rel}`;
    Deno.mkdirSync(path.replace(/\/[^/]*$/, ""), { recursive: true });
    if (value === null) Deno.mkdirSync(path, { recursive: true });
    else if (typeof value === "string") Deno.writeTextFileSync(path, value);
    else Deno.symlinkSync(value.symlink, path);
  }
}

/**
 * Every entry under `root`, sorted, with its type, mode, owner, size, link target or content
 * (files: all bytes, as text): two equal snapshots mean byte-identical trees.
 */
export function snapshot(root: string): string[] {
  const lines: string[] = [];
  const walk = (rel: string) => {
    for (const entry of Deno.readDirSync(`${root}${rel}`)) {
      const path = `${rel}/${entry.name}`;
      const info = Deno.lstatSync(`${root}${path}`);
      let what: string;
      if (info.isSymlink) what = `-> ${Deno.readLinkSync(`${root}${path}`)}`;
      else if (info.isFile) {
        what = `nlink=${info.nlink} ${info.size} ${
          JSON.stringify(decoder.decode(Deno.readFileSync(`${root}${path}`)))
        }`;
      } else if (info.isDirectory) what = "dir";
      else what = `rdev ${info.rdev}`;
      lines.push(`${path} ${info.mode?.toString(8)} ${info.uid}:${info.gid} ${what}`);
      if (info.isDirectory) walk(path);
    }
  };
  walk("");
  return lines.sort();
}
