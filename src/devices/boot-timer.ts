// Firecracker's boot-timer device: how a guest says "I have finished booting" so the VMM can time it.
//
// One MMIO page at BOOT_TIMER_START (layout.ts). The guest's init writes the single byte 123 to offset 0
// (Firecracker's test init maps the page through /dev/mem and stores one byte), and kindling records how
// long the boot took: wall-clock time, and the CPU time this process spent, both measured from a start
// point taken before the VM was created. Only the first such write counts. Every other write is ignored,
// and reads return zeroes, so a guest that pokes the page by mistake learns nothing and changes nothing.

import { checkKind, DeviceStateError, type Stateful } from "./state.ts";
import type { BusDevice } from "../bus.ts";

/** The byte that means "boot complete" (Firecracker's MAGIC_VALUE_SIGNAL_GUEST_BOOT_COMPLETE). */
export const BOOT_TIMER_MAGIC = 123;

/** Where the clock started: `bootTimerStart()` at VMM start-up. */
export interface BootTimerStart {
  /** `performance.now()`, in milliseconds. */
  wallMs: number;
  /** `process.cpuUsage()`, in microseconds. */
  cpu: { user: number; system: number };
}

export interface BootCompleteInfo {
  /** Wall-clock time from the start point to the guest's write, in milliseconds. */
  wallMs: number;
  /** CPU time this process spent in user mode since the start point, in microseconds (vCPU threads included). */
  cpuUserUs: number;
  /** CPU time this process spent in the kernel since the start point, in microseconds (KVM_RUN counts here). */
  cpuSystemUs: number;
}

/** The clocks the device reads; tests pass fixed ones. */
export interface BootTimerClock {
  now(): number;
  cpuUsage(): { user: number; system: number };
}

const processClock: BootTimerClock = {
  now: () => performance.now(),
  cpuUsage: () => process.cpuUsage(),
};

/** Take the start point: call this as early as possible, before the VM is created. */
export function bootTimerStart(clock: BootTimerClock = processClock): BootTimerStart {
  return { wallMs: clock.now(), cpu: clock.cpuUsage() };
}

/** Whether the guest has signalled, and the measurement it took then. */
export type BootTimerState = {
  kind: "boot-timer";
  bootComplete: BootCompleteInfo | null;
};

export class BootTimer implements BusDevice, Stateful<BootTimerState> {
  readonly name = "boot-timer";
  private info: BootCompleteInfo | undefined;

  constructor(
    private readonly start: BootTimerStart,
    private readonly onBootComplete: (info: BootCompleteInfo) => void,
    private readonly clock: BootTimerClock = processClock,
  ) {}

  /** The boot-complete measurement, once the guest has signalled it. */
  get bootComplete(): BootCompleteInfo | undefined {
    return this.info;
  }

  describe(): BootTimerState {
    return { kind: "boot-timer", bootComplete: this.info ? { ...this.info } : null };
  }

  /** A restored timer that had fired does not fire again (only the first signal counts). */
  restore(s: BootTimerState): void {
    checkKind(this.name, s, "boot-timer");
    const b = s.bootComplete;
    if (b === null) {
      this.info = undefined;
      return;
    }
    const num = (f: keyof BootCompleteInfo) => {
      if (typeof b?.[f] !== "number" || !Number.isFinite(b[f])) throw new DeviceStateError(this.name, `bootComplete.${f}: not a number`);
      return b[f];
    };
    this.info = { wallMs: num("wallMs"), cpuUserUs: num("cpuUserUs"), cpuSystemUs: num("cpuSystemUs") };
  }

  read(_offset: number, data: Uint8Array): void {
    data.fill(0);
  }

  write(offset: number, data: Uint8Array): void {
    if (offset !== 0 || data.length !== 1 || data[0] !== BOOT_TIMER_MAGIC) return;
    if (this.info) return; // only the first signal counts
    const cpu = this.clock.cpuUsage();
    this.info = {
      wallMs: this.clock.now() - this.start.wallMs,
      cpuUserUs: cpu.user - this.start.cpu.user,
      cpuSystemUs: cpu.system - this.start.cpu.system,
    };
    this.onBootComplete(this.info);
  }

  registerName(offset: number, isWrite: boolean): string | undefined {
    return offset === 0 && isWrite ? "BOOT_COMPLETE" : undefined;
  }
}
