// One vCPU's state, saved and restored with the KVM ioctls in the orders Firecracker uses
// (firecracker src/vmm/src/arch/x86_64/vcpu.rs, save_state and restore_state). The order matters:
//
// Save: MP_STATE first (reading it lets KVM settle pending INIT/SIPI events: api.rst 4.38), then REGS, SREGS,
// XSAVE (or FPU on a host without KVM_CAP_XSAVE), XCRS, DEBUGREGS, LAPIC, TSC_KHZ, CPUID2, MSRS, and
// VCPU_EVENTS last (reading the other state can change the pending events).
//
// Restore: CPUID2 first (KVM checks later state, EFER.LME for one, against the guest's CPUID), MP_STATE, REGS,
// SREGS, XSAVE, XCRS, DEBUGREGS, LAPIC (after SREGS, whose apic_base it depends on, and before MSRS, so the
// TSC-deadline MSR lands in a configured APIC), MSRS (IA32_TSC before IA32_TSC_DEADLINE: the deadline is
// relative to the TSC), VCPU_EVENTS, and finally KVM_KVMCLOCK_CTRL, which tells a guest using kvmclock that it
// was stopped, so its soft-lockup watchdog does not fire.
//
// Each struct is kept as the kernel's bytes, base64-encoded: the snapshot is JSON, and the bytes go back to
// the kernel unchanged. MSRs are kept as index/value pairs.

import type { VcpuFd } from "../kvm/vcpu-fd.ts";
import { StructView, type Layout } from "../kvm/struct.ts";
import {
  kvm_debugregs, kvm_fpu, kvm_lapic_state, kvm_mp_state, kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave,
} from "../kvm/uapi.ts";
import { ERRNO, SysError } from "../kvm/libc.ts";
import type { CpuidEntry } from "../kvm/system.ts";
import { MSR_IA32_TSC } from "../arch/x86_64/msrs.ts";

/** IA32_TSC_DEADLINE (Intel SDM vol. 4, table 2-2): an absolute TSC value, so it must follow IA32_TSC. */
export const MSR_IA32_TSC_DEADLINE = 0x6e0;

/** What the host offers, decided once per VM (KVM_CHECK_EXTENSION), so save and restore agree. */
export interface VcpuStateCaps {
  xsave: boolean;
  xcrs: boolean;
  debugregs: boolean;
  tscKhz: boolean;
}

export interface VcpuState {
  id: number;
  mp_state: string;
  regs: string;
  sregs: string;
  /** XSAVE area, or `fpu` on a host without KVM_CAP_XSAVE. */
  xsave?: string;
  fpu?: string;
  xcrs?: string;
  debugregs?: string;
  lapic: string;
  /** The guest TSC's frequency, kHz (null where KVM_GET_TSC_KHZ is absent). */
  tsc_khz: number | null;
  cpuid: CpuidEntry[];
  /** [index, value as a hex string] for every MSR KVM could read. */
  msrs: [number, string][];
  vcpu_events: string;
}

const b64 = (v: StructView) => Buffer.from(v.bytes).toString("base64");

function fromB64(layout: Layout, text: string, what: string): StructView {
  const bytes = Buffer.from(text, "base64");
  if (bytes.byteLength !== layout.size) {
    throw new Error(`${what}: ${bytes.byteLength} bytes, struct ${layout.name} has ${layout.size}`);
  }
  return new StructView(layout, bytes);
}

/**
 * Read every MSR in `indices`. KVM_GET_MSRS stops at the first MSR it cannot read and returns how many it
 * did: that one is dropped and the rest read again, so one unreadable MSR does not lose the others.
 */
export function readMsrs(fd: VcpuFd, indices: number[]): [number, bigint][] {
  const out: [number, bigint][] = [];
  let rest = indices;
  while (rest.length > 0) {
    const got = fd.getMsrs(rest);
    for (const [i, v] of got) out.push([i, v]);
    rest = rest.slice(got.size + 1);
  }
  return out;
}

export function saveVcpuState(fd: VcpuFd, caps: VcpuStateCaps, msrIndices: number[]): VcpuState {
  const mp_state = b64(fd.getMpState());
  const regs = b64(fd.getRegs());
  const sregs = b64(fd.getSregs());
  const fp = caps.xsave ? { xsave: b64(fd.getXsave()) } : { fpu: b64(fd.getFpu()) };
  const xcrs = caps.xcrs ? b64(fd.getXcrs()) : undefined;
  const debugregs = caps.debugregs ? b64(fd.getDebugregs()) : undefined;
  const lapic = b64(fd.getLapic());
  const tsc_khz = caps.tscKhz ? fd.getTscKhz() : null;
  const cpuid = fd.getCpuid();
  const msrs = readMsrs(fd, msrIndices).map(([i, v]): [number, string] => [i, `0x${v.toString(16)}`]);
  const vcpu_events = b64(fd.getVcpuEvents());
  return { id: fd.id, mp_state, regs, sregs, ...fp, xcrs, debugregs, lapic, tsc_khz, cpuid, msrs, vcpu_events };
}

/** The MSRs in the order KVM_SET_MSRS must see them: IA32_TSC before IA32_TSC_DEADLINE. */
export function msrRestoreOrder(msrs: [number, string][]): { index: number; data: bigint }[] {
  const list = msrs.map(([index, v]) => ({ index, data: BigInt(v) }));
  const rank = (i: number) => (i === MSR_IA32_TSC ? 0 : i === MSR_IA32_TSC_DEADLINE ? 2 : 1);
  return list.sort((a, b) => rank(a.index) - rank(b.index));
}

/**
 * `hostTscKhz`: what KVM_GET_TSC_KHZ gives a new vCPU of this VM (the caller asked once, for the
 * compatibility check; every new vCPU of a VM starts at the same frequency).
 */
export function restoreVcpuState(fd: VcpuFd, s: VcpuState, hostTscKhz: number | null = fd.getTscKhz()): void {
  const at = (what: string) => `vCPU ${s.id} ${what}`;
  // A guest TSC of another frequency than this host's must be scaled (KVM_SET_TSC_KHZ), or its clock runs
  // fast or slow; the compatibility check has refused hosts that cannot (see compat.ts).
  if (s.tsc_khz !== null && s.tsc_khz !== hostTscKhz) fd.setTscKhz(s.tsc_khz);
  fd.setCpuid(s.cpuid);
  fd.setMpState(fromB64(kvm_mp_state, s.mp_state, at("mp_state")));
  fd.setRegs(fromB64(kvm_regs, s.regs, at("regs")));
  fd.setSregs(fromB64(kvm_sregs, s.sregs, at("sregs")));
  if (s.xsave !== undefined) fd.setXsave(fromB64(kvm_xsave, s.xsave, at("xsave")));
  else if (s.fpu !== undefined) fd.setFpu(fromB64(kvm_fpu, s.fpu, at("fpu")));
  if (s.xcrs !== undefined) fd.setXcrs(fromB64(kvm_xcrs, s.xcrs, at("xcrs")));
  if (s.debugregs !== undefined) fd.setDebugregs(fromB64(kvm_debugregs, s.debugregs, at("debugregs")));
  fd.setLapic(fromB64(kvm_lapic_state, s.lapic, at("lapic")));
  fd.setMsrs(msrRestoreOrder(s.msrs));
  fd.setVcpuEvents(fromB64(kvm_vcpu_events, s.vcpu_events, at("vcpu_events")));
  try {
    fd.kvmclockCtrl();
  } catch (e) {
    // EINVAL: the guest has not enabled kvmclock (no pvclock page), so there is no one to tell. Firecracker
    // ignores this failure as well.
    if (!(e instanceof SysError && e.errno === ERRNO.EINVAL)) throw e;
  }
}
