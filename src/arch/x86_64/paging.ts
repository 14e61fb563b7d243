// Identity-mapping page tables for entering 64-bit mode.
//
// Long mode requires paging (Intel SDM vol. 3A 9.8.5), so before the first instruction the VMM builds
// tables in which every virtual address equals its physical address, using 2 MiB pages: one PML4 entry
// -> one PDPT -> four page directories (one per GiB) -> 2048 2 MiB pages covering the low 4 GiB
// (RAM below the MMIO gap, and the gap itself so that devices are reachable).
// The Linux 64-bit boot protocol only needs the kernel, zero page and command line mapped; Linux builds
// its own tables straight away (Documentation/x86/boot.rst, "64-bit Boot Protocol").

import type { GuestMemory } from "../../memory.ts";
import { IDENTITY_MAP_SIZE, PAGE_SIZE, PDE_PAGES, PDE_START, PDPTE_START, PML4_START } from "./layout.ts";

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

/** Write the identity map into guest memory; returns the value for CR3. */
export function writeIdentityPageTables(mem: GuestMemory, opts: PageTableOptions = {}): number {
  const flags = PTE_P | PTE_RW | (opts.user ? PTE_US : 0n);
  mem.fill(PML4_START, PAGE_SIZE);
  mem.writeU64(PML4_START, BigInt(PDPTE_START) | flags);
  mem.fill(PDPTE_START, PAGE_SIZE);
  for (let d = 0; d < PDE_PAGES; d++) {
    const pd = PDE_START + d * PAGE_SIZE;
    mem.writeU64(PDPTE_START + d * 8, BigInt(pd) | flags);
    for (let i = 0; i < ENTRIES; i++) {
      const phys = BigInt(d * ENTRIES + i) * BigInt(TWO_MIB);
      mem.writeU64(pd + i * 8, phys | flags | PTE_PS);
    }
  }
  return PML4_START;
}

/** Walk the tables for one address (used by tests and --explain): the physical address it maps to. */
export function translate(mem: GuestMemory, cr3: number, va: number): number | undefined {
  if (va >= IDENTITY_MAP_SIZE) return undefined;
  const pml4e = mem.readU64(cr3 + ((va / 2 ** 39) & 511) * 8);
  if (!(pml4e & PTE_P)) return undefined;
  const pdpte = mem.readU64(Number(pml4e & ~0xfffn) + (Math.floor(va / 2 ** 30) & 511) * 8);
  if (!(pdpte & PTE_P)) return undefined;
  const pde = mem.readU64(Number(pdpte & ~0xfffn) + (Math.floor(va / TWO_MIB) & 511) * 8);
  if (!(pde & PTE_P) || !(pde & PTE_PS)) return undefined;
  return Number(pde & ~0x1fffffn) + (va % TWO_MIB);
}
