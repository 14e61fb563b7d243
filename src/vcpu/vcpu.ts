// One vCPU as the VMM sees it: its fd, its worker thread, and the loop that handles its exits.
//
// The loop waits for the worker to report an exit, then does what the exit asks:
//   KVM_EXIT_IO    a port access (in/out) -> the port-IO bus
//   KVM_EXIT_MMIO  a load/store to an address with no RAM -> the MMIO bus
//   KVM_EXIT_DEBUG a hardware breakpoint of the syscall assist (emulating hosts only) -> syscall-assist.ts
//   KVM_EXIT_HLT   the guest halted with no in-kernel irqchip to wait for interrupts -> the VM ends
//   KVM_EXIT_SHUTDOWN, _SYSTEM_EVENT, _INTERNAL_ERROR, _FAIL_ENTRY -> the VM ends, reported with registers
// and lets the worker enter the guest again (api.rst 5, "struct kvm_run"). exit.ts reads the exit out of
// kvm_run, for this loop and for the exit trace alike; thread.ts and worker.ts are the two sides of the
// vCPU thread, protocol.ts what they share.

import { ERRNO, errnoName, kickSignal } from "../kvm/libc.ts";

const EAGAIN = ERRNO.EAGAIN!;
import { KVM_EXIT, KVM_EXIT_NAME, KVM_INTERNAL_ERROR, KVM_SYSTEM_EVENT, kvm_run } from "../kvm/uapi.ts";
import { decodeExit, OFF, type DecodedExit } from "./exit.ts";
import { EINTR, VcpuThread } from "./thread.ts";
import type { VcpuFd } from "../kvm/vcpu-fd.ts";
import type { Bus } from "../bus.ts";
import type { GuestMemory } from "../memory.ts";
import { emulationAssist } from "../arch/x86_64/emulation-assist.ts";
import { SyscallAssist } from "../arch/x86_64/syscall-assist.ts";
import type { VmEnd } from "../lifecycle.ts";

export type { VmEnd } from "../lifecycle.ts";


/** One exit, as the exit trace records it (see --trace). Only built when a tracer is set. */
export interface ExitRecord {
  /** Milliseconds since the tracer was attached (performance.now() based). */
  t: number;
  vcpu: number;
  reason: string;
  /** Port (PIO) or guest-physical address (MMIO). */
  addr?: number;
  size?: number;
  /** `rep ins`/`rep outs`: how many accesses of `size` bytes this exit carried (absent when 1). */
  count?: number;
  dir?: "in" | "out" | "read" | "write";
  /** The bytes read or written, little-endian, as a number (up to 8 bytes; `rep` string I/O: the first). */
  data?: number | bigint;
  device?: string;
  register?: string;
  /** Time spent handling the exit in the VMM, microseconds. */
  handleUs: number;
}

export type ExitTracer = (record: ExitRecord) => void;

export interface VcpuHost {
  readonly pio: Bus;
  readonly mmio: Bus;
  readonly memory: GuestMemory;
  readonly stopping: boolean;
  /** Resolves when the VM may run; undefined while it is not paused. */
  readonly paused: Promise<void> | undefined;
  end(exit: VmEnd): void;
  log(line: string): void;
}


export class Vcpu {
  readonly thread: VcpuThread;
  /** Exits handled on the main thread, by KVM_EXIT_* number. */
  private readonly handledCounts = new Map<number, number>();
  private tracerFn?: ExitTracer;
  tracerEpoch = 0;
  /** Instructions the emulation assist completed, by description kind (see emulation-assist.ts). */
  readonly assists = new Map<string, number>();
  /** Completes CPL3 system calls on hosts that leave them at LSTAR (see syscall-assist.ts); off unless enabled. */
  syscallAssist?: SyscallAssist;
  private readonly bytes: Uint8Array;
  private readonly dv: DataView;
  private loopDone?: Promise<void>;
  /** True while this vCPU waits out a pause, out of KVM_RUN with no exit pending: its state can be read. */
  parked = false;

  constructor(
    readonly fd: VcpuFd,
    private readonly host: VcpuHost,
  ) {
    this.thread = new VcpuThread(fd);
    // Only the kick may interrupt KVM_RUN. Other signals (JavaScriptCore stops threads with signals for its
    // garbage collector) wait until the next exit: on the PVM host, a signal that interrupts KVM_RUN while
    // the guest runs user code breaks that guest process's thread-local storage (docs/syscall-assist.md).
    fd.setRunSignalMask([kickSignal()]);
    this.bytes = new Uint8Array(fd.run.buffer);
    this.dv = new DataView(fd.run.buffer);
  }

  get id(): number {
    return this.fd.id;
  }

  /** Exits handled, by KVM_EXIT_* number: on the main thread and on the vCPU's own thread (local.ts). */
  get exitCounts(): Map<number, number> {
    const all = new Map(this.handledCounts);
    for (const [reason, n] of this.thread.localExitCounts()) if (n > 0) all.set(reason, (all.get(reason) ?? 0) + n);
    return all;
  }

  /**
   * Set to receive one record per exit (the exit trace). Unset, the exit path does no extra work. While one
   * is set, the vCPU thread hands every exit to the main thread, so the trace sees each one.
   */
  get tracer(): ExitTracer | undefined {
    return this.tracerFn;
  }

  set tracer(t: ExitTracer | undefined) {
    this.tracerFn = t;
    this.thread.serveLocally(t === undefined);
  }

  /** Turn the syscall assist on. Only for hosts that emulate guest kernel code: see syscall-assist.ts. */
  enableSyscallAssist(): void {
    this.syscallAssist ??= new SyscallAssist(this.fd, this.host.memory, (l) => this.host.log(`vCPU ${this.id}: ${l}`));
  }

  /** Start the worker and the exit loop. */
  async start(): Promise<void> {
    if (this.syscallAssist) {
      this.syscallAssist.refreshIfDue();
    }
    await this.thread.start({
      pio: this.host.pio.vcpuThreadRanges(),
      mmio: this.host.mmio.vcpuThreadRanges(),
    });
    this.loopDone = this.loop();
  }

  /** Resolves once the worker has stopped (a worker that never started is terminated). */
  get done(): Promise<void> {
    if (!this.loopDone) {
      this.thread.terminate();
      return Promise.resolve();
    }
    return this.loopDone;
  }

  private async loop(): Promise<void> {
    try {
      for (;;) {
        const r = await this.thread.nextExit();
        if (this.host.stopping) break;
        if (r === -EINTR || r === -EAGAIN) {
          // EINTR: a kick (pause) or a signal that was not ours. EAGAIN: a secondary vCPU left its wait for
          // INIT/SIPI (api.rst 4.10, KVM_RUN). Either way the guest goes on, once the VM is not paused.
          this.thread.clearKick();
          if (this.host.paused) {
            this.parked = true;
            await this.host.paused;
            this.parked = false;
          }
          if (this.host.stopping) break;
          this.thread.resume();
          continue;
        }
        if (r < 0) {
          this.host.end({ reason: "error", vcpu: this.id, message: `KVM_RUN failed: ${errnoName(-r)}`, registers: this.dumpRegisters() });
          break;
        }
        // Port, MMIO and debug exits stop a Linux guest in kernel code: a good moment to look at its IDT
        // (syscall-assist.ts). A debug exit is the assist's own and wants that look first; for the others it
        // comes after the access is handled, so the device (a restored guest's first port write) does not
        // wait for it. Either way the vCPU resumes only after it.
        const debugExit = this.syscallAssist !== undefined && this.dv.getUint32(OFF.exit_reason, true) === KVM_EXIT.DEBUG;
        if (debugExit) this.syscallAssist!.refreshIfDue();
        const ended = this.tracer ? this.handleTracedExit(this.tracer) : this.handleExit();
        if (ended) this.host.end(ended);
        if (this.host.stopping) break;
        if (!debugExit) this.syscallAssist?.refreshIfDue();
        this.thread.resume();
      }
    } catch (e) {
      this.host.end({ reason: "error", vcpu: this.id, message: `vCPU ${this.id}: ${(e as Error).message}`, registers: this.safeDump() });
    }
    await this.thread.stop();
  }

  /** Handle the exit described in kvm_run; returns how the VM ended if this exit ends it. */
  handleExit(exit: DecodedExit = decodeExit(this.bytes, this.dv)): VmEnd | undefined {
    const reason = exit.reason;
    this.handledCounts.set(reason, (this.handledCounts.get(reason) ?? 0) + 1);
    switch (reason) {
      case KVM_EXIT.IO:
      case KVM_EXIT.MMIO: {
        const { bus, addr, size, count, write, dataOffset } = exit.access!;
        if (dataOffset + count * size > this.bytes.byteLength) {
          return { reason: "error", vcpu: this.id, message: `${exit.name} data (offset ${dataOffset}, ${count} x ${size} bytes) lies outside kvm_run` };
        }
        const target = bus === "pio" ? this.host.pio : this.host.mmio;
        // `rep outs`/`rep ins` report `count` accesses back to back in the data area.
        for (let i = 0; i < count; i++) {
          const data = this.bytes.subarray(dataOffset + i * size, dataOffset + (i + 1) * size);
          if (write) target.write(addr, data);
          else target.read(addr, data);
        }
        return undefined;
      }
      case KVM_EXIT.DEBUG: {
        if (!this.syscallAssist) {
          return { reason: "error", vcpu: this.id, message: "unexpected KVM_EXIT_DEBUG: no debug registers were armed", registers: this.dumpRegisters() };
        }
        this.syscallAssist.onDebugExit(this.thread.run);
        return undefined;
      }
      case KVM_EXIT.HLT:
        return { reason: "halt", vcpu: this.id, message: `vCPU ${this.id} halted (KVM_EXIT_HLT)` };
      case KVM_EXIT.SHUTDOWN:
        // A triple fault: an exception while delivering a double fault (SDM vol. 3A 6.15, interrupt 8).
        return { reason: "shutdown", vcpu: this.id, message: `vCPU ${this.id}: KVM_EXIT_SHUTDOWN (triple fault)`, registers: this.dumpRegisters() };
      case KVM_EXIT.SYSTEM_EVENT: {
        const type = this.dv.getUint32(kvm_run.offsetOf("exit.system_event.type"), true);
        if (type === KVM_SYSTEM_EVENT.RESET) return { reason: "reset", vcpu: this.id, message: "guest requested a reset (KVM_SYSTEM_EVENT_RESET)" };
        if (type === KVM_SYSTEM_EVENT.SHUTDOWN) return { reason: "poweroff", vcpu: this.id, message: "guest powered off (KVM_SYSTEM_EVENT_SHUTDOWN)" };
        return { reason: "crash", vcpu: this.id, message: `KVM_EXIT_SYSTEM_EVENT type ${type}`, registers: this.dumpRegisters() };
      }
      case KVM_EXIT.INTERNAL_ERROR: {
        const assist = emulationAssist(this.fd, this.host.memory, this.thread.run);
        if (assist.handled) {
          const kind = assist.description.split(" (")[0]!;
          const n = this.assists.get(kind) ?? 0;
          this.assists.set(kind, n + 1);
          if (n === 0) this.host.log(`emulation assist: ${assist.description}; the host's emulator could not run it (logged once)`);
          return undefined;
        }
        return { reason: "error", vcpu: this.id, message: `${this.describeInternalError()}; ${assist.description}`, registers: this.dumpRegisters() };
      }
      case KVM_EXIT.FAIL_ENTRY: {
        const hw = this.dv.getBigUint64(kvm_run.offsetOf("exit.fail_entry.hardware_entry_failure_reason"), true);
        return { reason: "error", vcpu: this.id, message: `KVM_EXIT_FAIL_ENTRY: hardware_entry_failure_reason 0x${hw.toString(16)} (the vCPU state was refused by the CPU)`, registers: this.dumpRegisters() };
      }
      default:
        return { reason: "error", vcpu: this.id, message: `unexpected exit ${KVM_EXIT_NAME[reason] ?? reason}`, registers: this.dumpRegisters() };
    }
  }

  /** handleExit, plus a trace record describing the exit and how long the VMM took with it. */
  private handleTracedExit(tracer: ExitTracer): VmEnd | undefined {
    const t0 = performance.now();
    const exit = decodeExit(this.bytes, this.dv);
    const rec: ExitRecord = { t: t0 - this.tracerEpoch, vcpu: this.id, reason: exit.name, handleUs: 0 };
    const a = exit.access;
    if (a) {
      rec.addr = a.addr;
      rec.size = a.size;
      rec.dir = a.bus === "pio" ? (a.write ? "out" : "in") : a.write ? "write" : "read";
      if (a.count > 1) rec.count = a.count;
    }
    const ended = this.handleExit(exit);
    rec.handleUs = (performance.now() - t0) * 1000;
    if (a && a.size) {
      let v = 0n;
      for (let i = a.size - 1; i >= 0; i--) v = (v << 8n) | BigInt(this.bytes[a.dataOffset + i] ?? 0);
      rec.data = v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
      const hit = (a.bus === "pio" ? this.host.pio : this.host.mmio).find(a.addr);
      if (hit) {
        rec.device = hit.device.name;
        rec.register = hit.device.registerName?.(hit.offset, a.write);
      }
    }
    tracer(rec);
    return ended;
  }

  /** KVM_EXIT_INTERNAL_ERROR's suberror, and for emulation failures the instruction bytes. */
  describeInternalError(): string {
    const run = this.thread.run;
    const sub = run.get("exit.internal.suberror");
    const name = Object.entries(KVM_INTERNAL_ERROR).find(([, v]) => v === sub)?.[0] ?? String(sub);
    let text = `KVM_EXIT_INTERNAL_ERROR: KVM_INTERNAL_ERROR_${name}`;
    if (sub === KVM_INTERNAL_ERROR.EMULATION) {
      const n = Math.min(run.get("exit.emulation_failure.insn_size"), 15);
      if (n > 0) {
        const bytes = [...run.slice("exit.emulation_failure.insn_bytes", n)].map((b) => b.toString(16).padStart(2, "0"));
        text += ` (instruction bytes: ${bytes.join(" ")})`;
      } else {
        text += " (the instruction could not be emulated)";
      }
    }
    return text;
  }

  /** General, segment and control registers, one line each group, for error reports. */
  dumpRegisters(): string {
    const r = this.fd.getRegs();
    const s = this.fd.getSregs();
    const h = (v: bigint) => `0x${v.toString(16)}`;
    const gp = ["rip", "rsp", "rbp", "rflags", "rax", "rbx", "rcx", "rdx", "rsi", "rdi"].map((k) => `${k}=${h(r.getBig(k))}`);
    const cr = ["cr0", "cr2", "cr3", "cr4", "efer"].map((k) => `${k}=${h(s.getBig(k))}`);
    const seg = ["cs", "ss", "ds", "tr"].map((k) => `${k}=${h(s.getBig(`${k}.selector`))}(dpl ${s.get(`${k}.dpl`)}${s.get(`${k}.l`) ? ", 64-bit" : ""})`);
    return `${gp.join(" ")}\n${cr.join(" ")}\n${seg.join(" ")}`;
  }

  private safeDump(): string | undefined {
    try {
      return this.dumpRegisters();
    } catch {
      return undefined;
    }
  }
}
