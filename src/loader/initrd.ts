// Placing the initrd (initial RAM disk): a cpio archive the kernel unpacks as its first root filesystem.
//
// boot.rst ("initrd_addr_max", and its advice to loaders) asks for the initrd as high in memory as
// possible, with its last byte at or below hdr.initrd_addr_max. Kindling also keeps it below the 32-bit
// MMIO gap (ramdisk_image is a 32-bit field), page-aligned, and above the kernel, so the kernel's own
// memory never overlaps it. The zero page (or, for PVH, the module list) then tells the kernel where it is.

import type { GuestMemory } from "../memory.ts";
import { HIMEM_START, MMIO32_START, PAGE_SIZE } from "../arch/x86_64/layout.ts";

export class InitrdError extends Error {
  override name = "InitrdError";
}

const hex = (n: number) => `0x${n.toString(16)}`;
const alignUp = (n: number, a: number) => Math.ceil(n / a) * a;
const alignDown = (n: number, a: number) => Math.floor(n / a) * a;

/** The end of the RAM that holds the kernel: the region at HIMEM_START, cut at the MMIO gap. */
export function lowRamEnd(mem: GuestMemory): number {
  const r = mem.regions.find((x) => HIMEM_START >= x.gpa && HIMEM_START < x.gpa + x.bytes.byteLength);
  if (!r) throw new InitrdError(`no guest RAM at HIMEM_START (${hex(HIMEM_START)})`);
  return Math.min(r.gpa + r.bytes.byteLength, MMIO32_START);
}

export interface InitrdPlacementOptions {
  size: number;
  /** First byte after the kernel's memory (kernel.ts's kernelEnd). */
  kernelEnd: number;
  /** End of RAM below the gap (lowRamEnd). */
  ramEnd: number;
  /** boot_params.hdr.initrd_addr_max: the highest address the initrd may occupy. Absent for an ELF vmlinux. */
  initrdAddrMax?: number;
}

/** The guest-physical address for an initrd of `size` bytes. */
export function placeInitrd(o: InitrdPlacementOptions): number {
  if (!Number.isSafeInteger(o.size) || o.size <= 0) throw new InitrdError("initrd is empty");
  const lowest = alignUp(o.kernelEnd, PAGE_SIZE);
  if (lowest + o.size > o.ramEnd) {
    throw new InitrdError(
      `initrd of ${o.size} bytes does not fit in RAM: ${Math.max(0, o.ramEnd - lowest)} bytes are free between the kernel's end (${hex(lowest)}) and the end of RAM below the MMIO gap (${hex(o.ramEnd)})`,
    );
  }
  let limit = o.ramEnd;
  if (o.initrdAddrMax !== undefined) {
    limit = Math.min(limit, o.initrdAddrMax + 1);
    if (lowest + o.size > limit) {
      throw new InitrdError(
        `initrd of ${o.size} bytes does not fit below initrd_addr_max ${hex(o.initrdAddrMax)}: the kernel ends at ${hex(lowest)}`,
      );
    }
  }
  return alignDown(limit - o.size, PAGE_SIZE);
}

/** Place the initrd and copy it into guest memory. */
export function loadInitrd(
  mem: GuestMemory,
  initrd: Uint8Array,
  kernelEnd: number,
  setupHeader?: { initrd_addr_max: number },
): { addr: number; size: number } {
  const addr = placeInitrd({
    size: initrd.byteLength,
    kernelEnd,
    ramEnd: lowRamEnd(mem),
    initrdAddrMax: setupHeader?.initrd_addr_max,
  });
  mem.write(addr, initrd);
  return { addr, size: initrd.byteLength };
}
