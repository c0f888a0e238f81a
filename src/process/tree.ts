/** A container's processes: its init process and every descendant, from /proc (read-only). */

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
