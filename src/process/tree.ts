/** A container's processes (its init process and every descendant) and their open files, from /proc (read-only). */

/** The pids of `init` and its descendants (`/proc/<pid>/task/<tid>/children`). */
export function processTree(init: number): number[] {
  const seen = new Set<number>();
  const todo = [init];
  while (todo.length > 0) {
    const pid = todo.pop()!;
    if (seen.has(pid)) continue;
    seen.add(pid);
    try {
      for (const task of Deno.readDirSync(`/proc/${pid}/task`)) {
        const text = Deno.readTextFileSync(`/proc/${pid}/task/${task.name}/children`);
        for (const child of text.split(/\s+/).filter(Boolean)) todo.push(Number(child));
      }
    } catch { /* gone meanwhile */ }
  }
  return [...seen];
}

/** One open file descriptor of a process: where to read it in /proc, and what its link says. */
export interface OpenFd {
  /** `/proc/<pid>/fd/<n>` (stat it to reach the file), with `/proc/<pid>/fdinfo/<n>` beside it. */
  readonly path: string;
  readonly infoPath: string;
  /** The descriptor's link text (`anon_inode:inotify`, `/tmp/x (deleted)`, ...). */
  readonly link: string;
}

/** Every open descriptor of `init` and its descendants; a process or descriptor gone meanwhile is skipped. */
export function* openFds(init: number): Generator<OpenFd> {
  for (const pid of processTree(init)) {
    let fds: Deno.DirEntry[];
    try {
      fds = [...Deno.readDirSync(`/proc/${pid}/fd`)];
    } catch {
      continue;
    }
    for (const fd of fds) {
      let link: string;
      try {
        link = Deno.readLinkSync(`/proc/${pid}/fd/${fd.name}`);
      } catch {
        continue; // closed meanwhile
      }
      yield { path: `/proc/${pid}/fd/${fd.name}`, infoPath: `/proc/${pid}/fdinfo/${fd.name}`, link };
    }
  }
}
