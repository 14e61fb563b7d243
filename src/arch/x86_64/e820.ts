// The e820 memory map: the list of physical address ranges and what each one is (RAM, reserved, ...).
//
// On a PC the BIOS answers INT 15h, AX=E820h with this list; a VMM has no BIOS, so it writes the list
// straight into boot_params.e820_table (zero-page.ts) or, for PVH boot, into hvm_start_info's memmap
// (pvh.ts). The kernel prints what it got as its first lines of memory information:
//
//   BIOS-provided physical RAM map:
//   BIOS-e820: [mem 0x0000000000000000-0x000000000009fbff] usable
//
// formatE820() prints the same lines, so a test can compare kindling's map with the guest's console.

import { EBDA_START, RAM_64BIT_START, HIMEM_START, MMIO32_START } from "./layout.ts";

// Entry types, as arch/x86/include/uapi/asm/e820.h names them (the kernel's internal enum e820_type calls
// them E820_TYPE_RAM, E820_TYPE_RESERVED, ... with the same values).
export const E820_RAM = 1;
export const E820_RESERVED = 2;
export const E820_ACPI = 3;
export const E820_NVS = 4;
export const E820_UNUSABLE = 5;
export const E820_PMEM = 7;
export const E820_PRAM = 12;
/** Linux-internal types that never come from firmware, listed so formatE820 names them like the kernel. */
export const E820_RESERVED_KERN = 128;
export const E820_SOFT_RESERVED = 0xefffffff;

export interface E820Entry {
  addr: number;
  size: number;
  type: number;
}

/**
 * The map for a VM with `memSize` bytes of RAM, laid out as ramRegions() in layout.ts lays the RAM out:
 *
 *   RAM [0, EBDA_START)                      conventional memory, below the EBDA and the VGA/ROM hole
 *   RAM [HIMEM_START, min(end, MMIO32_START)) the kernel and everything else
 *   RAM [RAM_64BIT_START, ...)               what did not fit below the 32-bit MMIO gap
 *
 * [EBDA_START, HIMEM_START) (the MP table, the legacy hole) and the MMIO gap are not listed at all, so the
 * kernel never uses them as RAM.
 */
export function e820Map(memSize: number): E820Entry[] {
  if (!Number.isSafeInteger(memSize) || memSize <= HIMEM_START) {
    throw new Error(`e820: a VM needs more than ${HIMEM_START} bytes (1 MiB) of RAM, got ${memSize}`);
  }
  const map: E820Entry[] = [{ addr: 0, size: EBDA_START, type: E820_RAM }];
  const lowEnd = Math.min(memSize, MMIO32_START);
  map.push({ addr: HIMEM_START, size: lowEnd - HIMEM_START, type: E820_RAM });
  if (memSize > MMIO32_START) {
    map.push({ addr: RAM_64BIT_START, size: memSize - MMIO32_START, type: E820_RAM });
  }
  return map;
}

/** The word the kernel prints for an entry type (e820_print_type() in arch/x86/kernel/e820.c, 6.1). */
export function e820TypeName(type: number): string {
  switch (type) {
    case E820_RAM:
    case E820_RESERVED_KERN:
      return "usable";
    case E820_RESERVED:
      return "reserved";
    case E820_SOFT_RESERVED:
      return "soft reserved";
    case E820_ACPI:
      return "ACPI data";
    case E820_NVS:
      return "ACPI NVS";
    case E820_UNUSABLE:
      return "unusable";
    case E820_PMEM:
    case E820_PRAM:
      return `persistent (type ${type})`;
    default:
      return `type ${type >>> 0}`;
  }
}

/** `%#018Lx`: "0x" and 16 hex digits (the kernel's printk adds the 0x even for zero). */
const hex18 = (n: number) => "0x" + n.toString(16).padStart(16, "0");

/**
 * The entries as e820__print_table() prints them: `BIOS-e820: [mem 0x...-0x...] usable`, one line each,
 * with the range's last byte (addr + size - 1), without the console's timestamp.
 */
export function formatE820(entries: readonly E820Entry[], who = "BIOS-e820"): string[] {
  return entries.map((e) => `${who}: [mem ${hex18(e.addr)}-${hex18(e.addr + e.size - 1)}] ${e820TypeName(e.type)}`);
}
