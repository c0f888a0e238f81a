import { deepEqual as assertEquals, throws } from "node:assert/strict";
import { assertNoSymlinkParents, isSafeMemberName } from "../../src/rootfs/diff.ts";
import { upperdirFromMountinfo } from "../../src/rootfs/upperdir.ts";

Deno.test("upperdirFromMountinfo", async (t) => {
  const info = [
    "25 1 8:1 / / rw,relatime - ext4 /dev/vda rw",
    "99 25 0:50 / /var/lib/docker/overlay2/abc/merged rw,relatime - overlay overlay " +
    "rw,lowerdir=/l1:/l2,upperdir=/var/lib/docker/overlay2/abc/diff,workdir=/var/lib/docker/overlay2/abc/work",
    "100 25 0:51 / /with\\040space rw - overlay overlay rw,lowerdir=/l,upperdir=/u\\040x,workdir=/w",
    "101 25 0:52 / /notoverlay rw - tmpfs tmpfs rw",
  ].join("\n");
  await t.step("docker overlay2", () => {
    assertEquals(
      upperdirFromMountinfo(info, "/var/lib/docker/overlay2/abc/merged"),
      "/var/lib/docker/overlay2/abc/diff",
    );
  });
  await t.step("escaped spaces", () => assertEquals(upperdirFromMountinfo(info, "/with space"), "/u x"));
  await t.step("not an overlay", () => assertEquals(upperdirFromMountinfo(info, "/notoverlay"), undefined));
  await t.step("absent", () => assertEquals(upperdirFromMountinfo(info, "/nope"), undefined));
});

Deno.test("isSafeMemberName refuses absolute and climbing names", () => {
  assertEquals(["./a/b", "a", "./", "a/..b"].map(isSafeMemberName), [true, true, true, true]);
  assertEquals(["/etc/passwd", "../x", "a/../../x", "./.."].map(isSafeMemberName), [false, false, false, false]);
});

Deno.test("assertNoSymlinkParents refuses to write through a symlink of the new rootfs", () => {
  const dir = Deno.makeTempDirSync();
  try {
    Deno.mkdirSync(`${dir}/real`);
    Deno.symlinkSync("/etc", `${dir}/data`);
    Deno.writeTextFileSync(`${dir}/file`, "");
    assertNoSymlinkParents(dir, "/real/x");
    assertNoSymlinkParents(dir, "/new/dir/x");
    assertNoSymlinkParents(dir, "/data"); // the final component is replaced, not followed
    throws(() => assertNoSymlinkParents(dir, "/data/passwd"), /symlink/);
    throws(() => assertNoSymlinkParents(dir, "/file/x"), /not a directory/);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
