// The CMOS RTC, driven through its two ports as the vCPU exit path drives it.

import { expect, test } from "bun:test";
import { CmosRtc, RTC_REG_A, RTC_REG_B, RTC_REG_D, RTC_24H, RTC_VRT } from "../src/devices/rtc.ts";

const fixed = new Date(Date.UTC(2026, 10, 22, 13, 45, 9)); // Sunday 22 November 2026, 13:45:09 UTC

function reader(rtc: CmosRtc) {
  return (reg: number) => {
    rtc.indexPort.write(0, new Uint8Array([reg | 0x80])); // bit 7 (NMI mask) is not part of the index
    const d = new Uint8Array(1);
    rtc.dataPort.read(0, d);
    return d[0]!;
  };
}

test("reads the host's UTC time in BCD, 24-hour, with update-in-progress clear", () => {
  const read = reader(new CmosRtc(() => fixed));
  expect([0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09, 0x32].map(read)).toEqual([0x09, 0x45, 0x13, 0x01, 0x22, 0x11, 0x26, 0x20]);
  expect(read(RTC_REG_A) & 0x80).toBe(0);
  expect(read(RTC_REG_B)).toBe(RTC_24H);
  expect(read(RTC_REG_D)).toBe(RTC_VRT);
});

test("CMOS RAM keeps what the guest writes; the clock and UIP cannot be set", () => {
  const rtc = new CmosRtc(() => fixed);
  const read = reader(rtc);
  const write = (reg: number, v: number) => {
    rtc.indexPort.write(0, new Uint8Array([reg]));
    rtc.dataPort.write(0, new Uint8Array([v]));
  };
  write(0x40, 0xab);
  write(0x00, 0x33);
  write(RTC_REG_A, 0xa6);
  expect(read(0x40)).toBe(0xab);
  expect(read(0x00)).toBe(0x09);
  expect(read(RTC_REG_A)).toBe(0x26);
});
