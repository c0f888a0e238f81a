/** runc command lines the engines send (DESIGN.md, "What the engines send"), shared by unit tests. */

/** containerd 1.7's global flags for a container in namespace "default". */
export const CONTAINERD_GLOBAL = [
  "--root",
  "/run/containerd/runc/default",
  "--log",
  "/b/log.json",
  "--log-format",
  "json",
];

/** containerd 1.7's `runc create` of container c1 with bundle /b. */
export const CONTAINERD_CREATE = [...CONTAINERD_GLOBAL, "create", "--bundle", "/b", "--pid-file", "/b/init.pid", "c1"];
