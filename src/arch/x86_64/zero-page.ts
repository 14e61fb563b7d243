// The zero page: struct boot_params at ZERO_PAGE_START, filled in for a loaded kernel. The vCPU enters the
// kernel's 64-bit entry point with RSI pointing here (boot.rst, "64-bit Boot Protocol").
//
// boot.rst asks a loader to start from a zeroed page, copy the kernel's setup header into boot_params.hdr,
// and then set the fields a loader owns ("write" and "modify" fields in boot.rst's table). An ELF vmlinux
// has no setup header, so then kindling writes the two magic numbers itself and leaves the rest zero, as
// Firecracker does.

import type { GuestMemory } from "../../memory.ts";
import { StructView } from "../../kvm/struct.ts";
import {
  BOOT_FLAG_MAGIC, CAN_USE_HEAP, E820_MAX_ENTRIES_ZEROPAGE, HDRS_MAGIC, LOADED_HIGH, NORMAL_VGA,
  TYPE_OF_LOADER_UNDEFINED, boot_params, setup_header,
} from "./boot-params.ts";
import type { E820Entry } from "./e820.ts";
import { CMDLINE_MAX_SIZE, MMIO32_END, ZERO_PAGE_START } from "./layout.ts";

export interface ZeroPageOptions {
  /** The kernel's setup header as its image holds it (bzImage only): copied into boot_params.hdr. */
  setupHeader?: Uint8Array;
  /** Where the protected-mode kernel was loaded (bzImage only): written to hdr.code32_start. */
  kernelLoadAddr?: number;
  /** The command line in guest memory (address, and size with the NUL). */
  cmdline: { addr: number; size: number };
  initrd?: { addr: number; size: number };
  e820: readonly E820Entry[];
}

const hex = (n: number) => `0x${n.toString(16)}`;

/** A 4096-byte boot_params for the options (pure: nothing is written to guest memory). */
export function buildBootParams(opts: ZeroPageOptions): Uint8Array {
  const page = new Uint8Array(boot_params.size);
  const bp = new StructView(boot_params, page);

  if (opts.setupHeader) {
    if (opts.setupHeader.byteLength > setup_header.size) {
      throw new Error(`setup header is ${opts.setupHeader.byteLength} bytes; struct setup_header has ${setup_header.size}`);
    }
    bp.slice("hdr", opts.setupHeader.byteLength).set(opts.setupHeader);
    // The copied header must be a real one: boot_flag 0xAA55 and "HdrS", or the kernel's own code that
    // reads it would find garbage.
    if (bp.get("hdr.boot_flag") !== BOOT_FLAG_MAGIC) {
      throw new Error(`setup header: boot_flag is ${hex(bp.get("hdr.boot_flag"))}, expected ${hex(BOOT_FLAG_MAGIC)}`);
    }
    if (bp.get("hdr.header") !== HDRS_MAGIC) {
      throw new Error(`setup header: header is ${hex(bp.get("hdr.header"))}, expected ${hex(HDRS_MAGIC)} ("HdrS")`);
    }
    if (opts.kernelLoadAddr !== undefined) bp.set("hdr.code32_start", opts.kernelLoadAddr);
  } else {
    bp.set("hdr.boot_flag", BOOT_FLAG_MAGIC);
    bp.set("hdr.header", HDRS_MAGIC);
    // boot.rst: the command line may hold cmdline_size bytes before its NUL; say what kindling allows.
    bp.set("hdr.cmdline_size", CMDLINE_MAX_SIZE - 1);
  }

  bp.set("hdr.type_of_loader", TYPE_OF_LOADER_UNDEFINED);
  // LOADED_HIGH: the protected-mode code is at 0x100000. CAN_USE_HEAP stays clear: only the real-mode setup
  // code uses heap_end_ptr, and a 64-bit entry skips it.
  bp.set("hdr.loadflags", (bp.get("hdr.loadflags") | LOADED_HIGH) & ~CAN_USE_HEAP);
  bp.set("hdr.vid_mode", NORMAL_VGA);

  if (opts.cmdline.addr + opts.cmdline.size > MMIO32_END) throw new Error(`command line at ${hex(opts.cmdline.addr)} is above 4 GiB`);
  bp.set("hdr.cmd_line_ptr", opts.cmdline.addr);

  if (opts.initrd) {
    // ramdisk_image is 32 bits; above 4 GiB would need ext_ramdisk_image and XLF_CAN_BE_LOADED_ABOVE_4G.
    if (opts.initrd.addr + opts.initrd.size > MMIO32_END) throw new Error(`initrd at ${hex(opts.initrd.addr)} is above 4 GiB`);
    bp.set("hdr.ramdisk_image", opts.initrd.addr);
    bp.set("hdr.ramdisk_size", opts.initrd.size);
  }

  if (opts.e820.length > E820_MAX_ENTRIES_ZEROPAGE) {
    throw new Error(`e820 map has ${opts.e820.length} entries; boot_params.e820_table holds ${E820_MAX_ENTRIES_ZEROPAGE}`);
  }
  opts.e820.forEach((e, i) => {
    bp.set(`e820_table.${i}.addr`, e.addr);
    bp.set(`e820_table.${i}.size`, e.size);
    bp.set(`e820_table.${i}.type`, e.type);
  });
  bp.set("e820_entries", opts.e820.length);
  return page;
}

/** Fill the zero page at ZERO_PAGE_START; returns its address (for the vCPU's RSI). */
export function writeZeroPage(mem: GuestMemory, opts: ZeroPageOptions): number {
  mem.write(ZERO_PAGE_START, buildBootParams(opts));
  return ZERO_PAGE_START;
}
