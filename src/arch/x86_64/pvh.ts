// PVH boot: the other way into a vmlinux. Instead of the Linux boot protocol's zero page, the kernel gets
// a struct hvm_start_info and starts at the 32-bit entry named by its XEN_ELFNOTE_PHYS32_ENTRY note
// (elf.ts finds it). Linux's pvh_start_xen (arch/x86/platform/pvh/head.S) then builds its own boot_params
// from this structure.
//
// Layouts from xen/include/public/arch-x86/hvm/start_info.h. The entry state (xen's docs/misc/pvh.pandoc):
// 32-bit protected mode, paging off, flat CS/DS/ES/SS, EBX = the hvm_start_info address.

import type { GuestMemory } from "../../memory.ts";
import { StructView, struct } from "../../kvm/struct.ts";
import type { E820Entry } from "./e820.ts";
import { MMIO32_END, PVH_INFO_START, PVH_MEMMAP_MAX_ENTRIES, PVH_MEMMAP_START, PVH_MODLIST_START } from "./layout.ts";

export const XEN_HVM_START_MAGIC_VALUE = 0x336ec578;
/** Version 1 added memmap_paddr and memmap_entries. */
export const XEN_HVM_START_INFO_VERSION = 1;

// Memory map entry types; start_info.h defines them equal to the e820 types.
export const XEN_HVM_MEMMAP_TYPE_RAM = 1;
export const XEN_HVM_MEMMAP_TYPE_RESERVED = 2;
export const XEN_HVM_MEMMAP_TYPE_ACPI = 3;
export const XEN_HVM_MEMMAP_TYPE_NVS = 4;
export const XEN_HVM_MEMMAP_TYPE_UNUSABLE = 5;
export const XEN_HVM_MEMMAP_TYPE_DISABLED = 6;
export const XEN_HVM_MEMMAP_TYPE_PMEM = 7;

export const hvm_start_info = struct("hvm_start_info", [
  ["magic", "u32"],
  ["version", "u32"],
  ["flags", "u32"], // SIF_xxx; 0 for a plain (unprivileged, non-Xen) guest
  ["nr_modules", "u32"],
  ["modlist_paddr", "u64"],
  ["cmdline_paddr", "u64"],
  ["rsdp_paddr", "u64"], // 0: no ACPI (kindling describes CPUs with the MP table instead)
  ["memmap_paddr", "u64"],
  ["memmap_entries", "u32"],
  ["reserved", "u32"],
], { size: 56 });

export const hvm_modlist_entry = struct("hvm_modlist_entry", [
  ["paddr", "u64"], ["size", "u64"], ["cmdline_paddr", "u64"], ["reserved", "u64"],
], { size: 32 });

export const hvm_memmap_table_entry = struct("hvm_memmap_table_entry", [
  ["addr", "u64"], ["size", "u64"], ["type", "u32"], ["reserved", "u32"],
], { size: 24 });

export interface PvhOptions {
  cmdline: { addr: number };
  e820: readonly E820Entry[];
  /** The initrd, passed as the one module. */
  initrd?: { addr: number; size: number };
}

/**
 * Write hvm_start_info at PVH_INFO_START, the initrd's module entry at PVH_MODLIST_START and the memory
 * map at PVH_MEMMAP_START. Returns PVH_INFO_START, the value for the vCPU's EBX.
 */
export function writePvhStartInfo(mem: GuestMemory, opts: PvhOptions): number {
  if (opts.e820.length > PVH_MEMMAP_MAX_ENTRIES) {
    throw new Error(`PVH memory map has ${opts.e820.length} entries; there is room for ${PVH_MEMMAP_MAX_ENTRIES}`);
  }
  const info = new StructView(hvm_start_info, mem.slice(PVH_INFO_START, hvm_start_info.size));
  info.bytes.fill(0);
  info.assign({
    magic: XEN_HVM_START_MAGIC_VALUE,
    version: XEN_HVM_START_INFO_VERSION,
    cmdline_paddr: opts.cmdline.addr,
    rsdp_paddr: 0,
    memmap_paddr: PVH_MEMMAP_START,
    memmap_entries: opts.e820.length,
  });

  const map = mem.slice(PVH_MEMMAP_START, opts.e820.length * hvm_memmap_table_entry.size);
  opts.e820.forEach((e, i) => {
    // XEN_HVM_MEMMAP_TYPE_* have the e820 values, so the types carry over unchanged.
    new StructView(hvm_memmap_table_entry, map, i * hvm_memmap_table_entry.size).assign({
      addr: e.addr, size: e.size, type: e.type, reserved: 0,
    });
  });

  if (opts.initrd) {
    if (opts.initrd.addr + opts.initrd.size > MMIO32_END) throw new Error("PVH: initrd must lie below 4 GiB");
    new StructView(hvm_modlist_entry, mem.slice(PVH_MODLIST_START, hvm_modlist_entry.size)).assign({
      paddr: opts.initrd.addr, size: opts.initrd.size, cmdline_paddr: 0, reserved: 0,
    });
    info.assign({ nr_modules: 1, modlist_paddr: PVH_MODLIST_START });
  }
  return PVH_INFO_START;
}
