// A vCPU fd: what KVM_CREATE_VCPU returns. Its registers are read and written with KVM_GET/SET_* ioctls,
// and its `struct kvm_run` page is mmap'd from the fd: KVM_RUN reports each exit there (api.rst 4.10, 5).

import { close, ioctl, mmap, munmap, MAP_SHARED, PROT_READ, PROT_WRITE, type Mapping } from "./libc.ts";
import { KVM } from "./ioctl.ts";
import { StructView, type Layout } from "./struct.ts";
import {
  kvm_fpu, kvm_guest_debug, kvm_lapic_state, kvm_msr_entry, kvm_msrs, kvm_regs, kvm_sregs, kvm_vcpu_events,
} from "./uapi.ts";
import { writeCpuidEntries, type CpuidEntry } from "./cpuid.ts";

export class VcpuFd {
  /** The shared kvm_run page(s): the size comes from KVM_GET_VCPU_MMAP_SIZE. */
  readonly run: Mapping;

  constructor(
    readonly fd: number,
    readonly id: number,
    mmapSize: number,
  ) {
    this.run = mmap(mmapSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  }

  private get(request: number, layout: Layout): StructView {
    const v = new StructView(layout);
    ioctl(this.fd, request, v.bytes);
    return v;
  }

  getRegs(): StructView {
    return this.get(KVM.GET_REGS, kvm_regs);
  }
  setRegs(v: StructView): void {
    ioctl(this.fd, KVM.SET_REGS, v.bytes);
  }
  getSregs(): StructView {
    return this.get(KVM.GET_SREGS, kvm_sregs);
  }
  setSregs(v: StructView): void {
    ioctl(this.fd, KVM.SET_SREGS, v.bytes);
  }
  getFpu(): StructView {
    return this.get(KVM.GET_FPU, kvm_fpu);
  }
  setFpu(v: StructView): void {
    ioctl(this.fd, KVM.SET_FPU, v.bytes);
  }
  getLapic(): StructView {
    return this.get(KVM.GET_LAPIC, kvm_lapic_state);
  }
  setLapic(v: StructView): void {
    ioctl(this.fd, KVM.SET_LAPIC, v.bytes);
  }
  getVcpuEvents(): StructView {
    return this.get(KVM.GET_VCPU_EVENTS, kvm_vcpu_events);
  }
  setVcpuEvents(v: StructView): void {
    ioctl(this.fd, KVM.SET_VCPU_EVENTS, v.bytes);
  }

  /**
   * KVM_SET_GUEST_DEBUG (api.rst 4.59): `control` is KVM_GUESTDBG_* bits; `debugreg` DR0-DR7 as the guest
   * will run with them while the VMM owns them (the guest's own debug registers are set aside meanwhile).
   */
  setGuestDebug(control: number, debugreg: (number | bigint)[] = []): void {
    const v = new StructView(kvm_guest_debug).set("control", control);
    debugreg.forEach((value, i) => v.set(`arch.debugreg.${i}`, value));
    ioctl(this.fd, KVM.SET_GUEST_DEBUG, v.bytes);
  }

  /** KVM_SET_CPUID2: the CPUID leaves this vCPU's guest will see (api.rst 4.46). */
  setCpuid(entries: CpuidEntry[]): void {
    ioctl(this.fd, KVM.SET_CPUID2, writeCpuidEntries(entries));
  }

  /** KVM_SET_MSRS: returns how many were set; fewer than asked means the one after the last was refused. */
  setMsrs(msrs: { index: number; data: number | bigint }[]): void {
    const buf = new Uint8Array(kvm_msrs.size + msrs.length * kvm_msr_entry.size);
    new StructView(kvm_msrs, buf).set("nmsrs", msrs.length);
    msrs.forEach((m, i) => new StructView(kvm_msr_entry, buf, kvm_msrs.size + i * kvm_msr_entry.size).assign({ index: m.index, data: m.data }));
    const n = ioctl(this.fd, KVM.SET_MSRS, buf);
    if (n !== msrs.length) {
      throw new Error(`KVM_SET_MSRS set ${n} of ${msrs.length} MSRs: MSR 0x${msrs[n]!.index.toString(16)} was refused`);
    }
  }

  getMsrs(indices: number[]): Map<number, bigint> {
    const buf = new Uint8Array(kvm_msrs.size + indices.length * kvm_msr_entry.size);
    new StructView(kvm_msrs, buf).set("nmsrs", indices.length);
    indices.forEach((index, i) => new StructView(kvm_msr_entry, buf, kvm_msrs.size + i * kvm_msr_entry.size).set("index", index));
    const n = ioctl(this.fd, KVM.GET_MSRS, buf);
    const out = new Map<number, bigint>();
    for (let i = 0; i < n; i++) {
      const e = new StructView(kvm_msr_entry, buf, kvm_msrs.size + i * kvm_msr_entry.size);
      out.set(e.get("index"), e.getBig("data"));
    }
    return out;
  }

  close(): void {
    munmap(this.run);
    close(this.fd);
  }
}
