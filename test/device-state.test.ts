// Every device describes its state as plain data and is rebuilt from it (src/devices/state.ts): for each,
// drive it into a state worth keeping (registers written, bytes queued, queues running with work done),
// describe it, restore a fresh instance built with the same wiring, and describe that: identical. The
// description survives JSON as it is, and a description of the wrong kind or with a bad field is refused
// by name.

import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BootTimer } from "../src/devices/boot-timer.ts";
import { I8042 } from "../src/devices/i8042.ts";
import { CmosRtc } from "../src/devices/rtc.ts";
import { Serial } from "../src/devices/serial.ts";
import { DeviceStateError, type Stateful } from "../src/devices/state.ts";
import { FileBlockBackend, VirtioBlock } from "../src/devices/virtio/block.ts";
import type { VirtioDevice } from "../src/devices/virtio/device.ts";
import { VirtioMmioTransport } from "../src/devices/virtio/mmio.ts";
import { NET_HDR_SIZE, VirtioNet, type NetBackend } from "../src/devices/virtio/net.ts";
import { VirtioRng } from "../src/devices/virtio/rng.ts";
import * as V from "../src/devices/virtio/uapi.ts";
import { VirtioVsock } from "../src/devices/virtio/vsock.ts";
import { CountingIrq, virtioSetup } from "./support/virtio-driver.ts";

const dir = mkdtempSync(join(tmpdir(), "kindling-state-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const noIrq = { gsi: 4, trigger: () => {} };

/** describe -> restore on `fresh` -> describe is identical, and the description is plain JSON. */
function roundTrip<S>(device: Stateful<S>, fresh: Stateful<S>): S {
  const state = device.describe();
  expect(JSON.parse(JSON.stringify(state))).toEqual(state);
  fresh.restore(JSON.parse(JSON.stringify(state)));
  expect(fresh.describe()).toEqual(state);
  return state;
}

describe("legacy devices", () => {
  test("16550 serial: registers, received bytes not yet read, output not yet flushed, counters", () => {
    const out: Uint8Array[] = [];
    const uart = new Serial((b) => out.push(b), noIrq);
    uart.write(3, Uint8Array.of(0x83)); // LCR: DLAB, 8 bits
    uart.write(0, Uint8Array.of(0x01)); // DLL
    uart.write(3, Uint8Array.of(0x03)); // LCR
    uart.write(1, Uint8Array.of(0x05)); // IER
    uart.write(7, Uint8Array.of(0x42)); // SCR
    uart.queueInput(new TextEncoder().encode("hello"));
    uart.read(0, new Uint8Array(1)); // consume "h"
    uart.write(0, Uint8Array.of(0x41)); // THR: "A", batched
    const state = roundTrip(uart, new Serial(() => {}, noIrq));
    expect(state).toMatchObject({ lcr: 3, ier: 5, scr: 0x42, dll: 1, rx: Buffer.from("ello").toString("base64") });
  });

  test("i8042: command byte, output buffer, a command awaiting its parameter, the keyboard's queue", () => {
    const kbd = new I8042(() => {});
    kbd.commandPort.write(0, Uint8Array.of(0x20)); // read CTR: a byte waits at 0x60
    kbd.commandPort.write(0, Uint8Array.of(0x60)); // write CTR: awaits its parameter
    kbd.sendCtrlAltDel();
    const state = roundTrip(kbd, new I8042(() => {}));
    expect(state.pendingCommand).toBe(0x60);
    expect(state.controllerByte).not.toBeNull();
    expect(state.keyboardQueue).toEqual([0x1d, 0x38, 0xe0, 0x53, 0xe0, 0xd3, 0xb8, 0x9d]);
  });

  test("CMOS RTC: the selected register and CMOS RAM", () => {
    const rtc = new CmosRtc();
    rtc.write(0x40, 0x99);
    rtc.indexPort.write(0, Uint8Array.of(0x40));
    expect(roundTrip(rtc, new CmosRtc()).index).toBe(0x40);
  });

  test("boot timer: fired once, with its measurement; a restored timer does not fire again", () => {
    const clock = { now: () => 1000, cpuUsage: () => ({ user: 5, system: 6 }) };
    const start = { wallMs: 0, cpu: { user: 0, system: 0 } };
    const timer = new BootTimer(start, () => {}, clock);
    timer.write(0, Uint8Array.of(123));
    let fired = 0;
    const fresh = new BootTimer(start, () => fired++, clock);
    expect(roundTrip(timer, fresh).bootComplete).toEqual({ wallMs: 1000, cpuUserUs: 5, cpuSystemUs: 6 });
    fresh.write(0, Uint8Array.of(123));
    expect(fired).toBe(0);
  });
});

/** A transport with `make()`'s device brought up by the test driver; `work` runs requests through it. */
function virtioRoundTrip(make: () => VirtioDevice, work: (s: ReturnType<typeof virtioSetup>) => void) {
  const s = virtioSetup(make());
  s.driver.init();
  work(s);
  const fresh = new VirtioMmioTransport(make(), { mem: s.mem, irq: new CountingIrq() });
  const state = roundTrip(s.dev, fresh);
  expect(state.activated).toBe(true);
  return { state, fresh, s };
}

describe("virtio devices on the mmio transport", () => {
  test("transport alone (before DRIVER_OK): registers and queue setup", () => {
    const s = virtioSetup(new VirtioRng());
    s.driver.reset();
    s.driver.addStatus(V.VIRTIO_CONFIG_S_ACKNOWLEDGE);
    s.driver.addStatus(V.VIRTIO_CONFIG_S_DRIVER);
    s.driver.writeDriverFeatures(1n << 32n);
    const state = roundTrip(s.dev, new VirtioMmioTransport(new VirtioRng(), { mem: s.mem, irq: new CountingIrq() }));
    expect(state).toMatchObject({ activated: false, driverFeatures: "0x100000000", queues: [{ ring: null }] });
  });

  test("virtio-rng: ring positions after requests, bytes served", () => {
    const { state, fresh, s } = virtioRoundTrip(() => new VirtioRng(), (s) => {
      const q = s.driver.queues[0]!;
      for (let i = 0; i < 3; i++) {
        q.add([{ addr: s.alloc.alloc(16), len: 16, write: true }]);
        q.kick();
      }
    });
    expect(state.queues[0]!.ring).toMatchObject({ nextAvail: 3, nextUsed: 3 });
    expect(state.device).toEqual({ kind: "virtio-rng", bytesServed: 48 });
    // The rebuilt transport serves the next request where the old one stopped.
    const q = s.driver.queues[0]!;
    q.add([{ addr: s.alloc.alloc(16), len: 16, write: true }]);
    fresh.notify(0);
    expect(fresh.describe().queues[0]!.ring).toMatchObject({ nextAvail: 4, nextUsed: 4 });
  });

  test("virtio-blk: capacity, id, write-cache mode", () => {
    const path = join(dir, "disk.img");
    writeFileSync(path, new Uint8Array(64 * 512));
    const { state } = virtioRoundTrip(() => new VirtioBlock(new FileBlockBackend(path, true), { id: "rootfs", queueSize: 16 }), () => {});
    expect(state.device).toEqual({ kind: "virtio-blk", capacity: 64, readOnly: true, id: "rootfs", writethrough: false });
    // Another file: the read-only devices above still hold a shared flock on this one.
    const rwPath = join(dir, "disk-rw.img");
    writeFileSync(rwPath, new Uint8Array(64 * 512));
    const rw = new VirtioBlock(new FileBlockBackend(rwPath, false));
    expect(() => rw.restore(state.device)).toThrow("readOnly: true, but the backing file given is not read-only");
  });

  test("virtio-net: config space and frames waiting for receive buffers", () => {
    const backends: MemBackend[] = [];
    const make = () => {
      const b = new MemBackend();
      backends.push(b);
      return new VirtioNet(b, { mac: "06:00:ac:10:00:02", mtu: 1400 });
    };
    const frame = new Uint8Array(NET_HDR_SIZE + 60).fill(7, NET_HDR_SIZE); // a zero header: no offloads
    const { state } = virtioRoundTrip(make, () => backends[0]!.inject(frame));
    expect(state.device.pending).toHaveLength(1);
  });

  test("virtio-vsock: CID, next host port, counters; connections are wiring", () => {
    let n = 0;
    const made: VirtioVsock[] = [];
    const make = () => {
      const v = new VirtioVsock({ guestCid: 42, udsPath: join(dir, `v${n++}.sock`) });
      made.push(v);
      return v;
    };
    const { state } = virtioRoundTrip(make, () => {});
    expect(state.device).toMatchObject({ kind: "virtio-vsock", guestCid: 42, connections: 0, pendingRst: [] });
    for (const v of made) v.close();
  });
});

describe("a bad description is refused by name", () => {
  test("wrong kind, bad fields, a transport that is not fresh", () => {
    const uart = new Serial(() => {}, noIrq);
    const good = uart.describe();
    expect(() => uart.restore({ ...good, kind: "i8042" } as never)).toThrow(DeviceStateError);
    expect(() => uart.restore({ ...good, ier: 300 })).toThrow("8250 state: ier: 300 is not an integer in 0..255");
    expect(() => uart.restore({ ...good, rx: "!!" })).toThrow("rx: not base64");
    const s = virtioSetup(new VirtioRng());
    s.driver.init();
    const state = s.dev.describe();
    expect(() => s.dev.restore(state)).toThrow("needs a fresh transport");
    const fresh = () => new VirtioMmioTransport(new VirtioRng(), { mem: s.mem, irq: new CountingIrq() });
    expect(() => fresh().restore({ ...state, driverFeatures: "lots" })).toThrow('driverFeatures: "lots" is not a 64-bit');
    const farAway = { ...state, queues: state.queues.map((q) => ({ ...q, desc: "0x7fff0000000" })) };
    expect(() => fresh().restore(farAway)).toThrow("the queues do not activate");
  });
});

/** A TAP in memory: frames injected are handed to the device, as the reader thread would. */
class MemBackend implements NetBackend {
  readonly name = "mem0";
  private onFrame?: (frame: Uint8Array) => void;
  write(): void {}
  setOffload(): void {}
  startReading(onFrame: (frame: Uint8Array) => void): void {
    this.onFrame = onFrame;
  }
  releaseFrame(): void {}
  inject(frame: Uint8Array): void {
    this.onFrame!(frame);
  }
  close(): void {}
}
