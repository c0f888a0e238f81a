/**
 * The on-disk layout of a checkpoint root, named once: a contract between the nodes that
 * share a root and between ARCH versions (docs/checkpoint-format.md). `MANIFEST_VERSION`
 * versions it: a change to any name here, or to what a file holds, is a new version.
 *
 *     <root>/<scope>/<key>/
 *       current -> ckpt-<stamp>          the key's committed checkpoint (a relative symlink)
 *       ckpt-<stamp>/                    a committed checkpoint
 *         manifest.json, manifest.hmac   what it holds (every file's size and sha256), signed
 *         criu/                          CRIU's images (pages-<n>.img: the raw page data);
 *                                        absent in a task checkpoint (version 3)
 *         rootfs.tar                     the writable layer
 *         consumed                       written by the restore that consumed it
 *       quarantine-<stamp>/              moved aside after a failed verification or restore
 *       .tmp-<stamp>/                    being written (criu/ and work/, CRIU's logs)
 *       .current-<random>                the next `current` link, before its rename
 *     <root>/<scope>/.removed-<key>-…    a key being deleted
 *     <root>/<scope>/.templates/<name>/  a template (`arch publish`), laid out like a key
 */

import { isSafeSegment } from "../util/paths.ts";

/** The manifest format (and so the layout) of a process checkpoint (CRIU's images and the writable layer). */
export const MANIFEST_VERSION = 2;
/**
 * The manifest format of a task checkpoint (`kind: "task"`): the writable layer only, saved
 * when the job exited with its `ARCH_CHECKPOINT_EXIT_CODE`. A version of its own, so an ARCH
 * that reads only version 2 leaves it alone instead of handing CRIU a checkpoint without images.
 */
export const TASK_MANIFEST_VERSION = 3;
/** Every manifest version this ARCH reads. */
export const READ_MANIFEST_VERSIONS: readonly number[] = [MANIFEST_VERSION, TASK_MANIFEST_VERSION];

/** The manifest: every file of the checkpoint with its size and sha256, and what it was taken from. */
export const MANIFEST_FILE = "manifest.json";
/** The manifest's HMAC-SHA256 with the node's checkpoint secret, hex. */
export const SIGNATURE_FILE = "manifest.hmac";
/** Written by the restore that consumed the checkpoint (who, when). */
export const CONSUMED_FILE = "consumed";
/** CRIU's image directory inside a checkpoint. */
export const CRIU_DIR = "criu";
/** CRIU's work directory (its logs) inside a checkpoint being written; removed before the commit. */
export const CRIU_WORK_DIR = "work";
/** The archive of the writable layer: the only name a manifest may give it. */
export const ROOTFS_ARCHIVE = "rootfs.tar";

/** The directory of a scope that holds its templates (`templates.ts`); no key may be named so (it begins with "."). */
export const TEMPLATES_DIR = ".templates";

/** Files of a checkpoint directory that the manifest does not list. */
export const UNLISTED: ReadonlySet<string> = new Set([MANIFEST_FILE, SIGNATURE_FILE, CONSUMED_FILE]);

/** CRIU's page images, relative to the image directory: the only big files a dump writes. */
export const PAGES_IMAGE = /^pages-\d+\.img$/;

/**
 * CRIU's raw page data (`criu/pages-<n>.img`): CRIU copies these bytes into the restored
 * memory at the offsets its (verified) pagemap images give, and parses nothing in them.
 */
export const isPageData = (path: string): boolean =>
  path.startsWith(`${CRIU_DIR}/`) && PAGES_IMAGE.test(path.slice(CRIU_DIR.length + 1));

/** Name prefix of a committed checkpoint directory in a key directory. */
export const CHECKPOINT_PREFIX = "ckpt-";
/** Name prefix of a checkpoint being written. */
export const TMP_PREFIX = ".tmp-";
/** Name prefix of a checkpoint moved aside after a failed restore. */
export const QUARANTINE_PREFIX = "quarantine-";
/** The symlink naming the committed checkpoint. */
export const CURRENT_LINK = "current";
/** Name prefix of the new `current` link before its atomic rename. */
export const CURRENT_TMP_PREFIX = ".current-";
/** Name prefix (in the scope directory) of a key being deleted. */
export const REMOVED_PREFIX = ".removed-";

/**
 * Why `name` cannot name a template (one sentence), or `undefined`.
 *
 * @example
 * ```ts
 * import { templateNameProblem } from "./layout.ts";
 * if (templateNameProblem("warm-model-v2") !== undefined) throw new Error();
 * if (templateNameProblem("../x") === undefined || templateNameProblem(".hidden") === undefined) throw new Error();
 * ```
 */
export function templateNameProblem(name: string): string | undefined {
  if (!isSafeSegment(name) || name.startsWith(".") || name.length > 128) {
    return `${JSON.stringify(name)} is not a template name: use letters, digits, "_", "-", "." and "+" ` +
      `(at most 128, not beginning with ".")`;
  }
  return undefined;
}
