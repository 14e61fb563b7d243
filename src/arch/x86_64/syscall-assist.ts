// Syscall assist: complete, from the VMM, the system calls an emulating host leaves half done.
//
// What `syscall` should do (Intel SDM vol. 2B, SYSCALL): save RIP in RCX and RFLAGS in R11, clear the
// RFLAGS bits named in MSR_SYSCALL_MASK, load CS and SS from MSR_STAR[47:32] as flat DPL 0 segments, and
// jump to MSR_LSTAR at CPL0. On a PVM-backed host (see src/host.ts) guest CPL3 code runs natively and the
// CPU does all of that except the switch to CPL0: the guest is left at CPL3 at LSTAR, where the kernel's
// entry code (a supervisor page) cannot be fetched. The #PF that follows (CR2 = RIP = LSTAR) reaches the
// guest kernel's page-fault handler, and a stock kernel kills the process with SIGSEGV. No user program
// could ever make a system call.
//
// The VMM finishes the job:
//   1. It finds the guest's #PF handler: the target of gate 14 of the IDT the vCPU has loaded (SDM vol. 3A
//      6.14.1, Figure 6-8), read through the guest's page tables. It looks again at port, MMIO and debug
//      exits (refreshIfDue()), since a kernel moves its IDT during boot.
//   2. It puts a hardware breakpoint on that handler with KVM_SET_GUEST_DEBUG (api.rst 4.59; DR0, DR7.L0).
//      On these hosts a breakpoint on LSTAR itself never fires, as CPL3 fetches run natively and are not
//      checked; the handler is CPL0 code, which the host emulates, so a breakpoint there does fire.
//   3. Each hit is a KVM_EXIT_DEBUG with the exception frame already on the kernel stack: at RSP, the error
//      code, then RIP, CS, RFLAGS, RSP, SS (SDM vol. 3A 6.14.2, Figure 6-9). When the frame says "CPL3 at
//      LSTAR, and CR2 is LSTAR", this is a syscall the CPU began: the VMM drops the frame (RSP = the
//      frame's RSP), sets RFLAGS = the frame's RFLAGS less RF and the SFMASK bits, CS and SS to the kernel
//      selectors from MSR_STAR, RIP = LSTAR, and lets the vCPU go. RCX and R11 already hold what `syscall`
//      put there. The kernel's own entry_SYSCALL_64 runs and returns to user mode with `sysretq`.
//   4. Every other page fault is the guest's business: the VMM disarms the breakpoint, single-steps the
//      handler's first instruction (KVM_GUESTDBG_SINGLESTEP), and re-arms on that step's KVM_EXIT_DEBUG.
//      (Setting RFLAGS.RF to step over the breakpoint does not work on these hosts: it fires again.)
//
// Costs, on the emulating host only: every guest page fault becomes one exit (a syscall) or two (any other
// fault); CR2 keeps LSTAR after a completed syscall; the VMM owns DR0-DR7 (the guest's own hardware
// breakpoints are set aside while this is on). On a host with hardware virtualization `syscall` switches to
// CPL0 itself, the pattern never occurs, and kindling does not arm anything (boot/linux.ts enables this
// only with the emulated-host cpuid profile).

import type { VcpuFd } from "../../kvm/vcpu-fd.ts";
import type { StructView } from "../../kvm/struct.ts";
import { KVM_GUESTDBG_ENABLE, KVM_GUESTDBG_SINGLESTEP, KVM_GUESTDBG_USE_HW_BP, kvm_sregs } from "../../kvm/uapi.ts";
import type { GuestMemory } from "../../memory.ts";
import { gdtEntry, KERNEL_CODE64, KERNEL_DATA, segmentFromGdt } from "./gdt.ts";
import { MSR_LSTAR, MSR_STAR, MSR_SYSCALL_MASK } from "./msrs.ts";
import { translate } from "./paging.ts";
import { EFER_LMA, X86_EFLAGS_FIXED } from "./regs.ts";

/** #PF, the page-fault exception (SDM vol. 3A 6.15, "Interrupt 14"). */
export const PF_VECTOR = 14;
/** Bytes per IDT gate in long mode. */
const IDT_GATE_SIZE = 16;
/** DR7: L0 enables breakpoint 0 (R/W0 = 00, LEN0 = 00: instruction execution); bit 10 always reads 1 (SDM vol. 3B 18.2.4). */
export const DR7_L0 = 1n << 0n;
export const DR7_FIXED = 1n << 10n;
/** DR6: B0, breakpoint 0 was hit; BS, a single step (SDM vol. 3B 18.2.3). */
export const DR6_B0 = 1n << 0n;
export const DR6_BS = 1n << 14n;
/** RFLAGS.RF, the resume flag, which a fault's frame carries (SDM vol. 3A 2.3). */
export const X86_EFLAGS_RF = 1n << 16n;
/** Words of the exception frame the CPU pushes when an exception with an error code arrives from CPL3. */
const FRAME = { error_code: 0, rip: 1, cs: 2, rflags: 3, rsp: 4, ss: 5 } as const;
const FRAME_WORDS = 6;
/** Look at the IDT at most this often (ms) once a handler is armed; see refreshIfDue(). */
export const REFRESH_INTERVAL_MS = 10;

export interface SyscallAssistCounts {
  /** System calls completed. */
  syscalls: number;
  /** Other page faults, each run by the guest's handler after a single step. */
  otherFaults: number;
  /** KVM_EXIT_DEBUG exits in all (each syscall: 1; each other fault: 2). */
  debugExits: number;
  /** Times the breakpoint moved because the guest's #PF handler did. */
  rearmed: number;
}

export interface SyscallAssistResult {
  handled: boolean;
  description: string;
}

/** What completing a syscall needs of the MSRs `syscall` reads, with the segments STAR names, made once. */
interface SyscallMsrs {
  lstar: bigint;
  sfmask: bigint;
  /** kvm_segment bytes for CS and SS at CPL0, as `syscall` loads them from MSR_STAR[47:32]. */
  cs: Uint8Array;
  ss: Uint8Array;
}

export class SyscallAssist {
  /** The guest's #PF handler, where DR0 points while armed. */
  handler?: bigint;
  readonly counts: SyscallAssistCounts = { syscalls: 0, otherFaults: 0, debugExits: 0, rearmed: 0 };
  private stepping = false;
  private lastRefresh = -Infinity;
  /**
   * LSTAR, STAR and SFMASK as last read: a kernel writes them once per CPU at boot (syscall_init), so a
   * syscall at the LSTAR last read needs no KVM_GET_MSRS of its own. A CPL3 fetch fault anywhere else reads
   * them again. (A guest that changed STAR or SFMASK and not LSTAR would get the old ones: only its own
   * processes could notice.)
   */
  private msrs?: SyscallMsrs;

  constructor(
    private readonly vcpu: VcpuFd,
    private readonly mem: GuestMemory,
    private readonly log: (line: string) => void = () => {},
  ) {}

  /**
   * Re-read the guest's #PF handler and re-arm if it moved: at every call until a handler is found, then at
   * most every REFRESH_INTERVAL_MS. The vCPU calls this on each port, MMIO and debug exit, so a guest must
   * make one such exit between installing its #PF gate and its first syscall: a kernel prints, probes
   * devices and takes seconds in between; the syscall probe prints a line. kindling never kicks a vCPU
   * out of KVM_RUN to look sooner: on the PVM host a signal that interrupts KVM_RUN while the guest runs
   * user code was measured to break that process's thread-local storage (it segfaults on %fs reads).
   */
  refreshIfDue(now = performance.now()): void {
    if (this.stepping || (this.handler !== undefined && now - this.lastRefresh < REFRESH_INTERVAL_MS)) return;
    this.lastRefresh = now;
    const handler = pageFaultHandler(this.vcpu, this.mem);
    if (handler === undefined || handler === this.handler) return;
    if (this.handler !== undefined) this.counts.rearmed++;
    else this.log(`syscall assist: breakpoint on the guest's #PF handler at 0x${handler.toString(16)} (this host does not switch to CPL0 on syscall)`);
    this.handler = handler;
    this.arm();
  }

  /** KVM_EXIT_DEBUG. Every debug exit is this assist's while it owns the debug registers. */
  onDebugExit(run: StructView): SyscallAssistResult {
    this.counts.debugExits++;
    if (this.stepping) {
      // The handler's first instruction has run under the single step: watch the handler again.
      this.stepping = false;
      this.arm();
      return { handled: true, description: "page fault left to the guest: breakpoint re-armed after one step" };
    }
    const pc = run.getBig("exit.debug.arch.pc");
    if (this.handler === undefined || pc !== this.handler) {
      // A stale hit (the handler moved since) or a step we did not ask for: put the breakpoint back.
      this.arm();
      return { handled: true, description: `debug exit at 0x${pc.toString(16)}, not the #PF handler: re-armed` };
    }
    if (this.completeSyscall()) {
      this.counts.syscalls++;
      return { handled: true, description: "syscall completed" };
    }
    this.counts.otherFaults++;
    this.stepping = true;
    this.vcpu.setGuestDebug(KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP, [0, 0, 0, 0, 0, 0, 0, DR7_FIXED]);
    return { handled: true, description: "page fault left to the guest: stepping over the breakpoint" };
  }

  /** Turn the breakpoint off (the VM is done with it, or a test wants the guest's own view). */
  disarm(): void {
    this.vcpu.setGuestDebug(0);
    this.handler = undefined;
  }

  private arm(): void {
    if (this.handler === undefined) return;
    this.vcpu.setGuestDebug(KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_HW_BP, [this.handler, 0, 0, 0, 0, 0, 0, DR7_L0 | DR7_FIXED]);
  }

  /** If the vCPU sits at the #PF handler because a CPL3 `syscall` could not reach LSTAR, finish it. */
  private completeSyscall(): boolean {
    const regs = this.vcpu.getRegs();
    const sregs = this.vcpu.getSregs();
    const frame = readFrame(this.mem, sregs.getBig("cr3"), regs.getBig("rsp"));
    if (!frame) return false;
    const fromUser = (frame[FRAME.cs]! & 3n) === 3n;
    if (!fromUser || sregs.getBig("cr2") !== frame[FRAME.rip]) return false;
    // An instruction fetch from CPL3 faulted. At LSTAR, as last read? If not, read the MSRs again: the
    // fault may be a user code page not yet mapped, or LSTAR moved since.
    let m = this.msrs;
    if (m?.lstar !== frame[FRAME.rip]) m = this.readMsrs();
    if (!m || frame[FRAME.rip] !== m.lstar) return false;

    regs.set("rsp", frame[FRAME.rsp]!);
    regs.set("rip", m.lstar);
    regs.set("rflags", (frame[FRAME.rflags]! & ~(X86_EFLAGS_RF | m.sfmask)) | BigInt(X86_EFLAGS_FIXED));
    sregs.bytes.set(m.cs, sregs.base + kvm_sregs.offsetOf("cs"));
    sregs.bytes.set(m.ss, sregs.base + kvm_sregs.offsetOf("ss"));
    this.vcpu.setSregs(sregs);
    this.vcpu.setRegs(regs);
    return true;
  }

  private readMsrs(): SyscallMsrs | undefined {
    const msrs = this.vcpu.getMsrs([MSR_LSTAR, MSR_STAR, MSR_SYSCALL_MASK]);
    const lstar = msrs.get(MSR_LSTAR);
    const star = msrs.get(MSR_STAR);
    if (lstar === undefined || star === undefined) return (this.msrs = undefined);
    // SYSCALL loads CS from STAR[47:32] (RPL cleared) and SS from that + 8, as flat DPL 0 segments.
    const kernelCs = Number((star >> 32n) & 0xfffcn);
    return (this.msrs = {
      lstar,
      sfmask: msrs.get(MSR_SYSCALL_MASK) ?? 0n,
      cs: segmentFromGdt(gdtEntry(KERNEL_CODE64, 0, 0xfffff), kernelCs).bytes,
      ss: segmentFromGdt(gdtEntry(KERNEL_DATA, 0, 0xfffff), kernelCs + 8).bytes,
    });
  }
}

/** The target of IDT gate 14 the vCPU has loaded, or undefined while there is none (not yet in long mode, no gate). */
export function pageFaultHandler(vcpu: VcpuFd, mem: GuestMemory): bigint | undefined {
  const sregs = vcpu.getSregs();
  if ((sregs.getBig("efer") & BigInt(EFER_LMA)) === 0n) return undefined;
  if (sregs.get("idt.limit") < (PF_VECTOR + 1) * IDT_GATE_SIZE - 1) return undefined;
  const gate = sregs.getBig("idt.base") + BigInt(PF_VECTOR * IDT_GATE_SIZE);
  const phys = translate(mem, sregs.getBig("cr3"), gate);
  if (phys === undefined || !mem.contains(phys, IDT_GATE_SIZE)) return undefined;
  const g = mem.read(phys, IDT_GATE_SIZE);
  if ((g[5]! & 0x80) === 0) return undefined; // P, the present bit
  const dv = new DataView(g.buffer, g.byteOffset, g.byteLength);
  // Offset 15:0 in bytes 0-1, 31:16 in bytes 6-7, 63:32 in bytes 8-11.
  return BigInt(dv.getUint16(0, true)) | (BigInt(dv.getUint16(6, true)) << 16n) | (BigInt(dv.getUint32(8, true)) << 32n);
}

/** The six words of the exception frame at `rsp` (a guest-virtual address), or undefined if any is unmapped. */
function readFrame(mem: GuestMemory, cr3: bigint, rsp: bigint): bigint[] | undefined {
  const words: bigint[] = [];
  // One page walk when the frame lies in one 4 KiB page (as it does at the top of a Linux kernel stack);
  // a walk per word otherwise.
  const inOnePage = Number(rsp & 0xfffn) + FRAME_WORDS * 8 <= 0x1000;
  const first = inOnePage ? translate(mem, cr3, rsp) : undefined;
  for (let i = 0; i < FRAME_WORDS; i++) {
    const phys = first !== undefined ? first + i * 8 : translate(mem, cr3, rsp + BigInt(i * 8));
    if (phys === undefined || !mem.contains(phys, 8)) return undefined;
    words.push(mem.readU64(phys));
  }
  return words;
}
