/** Durability helpers: fsync a file or a directory by path. */

/** Opens `path` read-only and fsyncs it (works for directories on Linux). */
export function fsyncPath(path: string): void {
  const file = Deno.openSync(path, { read: true });
  try {
    file.syncSync();
  } finally {
    file.close();
  }
}
