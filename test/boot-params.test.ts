import { describe, expect, test } from "bun:test";
import {
  BOOT_FLAG_MAGIC, CAN_USE_HEAP, HDRS_MAGIC, LOADED_HIGH, NORMAL_VGA, TYPE_OF_LOADER_UNDEFINED, XLF_KERNEL_64,
  boot_e820_entry, boot_params, setup_header,
} from "../src/arch/x86_64/boot-params.ts";
import { E820_RAM, e820Map } from "../src/arch/x86_64/e820.ts";
import { buildBootParams, writeZeroPage } from "../src/arch/x86_64/zero-page.ts";
import { CMDLINE_MAX_SIZE, CMDLINE_START, MiB, ZERO_PAGE_START } from "../src/arch/x86_64/layout.ts";
import { StructView } from "../src/kvm/struct.ts";
import { GuestMemory } from "../src/memory.ts";

describe("boot_params layout (bootparam.h, boot.rst, zero-page.rst)", () => {
  test("sizes", () => {
    expect(boot_params.size).toBe(4096);
    expect(boot_e820_entry.size).toBe(20);
    expect(setup_header.size).toBe(0x26c - 0x1f1);
  });

  const offsets: [string, number][] = [
    ["e820_entries", 0x1e8],
    ["sentinel", 0x1ef],
    ["hdr", 0x1f1],
    ["hdr.setup_sects", 0x1f1],
    ["hdr.syssize", 0x1f4],
    ["hdr.vid_mode", 0x1fa],
    ["hdr.boot_flag", 0x1fe],
    ["hdr.jump", 0x200],
    ["hdr.header", 0x202],
    ["hdr.version", 0x206],
    ["hdr.type_of_loader", 0x210],
    ["hdr.loadflags", 0x211],
    ["hdr.code32_start", 0x214],
    ["hdr.ramdisk_image", 0x218],
    ["hdr.ramdisk_size", 0x21c],
    ["hdr.heap_end_ptr", 0x224],
    ["hdr.cmd_line_ptr", 0x228],
    ["hdr.initrd_addr_max", 0x22c],
    ["hdr.kernel_alignment", 0x230],
    ["hdr.relocatable_kernel", 0x234],
    ["hdr.xloadflags", 0x236],
    ["hdr.cmdline_size", 0x238],
    ["hdr.pref_address", 0x258],
    ["hdr.init_size", 0x260],
    ["hdr.kernel_info_offset", 0x268],
    ["edd_mbr_sig_buffer", 0x290],
    ["e820_table", 0x2d0],
    ["e820_table.1.addr", 0x2d0 + 20],
    ["e820_table.1.type", 0x2d0 + 20 + 16],
    ["eddbuf", 0xd00],
    ["acpi_rsdp_addr", 0x070],
    ["ext_ramdisk_image", 0x0c0],
    ["ext_cmd_line_ptr", 0x0c8],
    ["efi_info", 0x1c0],
  ];
  for (const [path, offset] of offsets) {
    test(`${path} at 0x${offset.toString(16)}`, () => expect(boot_params.offsetOf(path)).toBe(offset));
  }
});

/** A bzImage-like setup header: what a 6.1 kernel's header.S puts at 0x1f1. */
function kernelHeader(): Uint8Array {
  const raw = new Uint8Array(setup_header.size);
  new StructView(setup_header, raw).assign({
    setup_sects: 27, boot_flag: BOOT_FLAG_MAGIC, jump: 0x6aeb, header: HDRS_MAGIC, version: 0x020f,
    loadflags: LOADED_HIGH | CAN_USE_HEAP, kernel_alignment: 0x200000, relocatable_kernel: 1,
    xloadflags: XLF_KERNEL_64, cmdline_size: 2047, initrd_addr_max: 0x7fffffff, init_size: 0x2000000,
  });
  return raw;
}

describe("zero page", () => {
  const e820 = e820Map(128 * MiB);
  const cmdline = { addr: CMDLINE_START, size: 40 };

  test("ELF kernel (no setup header): magic numbers, loader, command line, e820", () => {
    const bp = new StructView(boot_params, buildBootParams({ cmdline, e820, initrd: { addr: 0x7000000, size: 0x12345 } }));
    expect(bp.get("hdr.boot_flag")).toBe(0xaa55);
    expect(bp.get("hdr.header")).toBe(0x53726448);
    expect(bp.get("hdr.type_of_loader")).toBe(TYPE_OF_LOADER_UNDEFINED);
    expect(bp.get("hdr.loadflags") & LOADED_HIGH).toBe(LOADED_HIGH);
    expect(bp.get("hdr.loadflags") & CAN_USE_HEAP).toBe(0);
    expect(bp.get("hdr.vid_mode")).toBe(NORMAL_VGA);
    expect(bp.get("hdr.cmd_line_ptr")).toBe(CMDLINE_START);
    expect(bp.get("hdr.cmdline_size")).toBe(CMDLINE_MAX_SIZE - 1);
    expect(bp.get("hdr.ramdisk_image")).toBe(0x7000000);
    expect(bp.get("hdr.ramdisk_size")).toBe(0x12345);
    expect(bp.get("e820_entries")).toBe(2);
    expect(bp.get("e820_table.1.addr")).toBe(0x100000);
    expect(bp.get("e820_table.1.size")).toBe(128 * MiB - 0x100000);
    expect(bp.get("e820_table.1.type")).toBe(E820_RAM);
    expect(bp.get("sentinel")).toBe(0);
  });

  test("bzImage: the kernel's header is copied, loader fields set over it", () => {
    const page = buildBootParams({ setupHeader: kernelHeader(), kernelLoadAddr: 0x100000, cmdline, e820 });
    const bp = new StructView(boot_params, page);
    expect(bp.get("hdr.setup_sects")).toBe(27);
    expect(bp.get("hdr.version")).toBe(0x020f);
    expect(bp.get("hdr.kernel_alignment")).toBe(0x200000); // read by the decompressor's startup_64
    expect(bp.get("hdr.init_size")).toBe(0x2000000);
    expect(bp.get("hdr.cmdline_size")).toBe(2047); // the kernel's own value is kept
    expect(bp.get("hdr.code32_start")).toBe(0x100000);
    expect(bp.get("hdr.type_of_loader")).toBe(0xff);
    expect(bp.get("hdr.loadflags")).toBe(LOADED_HIGH); // CAN_USE_HEAP cleared: no real-mode code runs
    expect(bp.get("hdr.ramdisk_size")).toBe(0);
  });

  test("a copied header with the wrong magic is refused", () => {
    const raw = kernelHeader();
    new StructView(setup_header, raw).set("boot_flag", 0x1234);
    expect(() => buildBootParams({ setupHeader: raw, cmdline, e820 })).toThrow("boot_flag is 0x1234, expected 0xaa55");
    const raw2 = kernelHeader();
    new StructView(setup_header, raw2).set("header", 0);
    expect(() => buildBootParams({ setupHeader: raw2, cmdline, e820 })).toThrow('expected 0x53726448 ("HdrS")');
  });

  test("too many e820 entries", () => {
    const many = Array.from({ length: 129 }, (_, i) => ({ addr: i * 0x1000, size: 0x1000, type: E820_RAM }));
    expect(() => buildBootParams({ cmdline, e820: many })).toThrow("129 entries; boot_params.e820_table holds 128");
  });

  test("writeZeroPage puts it at ZERO_PAGE_START", () => {
    const mem = GuestMemory.plain([{ gpa: 0, size: 1 * MiB }]);
    expect(writeZeroPage(mem, { cmdline, e820 })).toBe(ZERO_PAGE_START);
    expect(mem.readU16(ZERO_PAGE_START + boot_params.offsetOf("hdr.boot_flag"))).toBe(0xaa55);
    expect(mem.readU8(ZERO_PAGE_START + boot_params.offsetOf("e820_entries"))).toBe(2);
  });
});
