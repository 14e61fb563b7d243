// Loading a kernel image of either kind: an ELF vmlinux (elf.ts) or a bzImage (bzimage.ts), told apart
// by their signatures: "\x7fELF" at offset 0, or the setup header's boot_flag 0xAA55 / "HdrS".

import type { GuestMemory } from "../memory.ts";
import { boot_params } from "../arch/x86_64/boot-params.ts";
import { isBzImage, loadBzImage, type SetupHeader } from "./bzimage.ts";
import { KernelImageError, isElf, loadElf } from "./elf.ts";

export { KernelImageError };

export interface LoadedKernel {
  /** Physical address of the 64-bit entry point. */
  entry: number;
  kind: "elf" | "bzimage";
  /** bzImage only: the header the zero page copies. */
  setupHeader?: SetupHeader;
  /** bzImage only: where the protected-mode kernel went (hdr.code32_start). */
  loadAddr?: number;
  /** ELF only, when the kernel supports PVH boot: its 32-bit PVH entry. */
  pvhEntry?: number;
  /** First byte after the kernel's memory; the initrd goes above it. */
  kernelEnd: number;
}

export function loadKernel(mem: GuestMemory, image: Uint8Array): LoadedKernel {
  if (isElf(image)) {
    const k = loadElf(mem, image);
    return { entry: k.entry, kind: "elf", pvhEntry: k.pvhEntry, kernelEnd: k.kernelEnd };
  }
  if (isBzImage(image)) {
    const k = loadBzImage(mem, image);
    return { entry: k.entry, kind: "bzimage", setupHeader: k.setupHeader, loadAddr: k.loadAddr, kernelEnd: k.kernelEnd };
  }
  throw new KernelImageError(
    `not a kernel image (${image.byteLength} bytes): no ELF magic \\x7fELF at offset 0 and no bzImage setup header (boot_flag 0xaa55, "HdrS") at 0x${boot_params.offsetOf("hdr").toString(16)}`,
  );
}
