/**
 * ARCH's version: the one place it is written (deno.json's `version` must match; a unit test
 * checks). Recorded in every checkpoint manifest and printed by `arch --version`.
 */
export const ARCH_VERSION = "0.1.0";
