// Model-specific registers set before the first instruction. Most start at zero; the guest kernel
// programs the syscall MSRs itself. IA32_MISC_ENABLE gets "fast strings" as firmware would set it.
// Intel SDM vol. 4, Table 2-2 "IA-32 Architectural MSRs".

import type { VcpuFd } from "../../kvm/vcpu-fd.ts";

export const MSR_IA32_SYSENTER_CS = 0x174;
export const MSR_IA32_SYSENTER_ESP = 0x175;
export const MSR_IA32_SYSENTER_EIP = 0x176;
export const MSR_IA32_MISC_ENABLE = 0x1a0;
export const MSR_IA32_MISC_ENABLE_FAST_STRING = 1;
export const MSR_EFER = 0xc0000080;
export const MSR_STAR = 0xc0000081;
export const MSR_LSTAR = 0xc0000082;
export const MSR_CSTAR = 0xc0000083;
export const MSR_SYSCALL_MASK = 0xc0000084;
export const MSR_KERNEL_GS_BASE = 0xc0000102;
export const MSR_IA32_TSC = 0x10;

export function bootMsrs(): { index: number; data: number }[] {
  return [
    { index: MSR_IA32_SYSENTER_CS, data: 0 },
    { index: MSR_IA32_SYSENTER_ESP, data: 0 },
    { index: MSR_IA32_SYSENTER_EIP, data: 0 },
    { index: MSR_STAR, data: 0 },
    { index: MSR_CSTAR, data: 0 },
    { index: MSR_KERNEL_GS_BASE, data: 0 },
    { index: MSR_SYSCALL_MASK, data: 0 },
    { index: MSR_LSTAR, data: 0 },
    { index: MSR_IA32_TSC, data: 0 },
    { index: MSR_IA32_MISC_ENABLE, data: MSR_IA32_MISC_ENABLE_FAST_STRING },
  ];
}

export function setupMsrs(vcpu: VcpuFd): void {
  vcpu.setMsrs(bootMsrs());
}
