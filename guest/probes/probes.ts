// The probe guests: tiny assembly programs that exercise one part of the VMM each, through real KVM, in
// milliseconds. They do their work at CPL3 where they can, because some hosts emulate guest CPL0 code
// one instruction at a time. docs/probes.md walks through them as a ladder.

import {
  BOOT_TIMER_START, COM1_IRQ, COM1_PORT, HIMEM_START, I8042_COMMAND_PORT, IRQ_BASE, REAL_MODE_PROBE_START, SCRATCH_MMIO_START,
  SCRATCH_PORT, VIRTIO_MMIO_START,
} from "../../src/arch/x86_64/layout.ts";
import { BOOT_CS, USER_CS, USER_DS } from "../../src/arch/x86_64/gdt.ts";
import { BP_VECTOR } from "../../src/arch/x86_64/emulation-assist.ts";
import { PF_VECTOR } from "../../src/arch/x86_64/syscall-assist.ts";
import { MSR_EFER, MSR_LSTAR, MSR_STAR, MSR_SYSCALL_MASK } from "../../src/arch/x86_64/msrs.ts";
import { EFER_SCE } from "../../src/arch/x86_64/regs.ts";
import * as VIRTIO from "../../src/devices/virtio/uapi.ts";
import { BOOT_TIMER_MAGIC } from "../../src/devices/boot-timer.ts";

export interface ProbeSpec {
  name: string;
  /** "real": started at CS:IP = (load >> 4):0 in real mode; "long": started in 64-bit mode at CPL0. */
  mode: "real" | "long";
  /** Guest-physical address the flat binary is loaded at (and, for long mode, linked at and entered at). */
  load: number;
  /** What it shows. */
  about: string;
}

export const PROBES: Record<string, ProbeSpec> = {
  hello: { name: "hello", mode: "real", load: REAL_MODE_PROBE_START, about: "real mode, prints over the UART, halts" },
  longmode: { name: "longmode", mode: "long", load: HIMEM_START, about: "64-bit mode entered by the VMM, then CPL3" },
  mmio: { name: "mmio", mode: "long", load: HIMEM_START, about: "CPL3 loads and stores to an MMIO device" },
  irq: { name: "irq", mode: "long", load: HIMEM_START, about: "a UART interrupt through irqfd, handled at CPL0" },
  int3: { name: "int3", mode: "long", load: HIMEM_START, about: "int3 at CPL0: executed, or completed by the emulation assist" },
  mxcsr: { name: "mxcsr", mode: "long", load: HIMEM_START, about: "ldmxcsr/stmxcsr at CPL0: executed, or completed by the emulation assist" },
  "virtio-blk": { name: "virtio-blk", mode: "long", load: HIMEM_START, about: "a CPL3 virtio-blk driver: ioeventfd notifies, irqfd interrupts" },
  exits: { name: "exits", mode: "long", load: HIMEM_START, about: "EXIT_LOOPS port writes, then EXIT_LOOPS MMIO writes (bench)" },
  syscall: { name: "syscall", mode: "long", load: HIMEM_START, about: "CPL3 syscalls to a CPL0 entry: run by the CPU, or completed by the syscall assist" },
  "first-write": { name: "first-write", mode: "long", load: HIMEM_START, about: "writes 123 to the boot timer first, then resets (bench)" },
  counter: { name: "counter", mode: "long", load: HIMEM_START, about: "counts in memory, on a port and on the UART, forever (snapshots)" },
};

/** How many port writes, then MMIO writes, the exits probe makes. */
export const EXIT_LOOPS = 100_000;

/** Vector the irq probe programs the master 8259 to (IRQ n arrives as vector PIC_VECTOR_BASE + n). */
export const PIC_VECTOR_BASE = 0x20;

/** RFLAGS for CPL3 code: the reserved bit 1 (always 1), and IF (bit 9) where a probe takes interrupts. */
export const RFLAGS_USER = 0x2;
export const RFLAGS_IF = 0x200;

/**
 * The syscall probe's supervisor-only alias of low memory: a guest-virtual address (not guest-physical RAM),
 * made by its own PDPT entry SYSCALL_ALIAS_PDPT_INDEX, well above the VMM's identity map of the low 4 GiB.
 */
export const SYSCALL_ALIAS_PDPT_INDEX = 8;
export const SYSCALL_ALIAS = SYSCALL_ALIAS_PDPT_INDEX * 2 ** 30;
/** SYSRET loads SS from STAR[63:48] + 8 and CS from + 16 (SDM vol. 2B, SYSRET): the boot GDT's USER_DS and USER_CS. */
export const STAR_SYSRET_BASE = (USER_DS & ~3) - 8;
/** What the probe's syscall clears in RFLAGS: TF, IF, DF, IOPL, NT, AC (the bits Linux clears). */
export const SYSCALL_MASK = 0x47700;

/** The virtio-blk probe's queue size and largest request (its data buffer). */
export const VIRTIO_BLK_PROBE_QSIZE = 8;
export const VIRTIO_BLK_PROBE_BUF_SIZE = 64 * 1024;

/** The virtio spec's register offsets, status bits and request types, by their spec names. */
const VIRTIO_SYMBOLS = Object.fromEntries(
  Object.entries(VIRTIO).filter(
    ([k, v]) => typeof v === "number" && /^(VIRTIO_MMIO_|VIRTIO_CONFIG_S_|VIRTIO_BLK_T_|VRING_DESC_F_)/.test(k),
  ),
) as Record<string, number>;

/** Symbols the assembly sources use, passed to `as` with --defsym so each value is defined once, in TS. */
export const PROBE_SYMBOLS: Record<string, number> = {
  COM1_PORT, COM1_IRQ, I8042_COMMAND_PORT, SCRATCH_MMIO_START, BOOT_CS, USER_CS, USER_DS, PIC_VECTOR_BASE,
  RFLAGS_USER, RFLAGS_IF, SCRATCH_PORT, EXIT_LOOPS, BP_VECTOR,
  PF_VECTOR, MSR_EFER, EFER_SCE, MSR_STAR, MSR_LSTAR, MSR_SYSCALL_MASK, STAR_SYSRET_BASE, SYSCALL_MASK,
  SYSCALL_ALIAS, SYSCALL_ALIAS_PDPT_INDEX,
  // The virtio-blk probe drives virtio-mmio device 0.
  VIRTIO_BLK_BASE: VIRTIO_MMIO_START, VIRTIO_BLK_IRQ: IRQ_BASE,
  QSIZE: VIRTIO_BLK_PROBE_QSIZE, BUF_SIZE: VIRTIO_BLK_PROBE_BUF_SIZE,
  ...VIRTIO_SYMBOLS, BOOT_TIMER_START, BOOT_TIMER_MAGIC,
};
