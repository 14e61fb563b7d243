// The PC devices every kindling VM has on its port-IO bus, attached in one place: the 16550 UART at COM1
// (the serial console), the i8042 (its reset line: Linux's `reboot=k` ends the VM through it; its keyboard
// types SendCtrlAltDel, on IRQ 1), the CMOS
// RTC (the wall clock Linux reads at boot) and a sink for port 0x80 (io_delay writes). Vm (src/vm.ts) and
// trace replay (src/trace/replay.ts) both call attachLegacyDevices, so the replay set is the VM's set.
//
// Firecracker attaches the same set (its legacy device manager: serial, i8042, RTC on aarch64) before the
// virtio devices. The boot timer is not here: it is an MMIO device of the microVM recipe (src/boot/).

import type { Bus, InterruptLine } from "../bus.ts";
import { COM1_PORT, POST_CODE_PORT } from "../arch/x86_64/layout.ts";
import { I8042 } from "./i8042.ts";
import { CmosRtc } from "./rtc.ts";
import { Serial } from "./serial.ts";

export interface LegacyDevices {
  serial: Serial;
  i8042: I8042;
  rtc: CmosRtc;
}

export interface LegacyOptions {
  /** COM1's interrupt line (IRQ 4: COM1_IRQ). */
  serialIrq: InterruptLine;
  /** Where the guest's console output goes. */
  consoleOutput?: (bytes: Uint8Array) => void;
  /** The i8042 keyboard's interrupt line (IRQ 1: I8042_KEYBOARD_IRQ); without it keys can only be polled. */
  keyboardIrq?: InterruptLine;
  /** The guest pulsed the i8042's reset line (called once). */
  onReset?: () => void;
  /** Build the UART differently (trace-replay tests pass a modified model). */
  serial?: (irq: InterruptLine) => Serial;
  /** The RTC's clock (default: the host's). */
  now?: () => Date;
}

/** Create the legacy devices and register them on `pio`. */
export function attachLegacyDevices(pio: Bus, opts: LegacyOptions): LegacyDevices {
  const serial = opts.serial?.(opts.serialIrq) ?? new Serial(opts.consoleOutput ?? (() => {}), opts.serialIrq);
  pio.register(COM1_PORT, 8, serial);
  const i8042 = new I8042(opts.onReset ?? (() => {}), opts.keyboardIrq);
  for (const { port, device } of i8042.ports()) pio.register(port, 1, device);
  const rtc = new CmosRtc(opts.now);
  for (const { port, device } of rtc.ports()) pio.register(port, 1, device);
  // Port 0x80 is written for short delays (Linux's io_delay); it needs no device, only no log noise.
  // No state: the vCPU's thread completes its accesses itself (bus.ts, VcpuThreadModel).
  pio.register(POST_CODE_PORT, 1, { name: "post-code", read: (_o, d) => d.fill(0xff), write: () => {}, onVcpuThread: { kind: "sink", fill: 0xff } });
  return { serial, i8042, rtc };
}
