// The vCPU's registers at the first guest instruction: general-purpose registers, segment and control
// registers, and the FPU. Two starting points:
//   - real mode, for the `hello` probe: CS:IP points at the code, everything else as after reset;
//   - 64-bit mode, for Linux and the long-mode probes: paging on, flat segments from the boot GDT.

import type { VcpuFd } from "../../kvm/vcpu-fd.ts";
import type { GuestMemory } from "../../memory.ts";
import { BOOT_CS, BOOT_CS32, BOOT_DS, BOOT_TSS, bootGdt, segmentFromGdt } from "./gdt.ts";
import {
  BOOT_GDT_MAX_ENTRIES, BOOT_GDT_START, BOOT_IDT_SIZE, BOOT_IDT_START, BOOT_STACK_POINTER, BOOT_TSS_END, BOOT_TSS_IO_BITMAP_START, BOOT_TSS_START,
} from "./layout.ts";
import { writeIdentityPageTables } from "./paging.ts";

/** Control-register and EFER bits (Intel SDM vol. 3A 2.5, 2.2.1). */
export const X86_CR0_PE = 1 << 0; // protected mode
export const X86_CR0_TS = 1 << 3; // task switched: the next x87/SSE instruction raises #NM
export const X86_CR0_ET = 1 << 4; // extension type: always 1 on modern CPUs
export const X86_CR0_NE = 1 << 5; // native x87 error reporting
export const X86_CR0_PG = 2 ** 31; // paging
export const X86_CR4_PAE = 1 << 5; // physical address extension: required for long mode
export const X86_CR4_OSFXSR = 1 << 9; // the OS saves SSE state with FXSAVE: SSE instructions allowed
export const X86_CR4_OSXMMEXCPT = 1 << 10;
export const EFER_SCE = 1 << 0; // syscall/sysret enabled
export const EFER_LME = 1 << 8; // long mode enable
export const EFER_LMA = 1 << 10; // long mode active
/** RFLAGS bit 1 is reserved and always 1 (SDM vol. 1 3.4.3). */
export const X86_EFLAGS_FIXED = 1 << 1;
export const X86_EFLAGS_IF = 1 << 9;

/** Real mode: CS:IP = (entry >> 4):0 with a 16-byte-aligned entry, as a boot sector would start. */
export function setupRealMode(vcpu: VcpuFd, entry: number): void {
  if (entry % 16 !== 0 || entry >= 0x100000) throw new Error(`real-mode entry 0x${entry.toString(16)} must be 16-byte aligned and below 1 MiB`);
  const sregs = vcpu.getSregs();
  sregs.assign({ "cs.selector": entry >> 4, "cs.base": entry });
  vcpu.setSregs(sregs);
  const regs = vcpu.getRegs();
  regs.assign({ rip: 0, rflags: X86_EFLAGS_FIXED, rsp: 0xfff0 });
  vcpu.setRegs(regs);
}

export interface LongModeEntry {
  /** Guest-physical (= virtual) address of the first instruction. */
  entry: number;
  /** Value for RSI: the Linux 64-bit boot protocol passes the zero page's address here. */
  rsi?: number;
  /** Page tables usable from CPL3 (probe guests). */
  user?: boolean;
}

/** Write the boot GDT, the empty IDT and the TSS into guest memory. */
export function writeBootTables(mem: GuestMemory): bigint[] {
  const gdt = bootGdt();
  gdt.forEach((e, i) => mem.writeU64(BOOT_GDT_START + i * 8, e));
  mem.fill(BOOT_IDT_START, BOOT_IDT_SIZE);
  // 64-bit TSS (SDM vol. 3A 8.7): RSP0 at offset 4 is the stack the CPU switches to when an interrupt
  // or exception arrives at CPL3. The I/O map base at offset 0x66 points at the bitmap right after the TSS;
  // all zeros lets CPL3 use every port, and the trailing 0xff byte ends the map (SDM vol. 1 19.5.2).
  mem.fill(BOOT_TSS_START, BOOT_TSS_END - BOOT_TSS_START);
  mem.writeU64(BOOT_TSS_START + 4, BOOT_STACK_POINTER);
  mem.writeU16(BOOT_TSS_START + 0x66, BOOT_TSS_IO_BITMAP_START - BOOT_TSS_START);
  mem.writeU8(BOOT_TSS_END - 1, 0xff);
  return gdt;
}

/** Enter 64-bit mode directly: what a bootloader would have done after switching through protected mode. */
export function setupLongMode(vcpu: VcpuFd, mem: GuestMemory, e: LongModeEntry): void {
  const gdt = writeBootTables(mem);
  const cr3 = writeIdentityPageTables(mem, { user: e.user });
  const sregs = vcpu.getSregs();
  const code = segmentFromGdt(gdt[BOOT_CS >> 3]!, BOOT_CS);
  const data = segmentFromGdt(gdt[BOOT_DS >> 3]!, BOOT_DS);
  const tss = segmentFromGdt(gdt[BOOT_TSS >> 3]!, BOOT_TSS);
  sregs.slice("cs").set(code.bytes);
  for (const s of ["ds", "es", "fs", "gs", "ss"]) sregs.slice(s).set(data.bytes);
  sregs.slice("tr").set(tss.bytes);
  sregs.assign({
    "gdt.base": BOOT_GDT_START, "gdt.limit": BOOT_GDT_MAX_ENTRIES * 8 - 1,
    "idt.base": BOOT_IDT_START, "idt.limit": BOOT_IDT_SIZE - 1,
    // `>>> 0`: JavaScript bit operators work on signed 32-bit values, and bit 31 (PG) would go negative.
    cr0: (X86_CR0_PE | X86_CR0_ET | X86_CR0_NE | X86_CR0_PG) >>> 0,
    cr3,
    cr4: X86_CR4_PAE | X86_CR4_OSFXSR | X86_CR4_OSXMMEXCPT,
    efer: EFER_LME | EFER_LMA,
  });
  vcpu.setSregs(sregs);
  const regs = vcpu.getRegs();
  regs.bytes.fill(0);
  regs.assign({ rip: e.entry, rsp: BOOT_STACK_POINTER, rbp: BOOT_STACK_POINTER, rsi: e.rsi ?? 0, rflags: X86_EFLAGS_FIXED });
  vcpu.setRegs(regs);
  setupFpu(vcpu);
}

/**
 * The PVH entry (xen's docs/misc/pvh.pandoc, "x86/HVM direct boot ABI"), which Linux implements as
 * pvh_start_xen: 32-bit protected mode with paging off, CR0.PE set and every other writable CR0/CR4 bit
 * clear; CS a flat 32-bit code segment; DS, ES, SS flat 32-bit data segments; TR a 32-bit TSS; EFLAGS with
 * IF, TF and VM clear; EBX the guest-physical address of struct hvm_start_info.
 */
export function setupPvhEntry(vcpu: VcpuFd, mem: GuestMemory, e: { entry: number; startInfo: number }): void {
  const gdt = writeBootTables(mem);
  const sregs = vcpu.getSregs();
  sregs.slice("cs").set(segmentFromGdt(gdt[BOOT_CS32 >> 3]!, BOOT_CS32).bytes);
  const data = segmentFromGdt(gdt[BOOT_DS >> 3]!, BOOT_DS);
  for (const s of ["ds", "es", "fs", "gs", "ss"]) sregs.slice(s).set(data.bytes);
  sregs.slice("tr").set(segmentFromGdt(gdt[BOOT_TSS >> 3]!, BOOT_TSS).bytes);
  sregs.assign({
    "gdt.base": BOOT_GDT_START, "gdt.limit": BOOT_GDT_MAX_ENTRIES * 8 - 1,
    "idt.base": BOOT_IDT_START, "idt.limit": BOOT_IDT_SIZE - 1,
    cr0: X86_CR0_PE | X86_CR0_ET, cr3: 0, cr4: 0, efer: 0,
  });
  vcpu.setSregs(sregs);
  const regs = vcpu.getRegs();
  regs.bytes.fill(0);
  regs.assign({ rip: e.entry, rbx: e.startInfo, rflags: X86_EFLAGS_FIXED });
  vcpu.setRegs(regs);
  setupFpu(vcpu);
}

/** x87 and SSE control words as after FNINIT (SDM vol. 1 8.1.5, 10.2.3.1): all exceptions masked. */
export function setupFpu(vcpu: VcpuFd): void {
  const fpu = vcpu.getFpu();
  fpu.bytes.fill(0);
  fpu.assign({ fcw: 0x37f, mxcsr: 0x1f80 });
  vcpu.setFpu(fpu);
}
