// Loading a bzImage: the compressed kernel (arch/x86/boot/bzImage) most distributions ship.
//
// A bzImage is two programs glued together (boot.rst, "The Real-Mode Kernel Header"):
//
//   [0, (setup_sects + 1) * 512)   the real-mode setup code, which begins with the setup header at 0x1f1
//   the rest                       the protected-mode kernel: a decompressor with the compressed kernel
//
// With the 64-bit boot protocol the real-mode part never runs. Kindling reads the setup header (the zero
// page gets a copy of it), loads the protected-mode part at HIMEM_START, and enters it at the 64-bit entry
// point, load address + 0x200 (boot.rst, "64-bit Boot Protocol"; present when xloadflags has XLF_KERNEL_64).
//
// Why HIMEM_START and not pref_address: 0x100000 is where boot.rst puts a LOADED_HIGH kernel and where
// Firecracker puts it, and it works for relocatable and fixed kernels alike. The decompressor does not run
// in place: it moves itself to its runtime address, the load address rounded up to kernel_alignment but
// never below LOAD_PHYSICAL_ADDR (which the header gives as pref_address), and needs init_size bytes there
// (arch/x86/boot/compressed/head_64.S, startup_64). kernelEnd accounts for that, so the initrd is placed
// clear of it.

import type { GuestMemory } from "../memory.ts";
import { StructView } from "../kvm/struct.ts";
import {
  BOOT_FLAG_MAGIC, HDRS_MAGIC, LOADED_HIGH, XLF_KERNEL_64, boot_params, bootProtocolVersion, setup_header,
} from "../arch/x86_64/boot-params.ts";
import { HIMEM_START } from "../arch/x86_64/layout.ts";
import { KernelImageError } from "./elf.ts";

/** The 64-bit entry point's offset from the protected-mode kernel's load address (boot.rst). */
export const STARTUP_64_OFFSET = 0x200;
/** Sector size of the real-mode part; setup_sects counts these. */
export const SECTOR_SIZE = 512;
/** boot.rst: "If this field is 0, the real value is 4." */
export const SETUP_SECTS_DEFAULT = 4;
/** xloadflags and a usable 64-bit entry arrived with protocol 2.12. */
export const MIN_BOOT_PROTOCOL = bootProtocolVersion(2, 12);

/** Where the setup header sits in the image: the same offset it has in boot_params (0x1f1). */
const HDR_OFFSET = boot_params.offsetOf("hdr");

/** The setup-header fields a loader needs, under their kernel names, and the header's bytes. */
export interface SetupHeader {
  /** The header as the image holds it, from 0x1f1 to its end (0x202 + the byte at 0x201). */
  raw: Uint8Array;
  setup_sects: number;
  syssize: number;
  version: number;
  loadflags: number;
  xloadflags: number;
  relocatable_kernel: number;
  kernel_alignment: number;
  initrd_addr_max: number;
  cmdline_size: number;
  pref_address: number;
  init_size: number;
}

export interface BzImageKernel {
  /** The 64-bit entry: loadAddr + STARTUP_64_OFFSET. */
  entry: number;
  /** Where the protected-mode kernel was copied (HIMEM_START). */
  loadAddr: number;
  /** First byte after the memory the kernel uses before it reads the e820 map (see the file comment). */
  kernelEnd: number;
  setupHeader: SetupHeader;
}

const hex = (n: number | bigint) => `0x${n.toString(16)}`;
const versionText = (v: number) => `${v >> 8}.${(v & 0xff).toString().padStart(2, "0")}`;

/** True when the image carries a setup header signature (boot_flag or "HdrS"). */
export function isBzImage(image: Uint8Array): boolean {
  // Only the two signatures need to be present; parseSetupHeader reports a truncated rest.
  const headerAt = boot_params.offsetOf("hdr.header");
  if (image.byteLength < headerAt + boot_params.sizeAt("hdr.header")) return false;
  const dv = new DataView(image.buffer, image.byteOffset, image.byteLength);
  return dv.getUint16(boot_params.offsetOf("hdr.boot_flag"), true) === BOOT_FLAG_MAGIC || dv.getUint32(headerAt, true) === HDRS_MAGIC;
}

/** Read and check the setup header of a 64-bit bzImage. */
export function parseSetupHeader(image: Uint8Array): SetupHeader {
  if (image.byteLength < HDR_OFFSET + setup_header.size) {
    throw new KernelImageError(`bzImage: truncated file: ${image.byteLength} bytes, the setup header ends at ${hex(HDR_OFFSET + setup_header.size)}`);
  }
  const hdr = new StructView(setup_header, image, HDR_OFFSET);
  if (hdr.get("boot_flag") !== BOOT_FLAG_MAGIC) {
    throw new KernelImageError(`bzImage: bad magic: boot_flag is ${hex(hdr.get("boot_flag"))}, expected ${hex(BOOT_FLAG_MAGIC)}`);
  }
  if (hdr.get("header") !== HDRS_MAGIC) {
    throw new KernelImageError(`bzImage: bad magic: header is ${hex(hdr.get("header"))}, expected ${hex(HDRS_MAGIC)} ("HdrS")`);
  }
  const version = hdr.get("version");
  if (version < MIN_BOOT_PROTOCOL) {
    throw new KernelImageError(
      `bzImage: boot protocol ${versionText(version)} (${hex(version)}) is too old: the 64-bit entry needs ${versionText(MIN_BOOT_PROTOCOL)} (${hex(MIN_BOOT_PROTOCOL)}) or newer`,
    );
  }
  const loadflags = hdr.get("loadflags");
  if (!(loadflags & LOADED_HIGH)) {
    throw new KernelImageError("bzImage: loadflags has no LOADED_HIGH: this is a zImage, loaded below 1 MiB, which kindling does not support");
  }
  const xloadflags = hdr.get("xloadflags");
  if (!(xloadflags & XLF_KERNEL_64)) {
    throw new KernelImageError("bzImage: xloadflags has no XLF_KERNEL_64: the kernel has no 64-bit entry point");
  }

  // The header ends at 0x202 + the byte at 0x201: the jump instruction at 0x200 skips over it.
  const jumpEnd = boot_params.offsetOf("hdr.header");
  const headerEnd = Math.min(jumpEnd + (hdr.get("jump") >> 8), HDR_OFFSET + setup_header.size);
  // A 2.12 header has every field up to handover_offset (2.11); a jump that ends it sooner is not a header.
  const fieldsEnd = HDR_OFFSET + setup_header.offsetOf("handover_offset") + setup_header.sizeAt("handover_offset");
  if (headerEnd < fieldsEnd) {
    throw new KernelImageError(`bzImage: malformed header: the jump at ${hex(boot_params.offsetOf("hdr.jump"))} ends it at ${hex(headerEnd)}, before the protocol 2.12 fields end at ${hex(fieldsEnd)}`);
  }
  const pref = hdr.getBig("pref_address");
  if (pref > BigInt(Number.MAX_SAFE_INTEGER)) throw new KernelImageError(`bzImage: pref_address ${hex(pref)} is not a usable address`);
  return {
    raw: image.slice(HDR_OFFSET, headerEnd),
    setup_sects: hdr.get("setup_sects") || SETUP_SECTS_DEFAULT,
    syssize: hdr.get("syssize"),
    version,
    loadflags,
    xloadflags,
    relocatable_kernel: hdr.get("relocatable_kernel"),
    kernel_alignment: hdr.get("kernel_alignment"),
    initrd_addr_max: hdr.get("initrd_addr_max"),
    cmdline_size: hdr.get("cmdline_size"),
    pref_address: Number(pref),
    init_size: hdr.get("init_size"),
  };
}

/** Check a bzImage and copy its protected-mode kernel to HIMEM_START. */
export function loadBzImage(mem: GuestMemory, image: Uint8Array): BzImageKernel {
  const h = parseSetupHeader(image);
  const setupSize = (h.setup_sects + 1) * SECTOR_SIZE;
  if (image.byteLength <= setupSize) {
    throw new KernelImageError(`bzImage: truncated file: ${image.byteLength} bytes, but the setup code alone takes ${setupSize} (setup_sects ${h.setup_sects})`);
  }
  const kernel = image.subarray(setupSize);
  // syssize counts 16-byte paragraphs of the protected-mode part.
  if (h.syssize * 16 > kernel.byteLength) {
    throw new KernelImageError(`bzImage: truncated file: syssize says the protected-mode kernel is ${h.syssize * 16} bytes, but only ${kernel.byteLength} follow the setup code`);
  }

  const loadAddr = HIMEM_START;
  if (!mem.contains(loadAddr, kernel.byteLength)) {
    throw new KernelImageError(`bzImage: the ${kernel.byteLength}-byte kernel does not fit in RAM at ${hex(loadAddr)}`);
  }

  // Where the decompressor will run (see the file comment), and whether init_size bytes fit there.
  let runtimeStart = h.pref_address;
  if (h.relocatable_kernel) {
    const align = h.kernel_alignment;
    if (align === 0 || (align & (align - 1)) !== 0) throw new KernelImageError(`bzImage: kernel_alignment ${hex(align)} is not a power of two`);
    runtimeStart = Math.max(Math.ceil(loadAddr / align) * align, h.pref_address);
  }
  if (!mem.contains(runtimeStart, h.init_size)) {
    throw new KernelImageError(`bzImage: the kernel needs init_size ${hex(h.init_size)} bytes at ${hex(runtimeStart)} to decompress, which does not fit in RAM`);
  }

  mem.write(loadAddr, kernel);
  return {
    entry: loadAddr + STARTUP_64_OFFSET,
    loadAddr,
    kernelEnd: Math.max(loadAddr + kernel.byteLength, runtimeStart + h.init_size),
    setupHeader: h,
  };
}
