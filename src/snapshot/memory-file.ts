// The memory file: the guest's RAM regions back to back, in guest-physical order, page for page.
//
// Full: every page. Pages that are all zeros are left as holes (the file is sized first, so they read back
// as zeros): a 128 MiB guest that touched 2 MiB makes a file that takes 2 MiB of disk.
// Diff: only the pages written since the last snapshot (the guest's, from KVM_GET_DIRTY_LOG, OR-ed with the
// VMM's own, see GuestMemory.trackVmmWrites), at their offsets in a file of the full size; the state file
// lists them, and mergeDiff() copies them onto the base's memory file, which then restores as the diff's.

import { closeSync, fsyncSync, ftruncateSync, openSync, readSync, writeSync } from "node:fs";
import { PAGE_SIZE } from "../arch/x86_64/layout.ts";
import type { GuestMemory } from "../memory.ts";
import { writeFileAtomically } from "./format.ts";
import { SnapshotError } from "./errors.ts";

/** A run of pages in the memory file: [first page, count]. */
export type PageRun = [number, number];

export interface MemoryWrite {
  /** Bytes of page data written (holes not counted). */
  bytesWritten: number;
  /** Diff: the pages written. */
  pages?: PageRun[];
}

/** True when the page at `firstWord` (32-bit words) is all zeros. OR-ing 32-bit words: BigInt compares are ~10x slower. */
function isZeroPage(words: Uint32Array, firstWord: number): boolean {
  let acc = 0;
  for (let i = firstWord, end = firstWord + PAGE_SIZE / 4; i < end; i++) acc |= words[i]!;
  return acc === 0;
}

function pwriteAll(fd: number, bytes: Uint8Array, position: number): void {
  for (let at = 0; at < bytes.byteLength; ) at += writeSync(fd, bytes, at, bytes.byteLength - at, position + at);
}

/** Write every non-zero page of guest RAM to `path` (atomically). */
export function writeFullMemory(mem: GuestMemory, path: string): MemoryWrite {
  let bytesWritten = 0;
  writeFileAtomically(path, (fd) => {
    ftruncateSync(fd, mem.size);
    let fileOffset = 0;
    for (const r of mem.regions) {
      const words = new Uint32Array(r.bytes.buffer, r.bytes.byteOffset, r.bytes.byteLength / 4);
      const pages = r.bytes.byteLength / PAGE_SIZE;
      // Write runs of non-zero pages with one write each.
      let run = -1;
      const flush = (end: number) => {
        if (run < 0) return;
        pwriteAll(fd, r.bytes.subarray(run * PAGE_SIZE, end * PAGE_SIZE), fileOffset + run * PAGE_SIZE);
        bytesWritten += (end - run) * PAGE_SIZE;
        run = -1;
      };
      for (let p = 0; p < pages; p++) {
        if (isZeroPage(words, (p * PAGE_SIZE) / 4)) flush(p);
        else if (run < 0) run = p;
      }
      flush(pages);
      fileOffset += r.bytes.byteLength;
    }
  });
  return { bytesWritten };
}

/** Write only the pages set in `bitmaps` (one per region, KVM_GET_DIRTY_LOG's format) to `path`. */
export function writeDiffMemory(mem: GuestMemory, path: string, bitmaps: Uint8Array[]): MemoryWrite {
  const pages: PageRun[] = [];
  let bytesWritten = 0;
  writeFileAtomically(path, (fd) => {
    ftruncateSync(fd, mem.size);
    let firstPage = 0;
    mem.regions.forEach((r, i) => {
      const bitmap = bitmaps[i]!;
      const count = r.bytes.byteLength / PAGE_SIZE;
      let run = -1;
      const flush = (end: number) => {
        if (run < 0) return;
        pwriteAll(fd, r.bytes.subarray(run * PAGE_SIZE, end * PAGE_SIZE), (firstPage + run) * PAGE_SIZE);
        pages.push([firstPage + run, end - run]);
        bytesWritten += (end - run) * PAGE_SIZE;
        run = -1;
      };
      for (let p = 0; p < count; p++) {
        const dirty = (bitmap[p >> 3]! >> (p & 7)) & 1;
        if (!dirty) flush(p);
        else if (run < 0) run = p;
      }
      flush(count);
      firstPage += count;
    });
  });
  return { bytesWritten, pages };
}

/** OR two dirty bitmaps of the same size into the first. */
export function orBitmaps(into: Uint8Array, from: Uint8Array | undefined): Uint8Array {
  if (from) for (let i = 0; i < into.byteLength; i++) into[i]! |= from[i] ?? 0;
  return into;
}

/**
 * Copy a diff's pages onto its base's memory file, in place (Firecracker's rebase-snap does the same job).
 * The base then holds the guest as it was at the diff; restore it with the diff's state file.
 */
export function mergeDiff(baseMemPath: string, diffMemPath: string, pages: PageRun[]): number {
  const base = openSync(baseMemPath, "r+");
  const diff = openSync(diffMemPath, "r");
  let copied = 0;
  try {
    const buf = new Uint8Array(256 * PAGE_SIZE);
    for (const [first, count] of pages) {
      for (let done = 0; done < count; ) {
        const n = Math.min(count - done, buf.byteLength / PAGE_SIZE) * PAGE_SIZE;
        const at = (first + done) * PAGE_SIZE;
        const got = readSync(diff, buf, 0, n, at);
        if (got !== n) throw new SnapshotError("MEMORY_FILE_TOO_SHORT", `${diffMemPath}: page ${first + done} lies past its end`);
        pwriteAll(base, buf.subarray(0, n), at);
        done += n / PAGE_SIZE;
        copied += n;
      }
    }
    fsyncSync(base);
  } finally {
    closeSync(base);
    closeSync(diff);
  }
  return copied;
}
