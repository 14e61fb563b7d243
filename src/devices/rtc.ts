// The CMOS real-time clock (Motorola MC146818, as every PC has one): 128 bytes of CMOS RAM behind an index
// port (0x70) and a data port (0x71), whose first registers hold the time of day.
//
// Linux reads the wall-clock time from it at boot (mach_get_cmos_time, arch/x86/kernel/rtc.c) and first
// waits for the "update in progress" bit of status register A to clear. With no device there, every read
// answers 0xff, UIP looks stuck, and the kernel polls tens of thousands of times before giving up: each
// poll a VM exit. This model answers the host's current UTC time, with UIP always clear.
//
// Register numbers and bits: the MC146818A datasheet, and include/linux/mc146818rtc.h (RTC_SECONDS ...).

import { checkKind, DeviceStateError, fromBase64, int, toBase64, type Stateful } from "./state.ts";
import type { BusDevice } from "../bus.ts";
import { CMOS_DATA_PORT, CMOS_INDEX_PORT } from "../arch/x86_64/layout.ts";

export const RTC_SECONDS = 0x00;
export const RTC_MINUTES = 0x02;
export const RTC_HOURS = 0x04;
export const RTC_DAY_OF_WEEK = 0x06;
export const RTC_DAY_OF_MONTH = 0x07;
export const RTC_MONTH = 0x08;
export const RTC_YEAR = 0x09;
export const RTC_REG_A = 0x0a;
export const RTC_REG_B = 0x0b;
export const RTC_REG_C = 0x0c;
export const RTC_REG_D = 0x0d;
/** The century byte, where ACPI's FADT says it is; 0x32 by convention. */
export const RTC_CENTURY = 0x32;

/** Status A: UIP (bit 7) clear; divider 010 = 32.768 kHz time base, rate 0110 = 1024 Hz (the reset values). */
export const RTC_REG_A_DEFAULT = 0x26;
/** Status B: RTC_24H (bit 1); RTC_DM_BINARY (bit 2) clear, so values are BCD, as PC firmware leaves them. */
export const RTC_24H = 0x02;
/** Status D: RTC_VRT (bit 7), "valid RAM and time": the battery is fine. */
export const RTC_VRT = 0x80;

const CMOS_SIZE = 128;
/** Bit 7 of the index written to port 0x70 masks NMI on a PC; the register number is bits 0-6. */
const INDEX_MASK = 0x7f;

const bcd = (n: number) => ((Math.floor(n / 10) % 10) << 4) | n % 10;

/** The selected register and CMOS RAM. The time registers are not state: they read the host's clock. */
export type CmosRtcState = {
  kind: "rtc";
  index: number;
  /** The 128 bytes of CMOS RAM (base64). */
  ram: string;
};

export class CmosRtc implements Stateful<CmosRtcState> {
  readonly name = "rtc";
  private index = 0;
  private readonly ram = new Uint8Array(CMOS_SIZE);
  /** The index port, 0x70. */
  readonly indexPort: BusDevice;
  /** The data port, 0x71. */
  readonly dataPort: BusDevice;

  constructor(private readonly now: () => Date = () => new Date()) {
    this.ram[RTC_REG_A] = RTC_REG_A_DEFAULT;
    this.ram[RTC_REG_B] = RTC_24H;
    this.ram[RTC_REG_D] = RTC_VRT;
    this.indexPort = {
      name: this.name,
      read: (_o, data) => data.fill(0xff), // the index register is write-only
      write: (_o, data) => void (this.index = (data[0] ?? 0) & INDEX_MASK),
      registerName: () => "INDEX",
    };
    this.dataPort = {
      name: this.name,
      read: (_o, data) => data.fill(this.read(this.index)),
      write: (_o, data) => this.write(this.index, data[0] ?? 0),
      registerName: () => `CMOS[0x${this.index.toString(16)}]`,
    };
  }

  describe(): CmosRtcState {
    return { kind: "rtc", index: this.index, ram: toBase64(this.ram) };
  }

  restore(s: CmosRtcState): void {
    checkKind(this.name, s, "rtc");
    const index = int(this.name, "index", s.index, 0, INDEX_MASK);
    const ram = fromBase64(this.name, "ram", s.ram, CMOS_SIZE);
    if (ram.byteLength !== CMOS_SIZE) throw new DeviceStateError(this.name, `ram: ${ram.byteLength} bytes, expected ${CMOS_SIZE}`);
    this.index = index;
    this.ram.set(ram);
  }

  /** The selected register reads the host's clock (its value is the time, not state). */
  get selectsClock(): boolean {
    return this.index <= RTC_YEAR || this.index === RTC_CENTURY;
  }

  read(reg: number): number {
    const t = this.now();
    switch (reg) {
      case RTC_SECONDS: return bcd(t.getUTCSeconds());
      case RTC_MINUTES: return bcd(t.getUTCMinutes());
      case RTC_HOURS: return bcd(t.getUTCHours());
      case RTC_DAY_OF_WEEK: return bcd(t.getUTCDay() + 1); // 1 = Sunday
      case RTC_DAY_OF_MONTH: return bcd(t.getUTCDate());
      case RTC_MONTH: return bcd(t.getUTCMonth() + 1);
      case RTC_YEAR: return bcd(t.getUTCFullYear() % 100);
      case RTC_CENTURY: return bcd(Math.floor(t.getUTCFullYear() / 100));
      case RTC_REG_C: return 0; // no interrupt flags: this model raises no RTC interrupts
      default: return this.ram[reg] ?? 0xff;
    }
  }

  write(reg: number, value: number): void {
    // The time registers, C and D are read-only here (the guest cannot set the host's clock); A and B
    // and the rest of CMOS RAM keep what the guest writes. UIP (bit 7 of A) is read-only and stays clear.
    if (reg <= RTC_YEAR || reg === RTC_REG_C || reg === RTC_REG_D || reg === RTC_CENTURY) return;
    this.ram[reg] = reg === RTC_REG_A ? value & 0x7f : value;
  }

  ports(): { port: number; device: BusDevice }[] {
    return [
      { port: CMOS_INDEX_PORT, device: this.indexPort },
      { port: CMOS_DATA_PORT, device: this.dataPort },
    ];
  }
}
