// The boot-timer device, driven only through BusDevice read/write.

import { expect, test } from "bun:test";
import { BOOT_TIMER_MAGIC, BootTimer, bootTimerStart, type BootCompleteInfo } from "../src/devices/boot-timer.ts";

function setup() {
  // A fake clock: 1000 ms and 5000/2000 us of CPU at the start, 1250 ms and 9000/2500 us when the guest writes.
  let wall = 1000;
  let cpu = { user: 5000, system: 2000 };
  const clock = { now: () => wall, cpuUsage: () => cpu };
  const start = bootTimerStart(clock);
  wall = 1250;
  cpu = { user: 9000, system: 2500 };
  const calls: BootCompleteInfo[] = [];
  const timer = new BootTimer(start, (info) => calls.push(info), clock);
  return { timer, calls };
}

test("the magic byte 123 at offset 0 signals boot complete once, with times since the start", () => {
  const { timer, calls } = setup();
  expect(BOOT_TIMER_MAGIC).toBe(123);
  timer.write(0, Uint8Array.of(BOOT_TIMER_MAGIC));
  expect(calls).toEqual([{ wallMs: 250, cpuUserUs: 4000, cpuSystemUs: 500 }]);
  expect(timer.bootComplete).toEqual(calls[0]);
  timer.write(0, Uint8Array.of(BOOT_TIMER_MAGIC));
  expect(calls.length).toBe(1);
});

test("other values, offsets and sizes do not signal", () => {
  const { timer, calls } = setup();
  timer.write(0, Uint8Array.of(122));
  timer.write(0, Uint8Array.of(0));
  timer.write(1, Uint8Array.of(BOOT_TIMER_MAGIC));
  timer.write(0, Uint8Array.of(BOOT_TIMER_MAGIC, 0)); // a 2-byte write
  timer.write(0, Uint8Array.of(BOOT_TIMER_MAGIC, 0, 0, 0)); // a 4-byte write
  expect(calls).toEqual([]);
  expect(timer.bootComplete).toBeUndefined();
});

test("reads return zeroes", () => {
  const { timer } = setup();
  const data = new Uint8Array(4).fill(0xee);
  timer.read(0, data);
  expect([...data]).toEqual([0, 0, 0, 0]);
});

test("the default clock measures real elapsed time", () => {
  const start = bootTimerStart();
  let info: BootCompleteInfo | undefined;
  const timer = new BootTimer(start, (i) => (info = i));
  timer.write(0, Uint8Array.of(BOOT_TIMER_MAGIC));
  expect(info).toBeDefined();
  expect(info!.wallMs).toBeGreaterThanOrEqual(0);
  expect(info!.cpuUserUs).toBeGreaterThanOrEqual(0);
  expect(info!.cpuSystemUs).toBeGreaterThanOrEqual(0);
});
