// The boot page tables and GDT, checked without KVM: what the CPU would see when it walks them.

import { expect, test } from "bun:test";
import { GuestMemory } from "../src/memory.ts";
import { PTE_P, PTE_PS, PTE_RW, PTE_US, translate, writeIdentityPageTables } from "../src/arch/x86_64/paging.ts";
import { BOOT_CS, BOOT_CS32, BOOT_DS, BOOT_TSS, USER_CS, USER_DS, bootGdt, segmentFromGdt } from "../src/arch/x86_64/gdt.ts";
import { BOOT_TSS_START, GiB, MiB, PDE_START, PML4_START } from "../src/arch/x86_64/layout.ts";

test("the identity map covers the low 4 GiB with 2 MiB pages", () => {
  const mem = GuestMemory.plain([{ gpa: 0, size: 1 * MiB }]);
  const cr3 = writeIdentityPageTables(mem);
  expect(cr3).toBe(PML4_START);
  for (const va of [0, 0x1000, 0x100000, 0x1000000 + 0x123, 3 * GiB, 0xfee00000, 4 * GiB - 1]) expect(translate(mem, cr3, va)).toBe(va);
  expect(translate(mem, cr3, 4 * GiB)).toBeUndefined();
  // A page-directory entry: present, writable, a 2 MiB page, supervisor only unless asked.
  const pde = mem.readU64(PDE_START + 8);
  expect(pde & ~0xfffn).toBe(BigInt(2 * MiB));
  expect(pde & (PTE_P | PTE_RW | PTE_PS | PTE_US)).toBe(PTE_P | PTE_RW | PTE_PS);
  writeIdentityPageTables(mem, { user: true });
  expect(mem.readU64(PDE_START + 8) & PTE_US).toBe(PTE_US);
});

test("translate walks a guest's own 4 KiB pages, and refuses what is not present", () => {
  const mem = GuestMemory.plain([{ gpa: 0, size: 1 * MiB }]);
  // PML4 at 0x10000 -> PDPT 0x11000 -> PD 0x12000 -> PT 0x13000; map va 0xffffffff81000000 to 0x5000.
  const va = 0xffffffff81000000n;
  const idx = (shift: bigint) => Number((va >> shift) & 511n);
  mem.writeU64(0x10000 + idx(39n) * 8, 0x11000n | PTE_P);
  mem.writeU64(0x11000 + idx(30n) * 8, 0x12000n | PTE_P);
  mem.writeU64(0x12000 + idx(21n) * 8, 0x13000n | PTE_P);
  mem.writeU64(0x13000 + idx(12n) * 8, 0x5000n | PTE_P);
  expect(translate(mem, 0x10000, va + 0x123n)).toBe(0x5123);
  expect(translate(mem, 0x10000, va + 0x1000n)).toBeUndefined();
});

test("the boot GDT: flat __BOOT_CS (64-bit) and __BOOT_DS, a 32-bit code segment, user segments, a TSS", () => {
  const gdt = bootGdt();
  const seg = (sel: number) => segmentFromGdt(gdt[sel >> 3]!, sel);
  const code = seg(BOOT_CS);
  expect([code.get("base"), code.get("limit"), code.get("l"), code.get("db"), code.get("dpl"), code.get("type")]).toEqual([0, 0xffffffff, 1, 0, 0, 0xb]);
  const code32 = seg(BOOT_CS32);
  expect([code32.get("l"), code32.get("db"), code32.get("limit")]).toEqual([0, 1, 0xffffffff]);
  const data = seg(BOOT_DS);
  expect([data.get("type"), data.get("db"), data.get("s"), data.get("present")]).toEqual([3, 1, 1, 1]);
  expect(seg(USER_CS).get("dpl")).toBe(3);
  expect(seg(USER_DS).get("dpl")).toBe(3);
  const tss = seg(BOOT_TSS);
  expect([tss.get("base"), tss.get("s"), tss.get("type")]).toEqual([BOOT_TSS_START, 0, 0xb]);
  // The values Firecracker and the SDM give for the flat descriptors.
  expect(gdt[BOOT_CS >> 3]).toBe(0x00af9b000000ffffn);
  expect(gdt[BOOT_DS >> 3]).toBe(0x00cf93000000ffffn);
});
