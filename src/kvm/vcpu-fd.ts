// A vCPU fd: what KVM_CREATE_VCPU returns. Its registers are read and written with KVM_GET/SET_* ioctls,
// and its `struct kvm_run` page is mmap'd from the fd: KVM_RUN reports each exit there (api.rst 4.10, 5).

import { close, ERRNO, ioctl, mmap, munmap, SysError, MAP_SHARED, PROT_READ, PROT_WRITE, type Mapping } from "./libc.ts";
import { KVM } from "./ioctl.ts";
import { StructView, type Layout } from "./struct.ts";
import {
  kvm_fpu, kvm_guest_debug, kvm_signal_mask, KERNEL_SIGSET_BYTES, kvm_lapic_state, kvm_msr_entry, kvm_msrs, kvm_regs, kvm_sregs, kvm_vcpu_events,
  kvm_cpuid2, kvm_cpuid_entry2, kvm_debugregs, kvm_mp_state, kvm_xcrs, kvm_xsave,
} from "./uapi.ts";
import { readCpuidEntries, writeCpuidEntries, type CpuidEntry } from "./cpuid.ts";

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

  /**
   * KVM_SET_SIGNAL_MASK (api.rst 4.25): the signals blocked while this vCPU is inside KVM_RUN; the thread's
   * own mask applies again when KVM_RUN returns. `allowed` are the only signals that may interrupt it.
   */
  setRunSignalMask(allowed: number[]): void {
    const buf = new Uint8Array(kvm_signal_mask.size + KERNEL_SIGSET_BYTES);
    new StructView(kvm_signal_mask, buf).set("len", KERNEL_SIGSET_BYTES);
    let blocked = (1n << 64n) - 1n;
    for (const sig of allowed) blocked &= ~(1n << BigInt(sig - 1));
    new DataView(buf.buffer).setBigUint64(kvm_signal_mask.size, blocked, true);
    ioctl(this.fd, KVM.SET_SIGNAL_MASK, buf);
  }

  /** KVM_SET_CPUID2: the CPUID leaves this vCPU's guest will see (api.rst 4.46). */
  setCpuid(entries: CpuidEntry[]): void {
    ioctl(this.fd, KVM.SET_CPUID2, writeCpuidEntries(entries));
  }

  /** KVM_SET_MSRS: returns how many were set; fewer than asked means the one after the last was refused. */
  setMsrs(msrs: { index: number; data: number | bigint }[]): void {
    const buf = new Uint8Array(kvm_msrs.size + msrs.length * kvm_msr_entry.size);
    new StructView(kvm_msrs, buf).set("nmsrs", msrs.length);
    // One DataView for every entry (a snapshot restore sets ~40): a StructView per entry costs more here.
    const dv = new DataView(buf.buffer);
    const index = kvm_msr_entry.offsetOf("index");
    const data = kvm_msr_entry.offsetOf("data");
    msrs.forEach((m, i) => {
      const at = kvm_msrs.size + i * kvm_msr_entry.size;
      dv.setUint32(at + index, m.index, true);
      dv.setBigUint64(at + data, BigInt.asUintN(64, BigInt(m.data)), true);
    });
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

  // ---- state for snapshots (api.rst 4.38, 4.42, 4.44, 4.32, 4.55, 4.47, 4.98) ----

  getMpState(): StructView {
    return this.get(KVM.GET_MP_STATE, kvm_mp_state);
  }
  setMpState(v: StructView): void {
    ioctl(this.fd, KVM.SET_MP_STATE, v.bytes);
  }
  getXsave(): StructView {
    return this.get(KVM.GET_XSAVE, kvm_xsave);
  }
  setXsave(v: StructView): void {
    ioctl(this.fd, KVM.SET_XSAVE, v.bytes);
  }
  getXcrs(): StructView {
    return this.get(KVM.GET_XCRS, kvm_xcrs);
  }
  setXcrs(v: StructView): void {
    ioctl(this.fd, KVM.SET_XCRS, v.bytes);
  }
  getDebugregs(): StructView {
    return this.get(KVM.GET_DEBUGREGS, kvm_debugregs);
  }
  setDebugregs(v: StructView): void {
    ioctl(this.fd, KVM.SET_DEBUGREGS, v.bytes);
  }
  /** KVM_GET_TSC_KHZ: the guest TSC's frequency in kHz (the return value, not a struct). */
  getTscKhz(): number {
    return ioctl(this.fd, KVM.GET_TSC_KHZ);
  }
  setTscKhz(khz: number): void {
    ioctl(this.fd, KVM.SET_TSC_KHZ, khz);
  }
  /** KVM_GET_CPUID2: the leaves set with KVM_SET_CPUID2 (E2BIG when `nent` is too small: grow and retry). */
  getCpuid(): CpuidEntry[] {
    for (let nent = 64; nent <= 4096; nent *= 2) {
      const buf = new Uint8Array(kvm_cpuid2.size + nent * kvm_cpuid_entry2.size);
      new StructView(kvm_cpuid2, buf).set("nent", nent);
      try {
        ioctl(this.fd, KVM.GET_CPUID2, buf);
      } catch (e) {
        if (e instanceof SysError && e.errno === ERRNO.E2BIG) continue;
        throw e;
      }
      return readCpuidEntries(buf);
    }
    throw new Error("KVM_GET_CPUID2: more than 4096 entries");
  }
  /** KVM_KVMCLOCK_CTRL: tell the guest's kvmclock it was paused, so its soft-lockup watchdog does not fire. */
  kvmclockCtrl(): void {
    ioctl(this.fd, KVM.KVMCLOCK_CTRL);
  }

  close(): void {
    munmap(this.run);
    close(this.fd);
  }
}
