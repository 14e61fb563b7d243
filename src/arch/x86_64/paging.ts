// Identity-mapping page tables for entering 64-bit mode.
//
// Long mode requires paging (Intel SDM vol. 3A 9.8.5), so before the first instruction the VMM builds
// tables in which every virtual address equals its physical address, using 2 MiB pages: one PML4 entry
// -> one PDPT -> four page directories (one per GiB) -> 2048 2 MiB pages covering the low 4 GiB
// (RAM below the MMIO gap, and the gap itself so that devices are reachable).
// The Linux 64-bit boot protocol only needs the kernel, zero page and command line mapped; Linux builds
// its own tables straight away (Documentation/x86/boot.rst, "64-bit Boot Protocol").

import type { GuestMemory } from "../../memory.ts";
import { PAGE_SIZE, PAGE_TABLES_END, PDE_PAGES, PDE_START, PDPTE_START, PML4_START } from "./layout.ts";

/** Page-table entry bits (SDM vol. 3A Table 4-14 to 4-18). */
export const PTE_P = 1n << 0n; // present
export const PTE_RW = 1n << 1n; // writable
export const PTE_US = 1n << 2n; // user: CPL3 may access
export const PTE_PS = 1n << 7n; // in a page directory entry: maps a 2 MiB page

const ENTRIES = 512;
const TWO_MIB = 2 * 1024 * 1024;

export interface PageTableOptions {
  /** Set the U/S bit everywhere, so CPL3 code (the probe guests) can use the mapping. Linux does not need it. */
  user?: boolean;
}

/**
 * The tables' bytes, PML4_START to PAGE_TABLES_END (PML4, PDPT, then the page directories, contiguous),
 * built once per process for each flag set and copied into each VM's RAM: building them costs a few ms
 * of cold JavaScript, copying 24 KiB does not.
 */
const built = new Map<bigint, Uint8Array>();

function identityTables(flags: bigint): Uint8Array {
  const cached = built.get(flags);
  if (cached) return cached;
  const bytes = new Uint8Array(PAGE_TABLES_END - PML4_START);
  // Every address here is below 4 GiB and 4 KiB-aligned, and the flags are in bits 0-11: each 8-byte entry
  // is its low 32-bit word (address + flags, which is address | flags) and a zero high word. Numbers, not
  // BigInts: this runs once per process, cold, on the way to the first VM's first instruction.
  const word = new Uint32Array(bytes.buffer); // little-endian, as x86 is: word 2n is entry n's low half
  const at = (gpa: number) => (gpa - PML4_START) / 4; // index of the low word of the entry at gpa
  const table = Number(flags);
  const page = table + Number(PTE_PS);
  word[at(PML4_START)] = PDPTE_START + table;
  for (let d = 0; d < PDE_PAGES; d++) {
    const pd = PDE_START + d * PAGE_SIZE;
    word[at(PDPTE_START) + 2 * d] = pd + table;
    const first = at(pd);
    for (let i = 0; i < ENTRIES; i++) word[first + 2 * i] = (d * ENTRIES + i) * TWO_MIB + page;
  }
  built.set(flags, bytes);
  return bytes;
}

/** Write the identity map into guest memory; returns the value for CR3. */
export function writeIdentityPageTables(mem: GuestMemory, opts: PageTableOptions = {}): number {
  mem.write(PML4_START, identityTables(PTE_P | PTE_RW | (opts.user ? PTE_US : 0n)));
  return PML4_START;
}

/**
 * Translate a virtual address through 4-level page tables rooted at `cr3` (SDM vol. 3A 4.5): the guest's
 * own tables, not only ours, with 1 GiB, 2 MiB and 4 KiB pages. Returns undefined for a non-present page.
 * Used to read the instruction at a guest RIP, and by tests.
 */
export function translate(mem: GuestMemory, cr3: number | bigint, va: number | bigint): number | undefined {
  const v = BigInt.asUintN(64, BigInt(va));
  const ADDR = 0x000ffffffffff000n; // bits 51:12 of an entry hold the next table's (or page's) address
  let table = BigInt(cr3) & ADDR;
  // Level shifts: PML4 39, PDPT 30, PD 21, PT 12. A PS bit at PDPT or PD level ends the walk early.
  for (const shift of [39n, 30n, 21n, 12n]) {
    const index = (v >> shift) & 511n;
    const entryAddr = Number(table + index * 8n);
    if (!mem.contains(entryAddr, 8)) return undefined;
    const entry = mem.readU64(entryAddr);
    if (!(entry & PTE_P)) return undefined;
    const isPage = shift === 12n || ((shift === 30n || shift === 21n) && (entry & PTE_PS) !== 0n);
    if (isPage) {
      const pageMask = (1n << shift) - 1n;
      return Number(((entry & ADDR) & ~pageMask) | (v & pageMask));
    }
    table = entry & ADDR;
  }
  return undefined;
}

/**
 * The guest-physical address of each of `n` bytes at guest-virtual `va` (an operand may cross into a page
 * mapped elsewhere), or undefined if any of them is not mapped or lies outside guest RAM.
 */
export function translateBytes(mem: GuestMemory, cr3: number | bigint, va: number | bigint, n: number): number[] | undefined {
  const out: number[] = [];
  for (let k = 0; k < n; k++) {
    const p = translate(mem, cr3, BigInt(va) + BigInt(k));
    if (p === undefined || !mem.contains(p, 1)) return undefined;
    out.push(p);
  }
  return out;
}
