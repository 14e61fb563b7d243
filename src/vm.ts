// A virtual machine: KVM objects, guest RAM, buses, devices and vCPUs, with no state outside this object,
// so one process can hold many VMs.
//
// Creating one follows the order the KVM API wants (api.rst 4):
//   1. open /dev/kvm, check the API version (Kvm)
//   2. KVM_CREATE_VM
//   3. guest RAM: mmap + KVM_SET_USER_MEMORY_REGION per region. Before the irqchip: measured on this
//      project's (PVM) host, a memory slot added after KVM_CREATE_IRQCHIP takes ~7 ms (a grace period the
//      kernel waits out), one added before it ~0.2 ms; the API allows either order.
//   4. KVM_SET_TSS_ADDR (Intel needs three pages for real-mode emulation), KVM_CREATE_IRQCHIP, KVM_CREATE_PIT2
//   5. devices on the port-IO and MMIO buses, their interrupt lines as irqfds
//   6. KVM_CREATE_VCPU per vCPU (after the irqchip, so each gets an in-kernel local APIC)
// Loading a guest and setting the first registers is the caller's job (see boot/probe.ts); then start().

import { Bus } from "./bus.ts";
import { Kvm } from "./kvm/system.ts";
import type { VmFd } from "./kvm/vm-fd.ts";
import { allocateGuestMemory, freeGuestMemory, type GuestMemory } from "./memory.ts";
import { IrqFdLine } from "./kvm/irqfd.ts";
import { Vcpu } from "./vcpu/vcpu.ts";
import {
  COM1_IRQ, I8042_KEYBOARD_IRQ, IRQ_BASE, IRQ_MAX, KVM_TSS_ADDRESS, VIRTIO_DEVICES_MAX, VIRTIO_MMIO_SIZE,
  VIRTIO_MMIO_START, ramRegions,
} from "./arch/x86_64/layout.ts";
import { Serial } from "./devices/serial.ts";
import { VirtioMmioTransport } from "./devices/virtio/mmio.ts";
import { VIRTIO_MMIO_QUEUE_NOTIFY, VIRTIO_MMIO_STATUS } from "./devices/virtio/uapi.ts";
import type { VirtioDevice } from "./devices/virtio/device.ts";
import { IoEventFd } from "./kvm/ioeventfd.ts";
import { attachLegacyDevices, type LegacyDevices } from "./devices/legacy.ts";
import { Lifecycle, type VmEnd, type VmState } from "./lifecycle.ts";
import { prestartVcpuWorkers } from "./vcpu/worker-pool.ts";
import { KVM_MEM_LOG_DIRTY_PAGES } from "./kvm/uapi.ts";

export interface VmOptions {
  /** Guest RAM in bytes. */
  memSize: number;
  vcpus?: number;
  /**
   * In-kernel PIC/IOAPIC/local APICs and PIT (default true). Without them a HLT exits to the VMM
   * (KVM_EXIT_HLT), which the `hello` probe uses to end; with them the vCPU sleeps in the kernel instead.
   */
  irqchip?: boolean;
  /** Where the serial console's output goes. */
  consoleOutput?: (bytes: Uint8Array) => void;
  /** Log lines from the VMM about this VM. */
  log?: (line: string) => void;
  /**
   * How virtio queue notifications reach the device: "ioeventfd" (default; the vCPU does not stop), or
   * "exit" (each QueueNotify write is an MMIO exit handled before the vCPU continues). "exit" exists to
   * measure what the ioeventfd saves (bench/virtio-blk.ts).
   */
  queueNotify?: "ioeventfd" | "exit";
  /** Guest RAM made elsewhere (a snapshot's memory file, see snapshot/restore.ts) instead of fresh memory. */
  memory?: GuestMemory;
  /** Have KVM log the pages the guest writes (KVM_MEM_LOG_DIRTY_PAGES), and the VMM its own: diff snapshots. */
  trackDirtyPages?: boolean;
  /**
   * Complete guest system calls that this host leaves at LSTAR in CPL3 (src/arch/x86_64/syscall-assist.ts).
   * For hosts that emulate guest kernel code only; on others it would only add exits.
   */
  syscallAssist?: boolean;
}

/** A virtio device on the MMIO bus: where it is, its interrupt, and how the kernel learns of it. */
export interface AttachedVirtio {
  transport: VirtioMmioTransport;
  addr: number;
  size: number;
  irq: number;
}

export class Vm {
  readonly kvm: Kvm;
  readonly fd: VmFd;
  readonly memory: GuestMemory;
  readonly pio: Bus;
  readonly mmio: Bus;
  readonly vcpus: Vcpu[] = [];
  readonly serial: Serial;
  /** The UART, i8042 and CMOS RTC on the port-IO bus (src/devices/legacy.ts). */
  readonly legacy: LegacyDevices;
  readonly irqchip: boolean;
  readonly trackDirtyPages: boolean;
  private readonly queueNotify: "ioeventfd" | "exit";
  private readonly irqLines: IrqFdLine[] = [];
  private readonly ioEventFds: IoEventFd[] = [];
  /** virtio devices in the order they were added: device i has window i and IRQ IRQ_BASE + i. */
  readonly virtio: AttachedVirtio[] = [];
  readonly log: (line: string) => void;
  /** Not started -> Running <-> Paused -> Stopped (src/lifecycle.ts). */
  private readonly lifecycle = new Lifecycle();
  private endedResolve!: (e: VmEnd) => void;
  /** Resolves with how the VM ended, once every vCPU thread has stopped. */
  readonly exited: Promise<VmEnd>;
  private closed = false;

  constructor(opts: VmOptions) {
    this.log = opts.log ?? (() => {});
    // The vCPU threads load their script while the VM is set up below (vcpu/worker-pool.ts).
    prestartVcpuWorkers(opts.vcpus ?? 1);
    this.irqchip = opts.irqchip ?? true;
    this.queueNotify = opts.queueNotify ?? "ioeventfd";
    this.exited = new Promise((resolve) => (this.endedResolve = resolve));
    this.kvm = new Kvm();
    try {
      this.fd = this.kvm.createVm();
    } catch (e) {
      this.kvm.close();
      throw e;
    }
    // Every step from here on holds something of the host's (fds, RAM, threads): if one fails, everything
    // taken so far is given back before the error goes on (nothing leaks when a client retries).
    try {
      // RAM slots before the irqchip: registering a slot then costs far less (snapshot restores care).
      this.memory = opts.memory ?? allocateGuestMemory(ramRegions(opts.memSize));
      this.trackDirtyPages = opts.trackDirtyPages ?? false;
      if (this.trackDirtyPages) this.memory.trackVmmWrites();
      const slotFlags = this.trackDirtyPages ? KVM_MEM_LOG_DIRTY_PAGES : 0;
      this.memory.regions.forEach((r, slot) => this.fd.setUserMemoryRegion(slot, r.gpa, r.bytes.byteLength, r.hostAddr!, slotFlags));
      this.fd.setTssAddr(KVM_TSS_ADDRESS);
      if (this.irqchip) {
        this.fd.createIrqchip();
        this.fd.createPit2();
      }

      this.pio = new Bus("pio", this.log);
      this.mmio = new Bus("mmio", this.log);
      this.legacy = attachLegacyDevices(this.pio, {
        serialIrq: this.interruptLine(COM1_IRQ),
        keyboardIrq: this.interruptLine(I8042_KEYBOARD_IRQ),
        consoleOutput: opts.consoleOutput,
        onReset: () => this.end({ reason: "reset", message: "guest reset the machine through the i8042 (0xFE to port 0x64)" }),
      });
      this.serial = this.legacy.serial;

      for (let i = 0; i < (opts.vcpus ?? 1); i++) this.vcpus.push(new Vcpu(this.fd.createVcpu(i), this));
      if (opts.syscallAssist) for (const v of this.vcpus) v.enableSyscallAssist();
    } catch (e) {
      this.releasePartial();
      throw e;
    }
  }

  /** Undo a constructor that failed part way: whatever of the vCPUs, lines, RAM and fds exists. */
  private releasePartial(): void {
    const quietly = (f: () => void) => {
      try {
        f();
      } catch {
        // Already failing: the first error is the one reported.
      }
    };
    for (const v of this.vcpus) {
      quietly(() => v.thread.terminate());
      quietly(() => v.fd.close());
    }
    for (const l of this.irqLines) quietly(() => l.close());
    if (this.memory) quietly(() => freeGuestMemory(this.memory));
    quietly(() => this.fd.close());
    quietly(() => this.kvm.close());
  }

  /** An interrupt line on `gsi`: an eventfd registered with KVM_IRQFD, or a no-op without an irqchip. */
  interruptLine(gsi: number): IrqFdLine | { gsi: number; trigger(): void } {
    if (!this.irqchip) return { gsi, trigger: () => {} };
    const line = new IrqFdLine(this.fd, gsi);
    this.irqLines.push(line);
    return line;
  }

  /**
   * Put a virtio device on the MMIO bus, in the next free window and on the next free IRQ. Its queue
   * notifications arrive through one ioeventfd per queue (off the vCPU's exit path), its interrupts leave
   * through an irqfd. The kernel learns of it from a `virtio_mmio.device=` command-line argument.
   */
  addVirtioDevice(device: VirtioDevice): AttachedVirtio {
    const index = this.virtio.length;
    const irq = IRQ_BASE + index;
    if (index >= VIRTIO_DEVICES_MAX || irq > IRQ_MAX) throw new Error(`too many virtio devices: at most ${VIRTIO_DEVICES_MAX}`);
    const addr = VIRTIO_MMIO_START + index * VIRTIO_MMIO_SIZE;
    const transport = new VirtioMmioTransport(device, { mem: this.memory, irq: this.interruptLine(irq), log: (m) => this.log(`${device.name}: ${m}`) });
    this.mmio.register(addr, VIRTIO_MMIO_SIZE, transport);
    if (this.irqchip && this.queueNotify === "ioeventfd") {
      device.queueMaxSizes.forEach((_, q) => {
        this.ioEventFds.push(new IoEventFd(this.fd, addr + VIRTIO_MMIO_QUEUE_NOTIFY, q, () => transport.notify(q)));
      });
    }
    const attached = { transport, addr, size: VIRTIO_MMIO_SIZE, irq };
    this.virtio.push(attached);
    return attached;
  }

  /** While Paused: the promise the vCPUs wait on, and what opens it. */
  private pausedGate?: { promise: Promise<void>; open: () => void };

  get state(): VmState {
    return this.lifecycle.state;
  }

  /** Resolves when the VM may run again; undefined while it is not paused. */
  get paused(): Promise<void> | undefined {
    return this.pausedGate?.promise;
  }

  /**
   * Pause every vCPU: each is kicked out of KVM_RUN and waits, with its registers and the guest's memory
   * as they were, until resume(). Devices stay live (a paused guest simply does not run). Pausing a paused
   * VM, or one that is ending, does nothing; pausing one that has not started throws (LifecycleError).
   */
  pause(): void {
    if (this.stopping) return;
    if (this.lifecycle.to("Paused") === "Paused") return;
    let open!: () => void;
    const promise = new Promise<void>((resolve) => (open = resolve));
    this.pausedGate = { promise, open };
    for (const v of this.vcpus) v.thread.kick();
  }

  /** Let paused vCPUs run again. Resuming a VM that is not paused does nothing. */
  resume(): void {
    if (this.lifecycle.state !== "Paused") return;
    this.lifecycle.to("Running");
    this.openGate();
  }

  private openGate(): void {
    const gate = this.pausedGate;
    this.pausedGate = undefined;
    gate?.open();
  }

  /** True once the VM is ending (state Stopped): the vCPU loops leave at their next exit. */
  get stopping(): boolean {
    return this.lifecycle.state === "Stopped";
  }

  /** Start every vCPU. Registers must be set up first. */
  async start(opts: { paused?: boolean } = {}): Promise<void> {
    this.lifecycle.to("Running");
    // Paused from the start (a restored snapshot without resume_vm): the kicks leave immediate_exit set, so
    // each vCPU's first KVM_RUN returns at once and its loop waits at the gate; no guest code runs.
    if (opts.paused) this.pause();
    for (const v of this.vcpus) await v.start();
  }

  /** End the VM: the first call decides how it ended; every vCPU is kicked out of KVM_RUN and stopped. */
  end(exit: VmEnd): void {
    if (this.stopping) return;
    this.lifecycle.to("Stopped");
    this.openGate(); // a paused vCPU must wake to see that it has to stop
    for (const v of this.vcpus) v.thread.kick();
    void Promise.all(this.vcpus.map((v) => v.done)).then(async () => {
      this.serial.flush?.();
      await this.close();
      this.endedResolve(exit);
    });
  }

  /** Stop the VM from outside (API, Ctrl-C): resolves when it has ended. */
  async stop(message = "stopped by the VMM"): Promise<VmEnd> {
    this.end({ reason: "stopped", message });
    return this.exited;
  }

  /**
   * Release KVM fds, eventfds and guest RAM. Called once the vCPUs have stopped. The VM fd goes last and off
   * this thread (VmFd.closeOffThread): its close is where KVM destroys the VM.
   */
  private async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const v of this.vcpus) v.fd.close();
    for (const l of this.irqLines) l.close();
    for (const e of this.ioEventFds) e.close();
    // Reset every virtio device (a 0 written to Status, as a driver would) so that no queue work still
    // scheduled on the event loop touches guest memory after it is unmapped below.
    const zero = new Uint8Array(4);
    for (const a of this.virtio) {
      a.transport.write(VIRTIO_MMIO_STATUS, zero);
      // Then let the device release what it holds on the host (a file, a TAP and its reader, a socket).
      void Promise.resolve(a.transport.device.close?.()).catch((e) => this.log(`${a.transport.name}: close failed: ${(e as Error).message}`));
    }
    this.kvm.close();
    freeGuestMemory(this.memory);
    await this.fd.closeOffThread().catch((e) => this.log(`closing the VM fd failed: ${(e as Error).message}`));
  }
}
