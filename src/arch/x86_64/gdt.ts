// The boot GDT, and the segment registers derived from it.
//
// In 64-bit mode segmentation is mostly off, but CS still selects the mode (L bit) and privilege (DPL),
// SS must be a writable data segment, and TR must name a TSS. The Linux 64-bit boot protocol asks for
// "a GDT loaded with descriptors for selectors __BOOT_CS(0x10) and __BOOT_DS(0x18); both descriptors must
// be 4G flat segment; __BOOT_CS must have execute/read permission, and __BOOT_DS must have read/write
// permission" (Documentation/x86/boot.rst, "64-bit Boot Protocol").
//
// kindling's GDT adds a 32-bit code segment for the PVH entry, and user (DPL 3) segments and a TSS so that
// probe guests can drop to CPL3 and take interrupts there. Linux ignores them and loads its own GDT early.
//
// Each descriptor is built once here, and the kvm_segment loaded into each segment register is decoded from
// the very same descriptor, so the two cannot disagree (Intel SDM vol. 3A 3.4.5 "Segment Descriptors").

import { StructView } from "../../kvm/struct.ts";
import { kvm_segment } from "../../kvm/uapi.ts";
import { BOOT_GDT_MAX_ENTRIES, BOOT_TSS_END, BOOT_TSS_START } from "./layout.ts";

/** Selectors: index * 8, plus the RPL in the low two bits for DPL 3 segments. */
export const GDT_NULL = 0x00;
/** A flat 32-bit code segment, for the PVH entry (xen's docs/misc/pvh.pandoc: CS 32-bit, base 0, 4 GiB). */
export const BOOT_CS32 = 0x08;
export const BOOT_CS = 0x10; // __BOOT_CS
export const BOOT_DS = 0x18; // __BOOT_DS
export const USER_DS = 0x20 | 3;
export const USER_CS = 0x28 | 3;
export const BOOT_TSS = 0x30;

/**
 * Descriptor "flags" as the 16 bits that straddle the limit (SDM Figure 3-8): bits 0-7 are the access byte
 * (type, S, DPL, P), bits 12-15 are AVL, L, D/B, G.
 */
const P = 0x80;
const S = 0x10; // code or data (not a system descriptor)
const DPL3 = 0x60;
const G = 0x8000; // limit counted in 4 KiB pages
const DB = 0x4000; // 32-bit default operand size (data: 32-bit stack)
const L = 0x2000; // 64-bit code
const TYPE_CODE_XR_ACCESSED = 0xb;
const TYPE_DATA_RW_ACCESSED = 0x3;
const TYPE_TSS64_BUSY = 0xb; // SDM Table 3-2: 64-bit TSS (busy), as TR holds it after LTR

export const KERNEL_CODE64 = G | L | P | S | TYPE_CODE_XR_ACCESSED; // 0xa09b
export const KERNEL_CODE32 = G | DB | P | S | TYPE_CODE_XR_ACCESSED; // 0xc09b
export const KERNEL_DATA = G | DB | P | S | TYPE_DATA_RW_ACCESSED; // 0xc093
export const USER_CODE64 = G | L | P | DPL3 | S | TYPE_CODE_XR_ACCESSED; // 0xa0fb
export const USER_DATA = G | DB | P | DPL3 | S | TYPE_DATA_RW_ACCESSED; // 0xc0f3
export const TSS64 = P | TYPE_TSS64_BUSY; // 0x008b

/** Pack base, limit and flags into an 8-byte descriptor (SDM Figure 3-8). */
export function gdtEntry(flags: number, base: number, limit: number): bigint {
  const b = BigInt(base);
  const l = BigInt(limit);
  const f = BigInt(flags);
  return (
    ((b & 0xff000000n) << 32n) |
    ((b & 0x00ffffffn) << 16n) |
    (l & 0xffffn) |
    ((l & 0xf0000n) << 32n) |
    ((f & 0xf0ffn) << 40n)
  );
}

/** The boot GDT as 64-bit words, indexed by selector / 8. The 64-bit TSS descriptor takes two slots. */
export function bootGdt(): bigint[] {
  const gdt = new Array<bigint>(BOOT_GDT_MAX_ENTRIES).fill(0n);
  gdt[BOOT_CS32 >> 3] = gdtEntry(KERNEL_CODE32, 0, 0xfffff);
  gdt[BOOT_CS >> 3] = gdtEntry(KERNEL_CODE64, 0, 0xfffff);
  gdt[BOOT_DS >> 3] = gdtEntry(KERNEL_DATA, 0, 0xfffff);
  gdt[USER_DS >> 3] = gdtEntry(USER_DATA, 0, 0xfffff);
  gdt[USER_CS >> 3] = gdtEntry(USER_CODE64, 0, 0xfffff);
  gdt[BOOT_TSS >> 3] = gdtEntry(TSS64, BOOT_TSS_START, BOOT_TSS_END - BOOT_TSS_START - 1); // TSS + I/O bitmap
  gdt[(BOOT_TSS >> 3) + 1] = BigInt(BOOT_TSS_START) >> 32n; // bits 63:32 of the TSS base (SDM 8.2.3)
  return gdt;
}

/** Decode a descriptor into the kvm_segment that a segment register loaded from it would hold. */
export function segmentFromGdt(entry: bigint, selector: number): StructView {
  const e = entry;
  const base = Number(((e >> 16n) & 0xffffffn) | ((e >> 32n) & 0xff000000n));
  const rawLimit = Number((e & 0xffffn) | ((e >> 32n) & 0xf0000n));
  const g = Number((e >> 55n) & 1n);
  return new StructView(kvm_segment).assign({
    base,
    // With G set, the limit counts 4 KiB pages: the byte limit is (limit << 12) | 0xfff.
    limit: g ? rawLimit * 4096 + 0xfff : rawLimit,
    selector,
    type: Number((e >> 40n) & 0xfn),
    s: Number((e >> 44n) & 1n),
    dpl: Number((e >> 45n) & 3n),
    present: Number((e >> 47n) & 1n),
    avl: Number((e >> 52n) & 1n),
    l: Number((e >> 53n) & 1n),
    db: Number((e >> 54n) & 1n),
    g,
    unusable: Number((e >> 47n) & 1n) ? 0 : 1,
  });
}
