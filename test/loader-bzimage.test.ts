import { describe, expect, test } from "bun:test";
import {
  BOOT_FLAG_MAGIC, HDRS_MAGIC, LOADED_HIGH, XLF_CAN_BE_LOADED_ABOVE_4G, XLF_KERNEL_64, boot_params, setup_header,
} from "../src/arch/x86_64/boot-params.ts";
import { buildBootParams } from "../src/arch/x86_64/zero-page.ts";
import { e820Map } from "../src/arch/x86_64/e820.ts";
import { CMDLINE_START, GiB, HIMEM_START, MiB, PAGE_SIZE } from "../src/arch/x86_64/layout.ts";
import { loadBzImage, parseSetupHeader } from "../src/loader/bzimage.ts";
import { loadInitrd, lowRamEnd, placeInitrd } from "../src/loader/initrd.ts";
import { loadKernel } from "../src/loader/kernel.ts";
import { StructView } from "../src/kvm/struct.ts";
import { GuestMemory } from "../src/memory.ts";

const SETUP_SECTS = 4;
const PM_SIZE = 0x1000;
const INIT_SIZE = 0x800000;
const PM = new Uint8Array(PM_SIZE).map((_, i) => (i * 13 + 5) & 0xff);

/** A minimal bzImage: 5 sectors of setup code with a protocol 2.15 header, then the protected-mode part. */
function buildBzImage(fields: Record<string, number | bigint> = {}, setupSects = SETUP_SECTS): Uint8Array {
  const sects = setupSects || 4;
  const image = new Uint8Array((sects + 1) * 512 + PM_SIZE);
  new StructView(setup_header, image, boot_params.offsetOf("hdr")).assign({
    setup_sects: setupSects, syssize: PM_SIZE / 16, boot_flag: BOOT_FLAG_MAGIC,
    jump: 0x6aeb, // "jmp short +0x6a": the header ends at 0x202 + 0x6a = 0x26c
    header: HDRS_MAGIC, version: 0x020f, loadflags: LOADED_HIGH,
    initrd_addr_max: 0x7fffffff, kernel_alignment: 0x200000, relocatable_kernel: 1,
    xloadflags: XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G, cmdline_size: 2047,
    pref_address: 0x1000000n, init_size: INIT_SIZE,
    ...fields,
  });
  image.set(PM, (sects + 1) * 512);
  return image;
}

const ram = (size = 64 * MiB) => GuestMemory.plain([{ gpa: 0, size }]);

describe("bzImage loader", () => {
  test("parses the setup header", () => {
    const h = parseSetupHeader(buildBzImage());
    expect(h).toMatchObject({
      setup_sects: 4, version: 0x020f, loadflags: LOADED_HIGH, xloadflags: XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G,
      relocatable_kernel: 1, kernel_alignment: 0x200000, initrd_addr_max: 0x7fffffff, cmdline_size: 2047,
      pref_address: 0x1000000, init_size: INIT_SIZE, syssize: PM_SIZE / 16,
    });
    expect(h.raw.byteLength).toBe(setup_header.size); // 0x1f1 .. 0x26c
  });

  test("setup_sects 0 means 4", () => {
    expect(parseSetupHeader(buildBzImage({}, 0)).setup_sects).toBe(4);
  });

  test("loads the protected-mode part at HIMEM_START; 64-bit entry at +0x200", () => {
    const mem = ram();
    const k = loadBzImage(mem, buildBzImage());
    expect(k.loadAddr).toBe(HIMEM_START);
    expect(k.entry).toBe(HIMEM_START + 0x200);
    expect(mem.read(HIMEM_START, PM_SIZE)).toEqual(PM);
    // The decompressor runs at max(align(load, kernel_alignment), pref_address) and needs init_size there.
    expect(k.kernelEnd).toBe(0x1000000 + INIT_SIZE);
  });

  test("a non-relocatable kernel runs at pref_address", () => {
    const k = loadBzImage(ram(), buildBzImage({ relocatable_kernel: 0, pref_address: 0x2000000n }));
    expect(k.kernelEnd).toBe(0x2000000 + INIT_SIZE);
  });

  test("kernel.ts dispatches bzImage, and the zero page gets its header", () => {
    const mem = ram();
    const k = loadKernel(mem, buildBzImage());
    expect(k.kind).toBe("bzimage");
    expect(k.entry).toBe(HIMEM_START + 0x200);
    expect(k.pvhEntry).toBeUndefined();
    const page = buildBootParams({
      setupHeader: k.setupHeader!.raw, kernelLoadAddr: k.loadAddr, cmdline: { addr: CMDLINE_START, size: 10 }, e820: e820Map(64 * MiB),
    });
    const bp = new StructView(boot_params, page);
    expect(bp.get("hdr.version")).toBe(0x020f);
    expect(bp.get("hdr.kernel_alignment")).toBe(0x200000);
    expect(bp.get("hdr.code32_start")).toBe(HIMEM_START);
  });
});

describe("bzImage loader rejects malformed input", () => {
  const expectError = (image: Uint8Array, message: string, mem = ram()) => expect(() => loadBzImage(mem, image)).toThrow(message);

  test("bad boot_flag", () => expectError(buildBzImage({ boot_flag: 0x1234 }), "bad magic: boot_flag is 0x1234, expected 0xaa55"));
  test("bad HdrS", () => expectError(buildBzImage({ header: 0x12345678 }), 'bad magic: header is 0x12345678, expected 0x53726448 ("HdrS")'));
  test("old protocol 2.00", () =>
    expectError(buildBzImage({ version: 0x0200 }), "boot protocol 2.00 (0x200) is too old: the 64-bit entry needs 2.12 (0x20c) or newer"));
  test("no XLF_KERNEL_64", () => expectError(buildBzImage({ xloadflags: 0 }), "xloadflags has no XLF_KERNEL_64"));
  test("zImage (no LOADED_HIGH)", () => expectError(buildBzImage({ loadflags: 0 }), "no LOADED_HIGH: this is a zImage"));
  test("truncated before the header ends", () => expectError(buildBzImage().subarray(0, 0x240), "truncated file: 576 bytes"));
  test("truncated inside the setup code", () => expectError(buildBzImage().subarray(0, 2000), "the setup code alone takes 2560 (setup_sects 4)"));
  test("truncated protected-mode part", () =>
    expectError(buildBzImage().subarray(0, 2560 + 100), "syssize says the protected-mode kernel is 4096 bytes, but only 100 follow"));
  test("a jump that ends the header too early", () => expectError(buildBzImage({ jump: 0x10eb }), "malformed header"));
  test("bad kernel_alignment", () => expectError(buildBzImage({ kernel_alignment: 0x300000 }), "kernel_alignment 0x300000 is not a power of two"));
  test("does not fit in RAM: the decompressor's init_size", () =>
    expectError(buildBzImage(), "needs init_size 0x800000 bytes at 0x1000000 to decompress, which does not fit in RAM", ram(20 * MiB)));
  test("does not fit in RAM: the image itself", () =>
    expectError(buildBzImage(), "the 4096-byte kernel does not fit in RAM at 0x100000", ram(HIMEM_START + 0x800)));
  test("kernel.ts passes bzImage errors through", () => {
    expect(() => loadKernel(ram(), buildBzImage({ version: 0x0200 }))).toThrow("too old");
    expect(() => loadKernel(ram(), buildBzImage().subarray(0, 0x240))).toThrow("bzImage: truncated file: 576 bytes");
  });
});

describe("initrd placement", () => {
  const kernelEnd = 0x1000000 + INIT_SIZE;

  test("as high as possible below the end of RAM, page-aligned", () => {
    const mem = ram();
    const data = new Uint8Array(3 * PAGE_SIZE + 1).fill(9);
    const placed = loadInitrd(mem, data, kernelEnd, { initrd_addr_max: 0x7fffffff });
    expect(placed).toEqual({ addr: 64 * MiB - 4 * PAGE_SIZE, size: data.byteLength });
    expect(mem.read(placed.addr, data.byteLength)).toEqual(data);
  });

  test("below initrd_addr_max when that is lower than the end of RAM", () => {
    const addr = placeInitrd({ size: MiB, kernelEnd, ramEnd: 64 * MiB, initrdAddrMax: 0x2ffffff });
    expect(addr).toBe(0x3000000 - MiB);
  });

  test("RAM end is cut at the MMIO gap", () => {
    const mem = GuestMemory.plain([{ gpa: 0, size: 16 * MiB }]);
    expect(lowRamEnd(mem)).toBe(16 * MiB);
    expect(placeInitrd({ size: MiB, kernelEnd, ramEnd: 3 * GiB })).toBe(3 * GiB - MiB);
  });

  test("too big for RAM", () => {
    expect(() => placeInitrd({ size: 60 * MiB, kernelEnd, ramEnd: 64 * MiB, initrdAddrMax: 0x7fffffff })).toThrow(
      "initrd of 62914560 bytes does not fit in RAM: 41943040 bytes are free between the kernel's end (0x1800000) and the end of RAM below the MMIO gap (0x4000000)",
    );
  });

  test("above initrd_addr_max", () => {
    expect(() => placeInitrd({ size: 2 * MiB, kernelEnd, ramEnd: 64 * MiB, initrdAddrMax: 0x18fffff })).toThrow(
      "initrd of 2097152 bytes does not fit below initrd_addr_max 0x18fffff: the kernel ends at 0x1800000",
    );
  });

  test("empty", () => {
    expect(() => loadInitrd(ram(), new Uint8Array(0), kernelEnd)).toThrow("initrd is empty");
  });
});
