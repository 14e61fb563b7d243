import { describe, expect, test } from "bun:test";
import { e820Map } from "../src/arch/x86_64/e820.ts";
import {
  CMDLINE_START, GiB, MiB, PVH_INFO_START, PVH_MEMMAP_MAX_ENTRIES, PVH_MEMMAP_START, PVH_MODLIST_START, ZERO_PAGE_START,
} from "../src/arch/x86_64/layout.ts";
import {
  XEN_HVM_MEMMAP_TYPE_RAM, XEN_HVM_START_MAGIC_VALUE, hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
  writePvhStartInfo,
} from "../src/arch/x86_64/pvh.ts";
import { StructView } from "../src/kvm/struct.ts";
import { GuestMemory } from "../src/memory.ts";

describe("PVH hvm_start_info (xen start_info.h)", () => {
  test("layouts", () => {
    expect(hvm_start_info.size).toBe(56);
    expect(hvm_start_info.offsetOf("cmdline_paddr")).toBe(24);
    expect(hvm_start_info.offsetOf("memmap_paddr")).toBe(40);
    expect(hvm_start_info.offsetOf("memmap_entries")).toBe(48);
    expect(hvm_memmap_table_entry.size).toBe(24);
    expect(hvm_modlist_entry.size).toBe(32);
  });

  test("the structures fit below the zero page", () => {
    expect(PVH_INFO_START + hvm_start_info.size).toBeLessThanOrEqual(PVH_MODLIST_START);
    expect(PVH_MODLIST_START + hvm_modlist_entry.size).toBeLessThanOrEqual(PVH_MEMMAP_START);
    expect(PVH_MEMMAP_START + PVH_MEMMAP_MAX_ENTRIES * hvm_memmap_table_entry.size).toBeLessThanOrEqual(ZERO_PAGE_START);
  });

  test("start info, memory map and initrd module for a 5 GiB VM", () => {
    const mem = GuestMemory.plain([{ gpa: 0, size: 2 * MiB }]);
    const e820 = e820Map(5 * GiB);
    const at = writePvhStartInfo(mem, { cmdline: { addr: CMDLINE_START }, e820, initrd: { addr: 0x3000000, size: 0x4000 } });
    expect(at).toBe(PVH_INFO_START);

    const info = new StructView(hvm_start_info, mem.read(PVH_INFO_START, hvm_start_info.size));
    expect(info.get("magic")).toBe(XEN_HVM_START_MAGIC_VALUE);
    expect(info.get("magic")).toBe(0x336ec578);
    expect(info.get("version")).toBe(1);
    expect(info.get("cmdline_paddr")).toBe(CMDLINE_START);
    expect(info.get("rsdp_paddr")).toBe(0);
    expect(info.get("memmap_paddr")).toBe(PVH_MEMMAP_START);
    expect(info.get("memmap_entries")).toBe(3);
    expect(info.get("nr_modules")).toBe(1);
    expect(info.get("modlist_paddr")).toBe(PVH_MODLIST_START);

    const map = mem.read(PVH_MEMMAP_START, 3 * hvm_memmap_table_entry.size);
    const entry = (i: number) => new StructView(hvm_memmap_table_entry, map, i * hvm_memmap_table_entry.size);
    expect(entry(2).get("addr")).toBe(4 * GiB);
    expect(entry(2).get("size")).toBe(2 * GiB);
    expect(entry(2).get("type")).toBe(XEN_HVM_MEMMAP_TYPE_RAM);
    expect(entry(0).get("size")).toBe(e820[0]!.size);

    const mod = new StructView(hvm_modlist_entry, mem.read(PVH_MODLIST_START, hvm_modlist_entry.size));
    expect(mod.get("paddr")).toBe(0x3000000);
    expect(mod.get("size")).toBe(0x4000);
  });

  test("without an initrd there are no modules", () => {
    const mem = GuestMemory.plain([{ gpa: 0, size: 2 * MiB }]);
    writePvhStartInfo(mem, { cmdline: { addr: CMDLINE_START }, e820: e820Map(128 * MiB) });
    const info = new StructView(hvm_start_info, mem.read(PVH_INFO_START, hvm_start_info.size));
    expect(info.get("nr_modules")).toBe(0);
    expect(info.get("modlist_paddr")).toBe(0);
  });

  test("a memory map too big for its room is refused", () => {
    const mem = GuestMemory.plain([{ gpa: 0, size: 2 * MiB }]);
    const e820 = Array.from({ length: PVH_MEMMAP_MAX_ENTRIES + 1 }, (_, i) => ({ addr: i * 4096, size: 4096, type: 1 }));
    expect(() => writePvhStartInfo(mem, { cmdline: { addr: CMDLINE_START }, e820 })).toThrow("129 entries; there is room for 128");
  });
});
