import { describe, expect, test } from "bun:test";
import {
  E820_ACPI, E820_NVS, E820_PMEM, E820_PRAM, E820_RAM, E820_RESERVED, E820_UNUSABLE, e820Map, formatE820,
} from "../src/arch/x86_64/e820.ts";
import { GiB, MMIO32_START, MiB } from "../src/arch/x86_64/layout.ts";

describe("e820 map", () => {
  test("128 MiB: conventional memory and RAM from 1 MiB", () => {
    expect(e820Map(128 * MiB)).toEqual([
      { addr: 0, size: 0x9fc00, type: E820_RAM },
      { addr: 0x100000, size: 128 * MiB - 0x100000, type: E820_RAM },
    ]);
    // What Linux 6.1 prints for it (arch/x86/kernel/e820.c, e820__print_table).
    expect(formatE820(e820Map(128 * MiB))).toEqual([
      "BIOS-e820: [mem 0x0000000000000000-0x000000000009fbff] usable",
      "BIOS-e820: [mem 0x0000000000100000-0x0000000007ffffff] usable",
    ]);
  });

  test("3 GiB: exactly fills the space below the MMIO gap, nothing above 4 GiB", () => {
    expect(e820Map(3 * GiB)).toEqual([
      { addr: 0, size: 0x9fc00, type: E820_RAM },
      { addr: 0x100000, size: 0xc0000000 - 0x100000, type: E820_RAM },
    ]);
    expect(formatE820(e820Map(3 * GiB))[1]).toBe("BIOS-e820: [mem 0x0000000000100000-0x00000000bfffffff] usable");
  });

  test("5 GiB: the MMIO gap is skipped, 2 GiB continue at 4 GiB", () => {
    const map = e820Map(5 * GiB);
    expect(map).toEqual([
      { addr: 0, size: 0x9fc00, type: E820_RAM },
      { addr: 0x100000, size: 0xc0000000 - 0x100000, type: E820_RAM },
      { addr: 0x100000000, size: 2 * GiB, type: E820_RAM },
    ]);
    expect(formatE820(map)).toEqual([
      "BIOS-e820: [mem 0x0000000000000000-0x000000000009fbff] usable",
      "BIOS-e820: [mem 0x0000000000100000-0x00000000bfffffff] usable",
      "BIOS-e820: [mem 0x0000000100000000-0x000000017fffffff] usable",
    ]);
    // No RAM entry touches [MMIO32_START, 4 GiB).
    for (const e of map) expect(e.addr + e.size <= MMIO32_START || e.addr >= 4 * GiB).toBe(true);
  });

  test("every type is named as the kernel names it", () => {
    const at = (type: number) => formatE820([{ addr: 0x1000, size: 0x1000, type }], "BIOS-e820")[0];
    expect(at(E820_RESERVED)).toBe("BIOS-e820: [mem 0x0000000000001000-0x0000000000001fff] reserved");
    expect(at(E820_ACPI)).toEndWith("] ACPI data");
    expect(at(E820_NVS)).toEndWith("] ACPI NVS");
    expect(at(E820_UNUSABLE)).toEndWith("] unusable");
    expect(at(E820_PMEM)).toEndWith("] persistent (type 7)");
    expect(at(E820_PRAM)).toEndWith("] persistent (type 12)");
    expect(at(99)).toEndWith("] type 99");
  });

  test("too little RAM is refused", () => {
    expect(() => e820Map(512 * 1024)).toThrow("more than 1048576 bytes");
  });
});
