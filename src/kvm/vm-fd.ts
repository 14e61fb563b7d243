// A VM fd: what KVM_CREATE_VM returns. Memory slots, the in-kernel interrupt controllers and PIT,
// irqfd/ioeventfd registrations and vCPUs are all created through it (api.rst 4.24 onwards).

import { addressOf, close, ioctl } from "./libc.ts";
import { KVM } from "./ioctl.ts";
import { StructView } from "./struct.ts";
import {
  KVM_IOEVENTFD_FLAG_DATAMATCH, KVM_IOEVENTFD_FLAG_DEASSIGN, KVM_IOEVENTFD_FLAG_PIO, KVM_IRQFD_FLAG_DEASSIGN,
  KVM_PIT_SPEAKER_DUMMY, kvm_ioeventfd, kvm_irq_level, kvm_irqfd, kvm_pit_config, kvm_userspace_memory_region,
  kvm_clock_data, kvm_dirty_log, kvm_irqchip, kvm_pit_state2,
} from "./uapi.ts";
import { VcpuFd } from "./vcpu-fd.ts";

export class VmFd {
  constructor(
    readonly fd: number,
    /** What the VM needs of its /dev/kvm fd (system.ts's Kvm): the size of each vCPU's kvm_run mapping. */
    readonly kvm: { readonly vcpuMmapSize: number },
  ) {}

  /**
   * KVM_SET_TSS_ADDR: three pages of guest-physical space that Intel VMX needs for real-mode emulation.
   * They must not overlap RAM or MMIO (api.rst 4.48).
   */
  setTssAddr(gpa: number): void {
    ioctl(this.fd, KVM.SET_TSS_ADDR, gpa);
  }

  /** KVM_SET_IDENTITY_MAP_ADDR: one page for VMX's identity map in unrestricted-guest-less mode (4.81). */
  setIdentityMapAddr(gpa: number): void {
    const u64 = new BigUint64Array([BigInt(gpa)]);
    ioctl(this.fd, KVM.SET_IDENTITY_MAP_ADDR, new Uint8Array(u64.buffer));
  }

  /** KVM_CREATE_IRQCHIP: an in-kernel 8259 PIC pair, IOAPIC and a local APIC per vCPU (4.24). */
  createIrqchip(): void {
    ioctl(this.fd, KVM.CREATE_IRQCHIP);
  }

  /** KVM_CREATE_PIT2: an in-kernel i8254 timer at ports 0x40-0x43 (and 0x61 with the dummy speaker) (4.62). */
  createPit2(): void {
    const cfg = new StructView(kvm_pit_config).set("flags", KVM_PIT_SPEAKER_DUMMY);
    ioctl(this.fd, KVM.CREATE_PIT2, cfg.bytes);
  }

  /** KVM_SET_USER_MEMORY_REGION: map host memory at `hostAddr` into guest-physical space (4.35). */
  setUserMemoryRegion(slot: number, gpa: number, size: number, hostAddr: number, flags = 0): void {
    const r = new StructView(kvm_userspace_memory_region).assign({
      slot, flags, guest_phys_addr: gpa, memory_size: size, userspace_addr: hostAddr,
    });
    ioctl(this.fd, KVM.SET_USER_MEMORY_REGION, r.bytes, `slot ${slot} at 0x${gpa.toString(16)}`);
  }

  /** KVM_IRQ_LINE: raise or lower an interrupt line of the in-kernel irqchip (4.25). */
  irqLine(irq: number, level: 0 | 1): void {
    ioctl(this.fd, KVM.IRQ_LINE, new StructView(kvm_irq_level).assign({ irq, level }).bytes);
  }

  /** KVM_IRQFD: a write to `eventfd` injects an interrupt on `gsi`, without a trip through userspace (4.75). */
  irqfd(eventfd: number, gsi: number, deassign = false): void {
    const r = new StructView(kvm_irqfd).assign({ fd: eventfd, gsi, flags: deassign ? KVM_IRQFD_FLAG_DEASSIGN : 0 });
    ioctl(this.fd, KVM.IRQFD, r.bytes, `gsi ${gsi}`);
  }

  /**
   * KVM_IOEVENTFD: a guest write of `len` bytes to `addr` signals `eventfd` instead of exiting to
   * userspace (4.59). With `datamatch`, only writes of that value do.
   */
  ioeventfd(opts: { eventfd: number; addr: number; len: number; pio?: boolean; datamatch?: number; deassign?: boolean }): void {
    let flags = 0;
    if (opts.pio) flags |= KVM_IOEVENTFD_FLAG_PIO;
    if (opts.datamatch !== undefined) flags |= KVM_IOEVENTFD_FLAG_DATAMATCH;
    if (opts.deassign) flags |= KVM_IOEVENTFD_FLAG_DEASSIGN;
    const r = new StructView(kvm_ioeventfd).assign({
      datamatch: opts.datamatch ?? 0, addr: opts.addr, len: opts.len, fd: opts.eventfd, flags,
    });
    ioctl(this.fd, KVM.IOEVENTFD, r.bytes, `${opts.pio ? "port" : "address"} 0x${opts.addr.toString(16)}`);
  }

  /** KVM_CREATE_VCPU: vCPU `id` (its APIC id), with its kvm_run page mapped (4.7). */
  createVcpu(id: number): VcpuFd {
    return new VcpuFd(ioctl(this.fd, KVM.CREATE_VCPU, id), id, this.kvm.vcpuMmapSize);
  }

  // ---- state for snapshots (api.rst 4.63, 4.29, 4.26, 4.8) ----

  getPit2(): StructView {
    const v = new StructView(kvm_pit_state2);
    ioctl(this.fd, KVM.GET_PIT2, v.bytes);
    return v;
  }
  setPit2(v: StructView): void {
    ioctl(this.fd, KVM.SET_PIT2, v.bytes);
  }
  getClock(): StructView {
    const v = new StructView(kvm_clock_data);
    ioctl(this.fd, KVM.GET_CLOCK, v.bytes);
    return v;
  }
  setClock(v: StructView): void {
    ioctl(this.fd, KVM.SET_CLOCK, v.bytes);
  }
  /** KVM_GET_IRQCHIP for one chip: KVM_IRQCHIP_PIC_MASTER, _PIC_SLAVE or _IOAPIC. */
  getIrqchip(chipId: number): StructView {
    const v = new StructView(kvm_irqchip).set("chip_id", chipId);
    ioctl(this.fd, KVM.GET_IRQCHIP, v.bytes, `chip ${chipId}`);
    return v;
  }
  setIrqchip(v: StructView): void {
    ioctl(this.fd, KVM.SET_IRQCHIP, v.bytes, `chip ${v.get("chip_id")}`);
  }
  /**
   * KVM_GET_DIRTY_LOG: one bit per page of `slot` (of `pages` pages), set for each page written since the
   * last call, which clears them. The slot must have KVM_MEM_LOG_DIRTY_PAGES.
   */
  getDirtyLog(slot: number, pages: number): Uint8Array {
    // The kernel writes whole longs: round the bitmap up to 64 bits.
    const bitmap = new Uint8Array(Math.ceil(pages / 64) * 8);
    const v = new StructView(kvm_dirty_log).assign({ slot, dirty_bitmap: addressOf(bitmap) });
    ioctl(this.fd, KVM.GET_DIRTY_LOG, v.bytes, `slot ${slot}`);
    return bitmap;
  }

  close(): void {
    close(this.fd);
  }

  /**
   * Close the fd on Bun's file-system thread pool instead of this thread. When it is the last reference to
   * the VM (every vCPU fd and kvm_run mapping already gone), KVM destroys the VM inside close(): about
   * 15 ms on a nested host, mostly waiting (the in-kernel PIT's thread, RCU grace periods), which would
   * otherwise block every other VM's exits and the API on the main thread. Resolves once it is closed.
   */
  async closeOffThread(): Promise<void> {
    // node:fs is imported here, not at the top: loading it costs a process 2 to 15 ms, which would count
    // in every VM's start to its first instruction.
    const { close: closeOnThreadPool } = await import("node:fs");
    return new Promise((resolve, reject) => closeOnThreadPool(this.fd, (e) => (e ? reject(e) : resolve())));
  }
}
