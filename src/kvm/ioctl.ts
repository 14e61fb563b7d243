// Ioctl request numbers, computed the way <asm-generic/ioctl.h> computes them.
//
//   bits  0..7   nr     the command number inside its family
//   bits  8..15  type   the family: 0xAE (KVMIO) for KVM, 'T' (0x54) for tun
//   bits 16..29  size   sizeof the argument struct
//   bits 30..31  dir    _IOC_NONE 0, _IOC_WRITE 1 (userspace writes, kernel reads), _IOC_READ 2
//
// Ioctls with a struct argument carry its size, so each one names the layout it passes.

import type { Layout } from "./struct.ts";
import {
  kvm_clock_data, kvm_debugregs, kvm_dirty_log, kvm_irqchip, kvm_mp_state, kvm_msr_list, kvm_pit_state2, kvm_xcrs, kvm_xsave,
  kvm_cpuid2, kvm_fpu, kvm_guest_debug, kvm_signal_mask, kvm_ioeventfd, kvm_irq_level, kvm_irqfd, kvm_lapic_state, kvm_msrs, kvm_pit_config,
  kvm_regs, kvm_sregs, kvm_userspace_memory_region, kvm_vcpu_events,
} from "./uapi.ts";

const _IOC_NONE = 0;
const _IOC_WRITE = 1;
const _IOC_READ = 2;

function _IOC(dir: number, type: number, nr: number, size: number): number {
  // `>>> 0` keeps the result an unsigned 32-bit number (dir sits in the top bits).
  return ((dir << 30) | (size << 16) | (type << 8) | nr) >>> 0;
}
const sz = (s: Layout | number) => (typeof s === "number" ? s : s.size);
export const _IO = (type: number, nr: number) => _IOC(_IOC_NONE, type, nr, 0);
export const _IOR = (type: number, nr: number, s: Layout | number) => _IOC(_IOC_READ, type, nr, sz(s));
export const _IOW = (type: number, nr: number, s: Layout | number) => _IOC(_IOC_WRITE, type, nr, sz(s));
export const _IOWR = (type: number, nr: number, s: Layout | number) => _IOC(_IOC_READ | _IOC_WRITE, type, nr, sz(s));

export const KVMIO = 0xae;

/** The KVM ioctls kindling issues, with the kernel's names (api.rst section 4). */
export const KVM = {
  // on the /dev/kvm fd
  GET_API_VERSION: _IO(KVMIO, 0x00),
  CREATE_VM: _IO(KVMIO, 0x01),
  CHECK_EXTENSION: _IO(KVMIO, 0x03),
  GET_VCPU_MMAP_SIZE: _IO(KVMIO, 0x04),
  GET_SUPPORTED_CPUID: _IOWR(KVMIO, 0x05, kvm_cpuid2),
  // on a VM fd
  CREATE_VCPU: _IO(KVMIO, 0x41),
  SET_USER_MEMORY_REGION: _IOW(KVMIO, 0x46, kvm_userspace_memory_region),
  SET_TSS_ADDR: _IO(KVMIO, 0x47),
  SET_IDENTITY_MAP_ADDR: _IOW(KVMIO, 0x48, 8),
  CREATE_IRQCHIP: _IO(KVMIO, 0x60),
  IRQ_LINE: _IOW(KVMIO, 0x61, kvm_irq_level),
  IRQFD: _IOW(KVMIO, 0x76, kvm_irqfd),
  CREATE_PIT2: _IOW(KVMIO, 0x77, kvm_pit_config),
  IOEVENTFD: _IOW(KVMIO, 0x79, kvm_ioeventfd),
  // on a vCPU fd
  RUN: _IO(KVMIO, 0x80),
  GET_REGS: _IOR(KVMIO, 0x81, kvm_regs),
  SET_REGS: _IOW(KVMIO, 0x82, kvm_regs),
  GET_SREGS: _IOR(KVMIO, 0x83, kvm_sregs),
  SET_SREGS: _IOW(KVMIO, 0x84, kvm_sregs),
  GET_MSRS: _IOWR(KVMIO, 0x88, kvm_msrs),
  SET_MSRS: _IOW(KVMIO, 0x89, kvm_msrs),
  GET_FPU: _IOR(KVMIO, 0x8c, kvm_fpu),
  SET_FPU: _IOW(KVMIO, 0x8d, kvm_fpu),
  GET_LAPIC: _IOR(KVMIO, 0x8e, kvm_lapic_state),
  SET_LAPIC: _IOW(KVMIO, 0x8f, kvm_lapic_state),
  SET_CPUID2: _IOW(KVMIO, 0x90, kvm_cpuid2),
  GET_CPUID2: _IOWR(KVMIO, 0x91, kvm_cpuid2),
  GET_VCPU_EVENTS: _IOR(KVMIO, 0x9f, kvm_vcpu_events),
  SET_VCPU_EVENTS: _IOW(KVMIO, 0xa0, kvm_vcpu_events),
  // saving and restoring state (snapshots)
  GET_MSR_INDEX_LIST: _IOWR(KVMIO, 0x02, kvm_msr_list),
  GET_DIRTY_LOG: _IOW(KVMIO, 0x42, kvm_dirty_log),
  GET_IRQCHIP: _IOWR(KVMIO, 0x62, kvm_irqchip),
  SET_IRQCHIP: _IOR(KVMIO, 0x63, kvm_irqchip), // _IOR in the kernel's header, though userspace writes
  SET_CLOCK: _IOW(KVMIO, 0x7b, kvm_clock_data),
  GET_CLOCK: _IOR(KVMIO, 0x7c, kvm_clock_data),
  GET_PIT2: _IOR(KVMIO, 0x9f, kvm_pit_state2),
  SET_PIT2: _IOW(KVMIO, 0xa0, kvm_pit_state2),
  GET_MP_STATE: _IOR(KVMIO, 0x98, kvm_mp_state),
  SET_MP_STATE: _IOW(KVMIO, 0x99, kvm_mp_state),
  GET_DEBUGREGS: _IOR(KVMIO, 0xa1, kvm_debugregs),
  SET_DEBUGREGS: _IOW(KVMIO, 0xa2, kvm_debugregs),
  SET_TSC_KHZ: _IO(KVMIO, 0xa2),
  GET_TSC_KHZ: _IO(KVMIO, 0xa3),
  GET_XSAVE: _IOR(KVMIO, 0xa4, kvm_xsave),
  SET_XSAVE: _IOW(KVMIO, 0xa5, kvm_xsave),
  GET_XCRS: _IOR(KVMIO, 0xa6, kvm_xcrs),
  SET_XCRS: _IOW(KVMIO, 0xa7, kvm_xcrs),
  KVMCLOCK_CTRL: _IO(KVMIO, 0xad),
  SET_GUEST_DEBUG: _IOW(KVMIO, 0x9b, kvm_guest_debug),
  SET_SIGNAL_MASK: _IOW(KVMIO, 0x8b, kvm_signal_mask),
} as const;

/** Request number to `KVM_NAME`, so an error can say which ioctl failed. */
export function ioctlName(request: number): string {
  for (const [k, v] of Object.entries(KVM)) if (v === request) return `KVM_${k}`;
  for (const [k, v] of Object.entries(OTHER_IOCTLS)) if (v === request) return k;
  return `ioctl 0x${request.toString(16)}`;
}

/** Ioctls of other families that other modules register so errors can name them (e.g. TUNSETIFF). */
const OTHER_IOCTLS: Record<string, number> = {};
export function registerIoctlName(name: string, request: number): void {
  OTHER_IOCTLS[name] = request;
}
