// Writes initramfs.cpio: the userland (userland.ts) as one uncompressed newc archive (cpio.ts).
//
// Uncompressed on purpose: the kernel has no initramfs decompressor configured (guest/kernel/kindling.config,
// CONFIG_RD_*), and unpacking a plain archive costs the guest nothing but a copy.

import { writeFileSync } from "node:fs";
import { writeCpio } from "./cpio.ts";
import { userlandEntries } from "./userland.ts";

/** Writes the archive to `path` and returns its size in bytes. */
export function writeInitramfs(path: string): number {
  const archive = writeCpio(userlandEntries());
  writeFileSync(path, archive);
  return archive.length;
}
