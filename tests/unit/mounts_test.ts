import { deepEqual as assertEquals, ok } from "node:assert/strict";
import { onLocalFileSystem } from "../../src/util/mounts.ts";

const INFO = [
  "22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw",
  "40 22 0:40 / /mnt/efs rw,relatime - nfs4 fs-1.efs:/ rw",
  "41 40 0:41 / /mnt/efs/local rw,relatime - tmpfs tmpfs rw",
  "42 22 0:42 / /mnt/sshfs rw,relatime - fuse.sshfs srv:/x rw",
].join("\n") + "\n";

Deno.test("onLocalFileSystem: the deepest mount decides; network and FUSE file systems are not local", () => {
  const dir = Deno.makeTempDirSync();
  try {
    // A real path is needed (it is resolved); the mount table is the fake one.
    ok(onLocalFileSystem(dir, INFO), "under / (ext4)");
    assertEquals(onLocalFileSystem(`${dir}/missing`, INFO), false, "a path that does not exist");
  } finally {
    Deno.removeSync(dir);
  }
  // Real paths under /proc and /dev, with a fake table: the deepest mount point decides.
  const nested =
    "22 1 8:1 / / rw - ext4 x rw\n30 22 0:30 / /proc rw - nfs4 srv:/ rw\n31 22 0:31 / /dev rw - tmpfs t rw\n";
  assertEquals(onLocalFileSystem("/proc/self", nested), false, "/proc is NFS in this table");
  ok(onLocalFileSystem("/dev/null", nested), "/dev is tmpfs in this table");
  ok(onLocalFileSystem("/", "22 1 8:1 / / rw - xfs x rw\n"));
  assertEquals(onLocalFileSystem("/", "22 1 8:1 / / rw - nfs4 x rw\n"), false);
  assertEquals(onLocalFileSystem("/", "22 1 8:1 / / rw - fuse.sshfs x rw\n"), false);
  assertEquals(onLocalFileSystem("/", "22 1 8:1 / / rw - virtiofs x rw\n"), false, "unknown counts as shared");
});
