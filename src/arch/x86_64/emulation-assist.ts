// Emulation assist: finish, in the VMM, the few guest instructions an emulating host cannot.
//
// On hosts that run guest kernel code through an instruction emulator (PVM-backed nested KVM, see
// src/host.ts), KVM gives up on some instructions and exits with KVM_EXIT_INTERNAL_ERROR /
// KVM_INTERNAL_ERROR_EMULATION. A stock Linux kernel executes one of them at boot: `int3`, in the
// self-test that checks its breakpoint handler (int3_selftest(), arch/x86/kernel/alternative.c).
//
// `int3` (opcode 0xCC) raises #BP, vector 3, as a trap: the exception is delivered with RIP already past
// the one-byte instruction (Intel SDM vol. 3A 6.5, "trap"). So the assist advances RIP by one and injects
// exception 3 with KVM_SET_VCPU_EVENTS (api.rst 4.32); the guest's own #BP handler runs and returns with
// iretq. On a hardware-virtualization host this code never runs: the CPU executes int3 itself.
//
// `fwait` (opcode 0x9B, also spelled `wait`) is the next one, once guest programs run: Linux executes it at
// CPL0 in fpu__drop() when a task exits or execs. It waits for the x87 unit and raises #MF (vector 16) if an
// unmasked x87 exception is pending, which FSW.ES (the error summary bit) says (SDM vol. 2A, WAIT/FWAIT; vol.
// 1 8.1.3). So the assist reads FSW with KVM_GET_FPU: with ES clear it is a one-byte no-op (RIP + 1); with ES
// set it injects #MF at the instruction, as a fault, the way the CPU would with CR0.NE set.
//
// `ldmxcsr m32` and `stmxcsr m32` (0F AE /2 and /3) load and store MXCSR, the SSE control and status
// register (SDM vol. 2A LDMXCSR, vol. 2B STMXCSR). Linux runs `ldmxcsr` at CPL0 in kernel_fpu_begin_mask()
// before any kernel SIMD code; Debian's kernel gets there at boot. The assist decodes the memory operand
// (modrm.ts), reads or writes the 4 bytes through the guest's page tables, and moves MXCSR through
// KVM_GET/SET_XSAVE (api.rst 4.42): on this host KVM_GET_FPU reports MXCSR as 0. Its faults are kept:
// #UD without CR4.OSFXSR, #NM with CR0.TS, #GP(0) for a reserved bit (those outside MXCSR_MASK).
//
// Anything else is not guessed at: the caller reports it with the registers and the instruction bytes.

import type { VcpuFd } from "../../kvm/vcpu-fd.ts";
import type { StructView } from "../../kvm/struct.ts";
import { KVM_INTERNAL_ERROR, KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES } from "../../kvm/uapi.ts";
import type { GuestMemory } from "../../memory.ts";
import { decodeMemoryOperand } from "./modrm.ts";
import { translate, translateBytes } from "./paging.ts";
import { EFER_LMA, X86_CR0_TS, X86_CR4_OSFXSR } from "./regs.ts";

export const INT3_OPCODE = 0xcc;
export const BP_VECTOR = 3;
export const FWAIT_OPCODE = 0x9b;
/** #MF, the x87 floating-point error (SDM vol. 3A 6.15, "Interrupt 16"). */
export const MF_VECTOR = 16;
/** LDMXCSR and STMXCSR: 0F AE with ModRM.reg = 2 and 3 (SDM vol. 2A Table A-6, group 15). */
export const GROUP15_OPCODE = [0x0f, 0xae] as const;
export const GROUP15_LDMXCSR = 2;
export const GROUP15_STMXCSR = 3;
/** #UD, #NM and #GP (SDM vol. 3A 6.15). */
export const UD_VECTOR = 6;
export const NM_VECTOR = 7;
export const GP_VECTOR = 13;
/** In the XSAVE area (SDM vol. 1 13.4.1): MXCSR at byte 24, MXCSR_MASK at 28, XSTATE_BV at 512 (its bit 1: SSE state). */
const XSAVE_MXCSR = 24 / 4;
const XSAVE_MXCSR_MASK = 28 / 4;
const XSAVE_XSTATE_BV = 512 / 4;
const XFEATURE_MASK_SSE = 1 << 1;
/** The mask to use when the saved MXCSR_MASK is 0 (SDM vol. 1 11.6.6). */
const MXCSR_MASK_DEFAULT = 0xffbf;

/** FSW.ES, the x87 status word's error summary: an unmasked exception is pending (SDM vol. 1 8.1.3.1). */
export const X87_FSW_ES = 1 << 7;

export interface AssistResult {
  handled: boolean;
  /** What was done, or why nothing was: for logs and error reports. */
  description: string;
  /** The instruction bytes at RIP, as far as they could be found. */
  bytes: number[];
}

/** The bytes of the instruction that failed: from KVM when it provides them, else read through the guest's page tables. */
export function failedInstructionBytes(vcpu: VcpuFd, mem: GuestMemory, run: StructView): number[] {
  if (run.getBig("exit.emulation_failure.flags") & BigInt(KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES)) {
    const n = Math.min(run.get("exit.emulation_failure.insn_size"), 15);
    if (n > 0) return [...run.slice("exit.emulation_failure.insn_bytes", n)];
  }
  const regs = vcpu.getRegs();
  const sregs = vcpu.getSregs();
  const linear = sregs.getBig("cs.base") + regs.getBig("rip");
  const paging = (sregs.getBig("cr0") & 0x80000000n) !== 0n;
  const phys = paging ? translate(mem, sregs.getBig("cr3"), linear) : Number(linear);
  if (phys === undefined || !mem.contains(phys, 1)) return [];
  const n = Math.min(15, 4096 - (phys % 4096)); // stay inside the page that translated
  return [...mem.read(phys, mem.contains(phys, n) ? n : 1)];
}

export function emulationAssist(vcpu: VcpuFd, mem: GuestMemory, run: StructView): AssistResult {
  if (run.get("exit.internal.suberror") !== KVM_INTERNAL_ERROR.EMULATION) {
    return { handled: false, description: "not an emulation failure", bytes: [] };
  }
  const bytes = failedInstructionBytes(vcpu, mem, run);
  const sregs = vcpu.getSregs();
  const longMode = (sregs.getBig("efer") & BigInt(EFER_LMA)) !== 0n;
  const cpl = sregs.get("cs.selector") & 3;
  if (bytes[0] === INT3_OPCODE && longMode && cpl === 0) {
    const regs = vcpu.getRegs();
    const rip = regs.getBig("rip");
    regs.set("rip", rip + 1n);
    vcpu.setRegs(regs);
    injectException(vcpu, BP_VECTOR);
    return { handled: true, description: `int3 at CPL0 (rip 0x${rip.toString(16)}) delivered as #BP`, bytes };
  }
  if (bytes[0] === FWAIT_OPCODE && cpl === 0) {
    const regs = vcpu.getRegs();
    const rip = regs.getBig("rip");
    if (vcpu.getFpu().get("fsw") & X87_FSW_ES) {
      injectException(vcpu, MF_VECTOR);
      return { handled: true, description: `fwait at CPL0 (rip 0x${rip.toString(16)}) with an x87 exception pending: #MF delivered`, bytes };
    }
    regs.set("rip", rip + 1n);
    vcpu.setRegs(regs);
    return { handled: true, description: `fwait at CPL0 (rip 0x${rip.toString(16)}) completed as a no-op (no x87 exception pending)`, bytes };
  }
  if (bytes.length && cpl === 0 && longMode) {
    const done = mxcsrAssist(vcpu, mem, bytes, sregs);
    if (done) return { ...done, bytes };
  }
  const shown = bytes.length ? bytes.map((b) => b.toString(16).padStart(2, "0")).join(" ") : "unreadable";
  return { handled: false, description: `no assist for the instruction at CPL${cpl}${longMode ? " in long mode" : ""}: ${shown}`, bytes };
}

/** ldmxcsr or stmxcsr, if that is what `bytes` are; undefined for any other instruction. */
function mxcsrAssist(vcpu: VcpuFd, mem: GuestMemory, bytes: number[], sregs: StructView): Omit<AssistResult, "bytes"> | undefined {
  const regs = vcpu.getRegs();
  const rip = regs.getBig("rip");
  const op = decodeMemoryOperand(bytes, GROUP15_OPCODE, {
    gpr: (name) => regs.getBig(name), rip, fsBase: sregs.getBig("fs.base"), gsBase: sregs.getBig("gs.base"),
  });
  if (!op || (op.digit !== GROUP15_LDMXCSR && op.digit !== GROUP15_STMXCSR)) return undefined;
  const name = op.digit === GROUP15_LDMXCSR ? "ldmxcsr" : "stmxcsr";
  const where = `${name} at CPL0 (rip 0x${rip.toString(16)}, operand 0x${op.address.toString(16)})`;
  if ((sregs.getBig("cr4") & BigInt(X86_CR4_OSFXSR)) === 0n) {
    injectException(vcpu, UD_VECTOR);
    return { handled: true, description: `${where} without CR4.OSFXSR: #UD delivered` };
  }
  if (sregs.getBig("cr0") & BigInt(X86_CR0_TS)) {
    injectException(vcpu, NM_VECTOR);
    return { handled: true, description: `${where} with CR0.TS set: #NM delivered` };
  }
  const phys = translateBytes(mem, sregs.getBig("cr3"), op.address, 4);
  if (!phys) return { handled: false, description: `${where}: the operand is not mapped in guest memory` };
  const xsave = vcpu.getXsave();
  const region = xsave.slice("region"); // a view: writes through it change `xsave`
  const dv = new DataView(region.buffer, region.byteOffset, region.byteLength);
  if (op.digit === GROUP15_STMXCSR) {
    const value = dv.getUint32(XSAVE_MXCSR * 4, true);
    phys.forEach((p, k) => mem.write(p, Uint8Array.of((value >>> (8 * k)) & 0xff)));
  } else {
    const value = phys.reduce((v, p, k) => v | (mem.read(p, 1)[0]! << (8 * k)), 0) >>> 0;
    const mask = dv.getUint32(XSAVE_MXCSR_MASK * 4, true) || MXCSR_MASK_DEFAULT;
    if (value & ~mask) {
      injectException(vcpu, GP_VECTOR, 0);
      return { handled: true, description: `${where}: 0x${value.toString(16)} sets reserved bits: #GP(0) delivered` };
    }
    dv.setUint32(XSAVE_MXCSR * 4, value, true);
    // KVM copies MXCSR in only when XSTATE_BV says the SSE state is there.
    dv.setUint32(XSAVE_XSTATE_BV * 4, dv.getUint32(XSAVE_XSTATE_BV * 4, true) | XFEATURE_MASK_SSE, true);
    vcpu.setXsave(xsave);
  }
  regs.set("rip", rip + BigInt(op.length));
  vcpu.setRegs(regs);
  return { handled: true, description: `${where} completed through KVM_GET/SET_XSAVE` };
}

/** Deliver exception `nr` at the vCPU's next entry, with KVM_SET_VCPU_EVENTS (api.rst 4.32). */
function injectException(vcpu: VcpuFd, nr: number, errorCode?: number): void {
  const events = vcpu.getVcpuEvents();
  events.assign({
    "exception.injected": 1, "exception.nr": nr, "exception.has_error_code": errorCode === undefined ? 0 : 1,
    "exception.error_code": errorCode ?? 0, "exception.pending": 0,
  });
  vcpu.setVcpuEvents(events);
}
