// virtio-rng: the entropy device fills device-writable buffers, no more than a bounded amount per request,
// and never touches device-readable ones.

import { expect, test } from "bun:test";
import { VIRTIO_RNG_MAX_BYTES_PER_REQUEST, VirtioRng } from "../src/devices/virtio/rng.ts";
import { TRANSPORT_FEATURES } from "../src/devices/virtio/mmio.ts";
import * as V from "../src/devices/virtio/uapi.ts";
import { virtioSetup } from "./support/virtio-driver.ts";

function setup() {
  const rng = new VirtioRng();
  const s = virtioSetup(rng);
  return { rng, ...s };
}

test("identifies as an entropy device with no features of its own and no config space", () => {
  const { driver, dev } = setup();
  expect(driver.read32(V.VIRTIO_MMIO_DEVICE_ID)).toBe(V.VIRTIO_ID_RNG);
  expect(dev.offeredFeatures).toBe(TRANSPORT_FEATURES);
  expect([...driver.readConfig(0, 4)]).toEqual([0, 0, 0, 0]);
});

test("fills writable buffers with random bytes and says how many", () => {
  const { driver, mem, alloc, irq, rng } = setup();
  const [q] = driver.init();
  const a = alloc.alloc(64);
  const b = alloc.alloc(200);
  q!.add([{ addr: a, len: 64, write: true }, { addr: b, len: 200, write: true }]);
  q!.kick();
  expect(q!.takeUsed()).toEqual([{ id: 0, len: 264 }]);
  expect(irq.count).toBe(1);
  const first = [...mem.read(a, 64), ...mem.read(b, 200)];
  // 264 random bytes are all zero with probability 2^-2112.
  expect(first.some((x) => x !== 0)).toBe(true);
  q!.add([{ addr: a, len: 64, write: true }]);
  q!.kick();
  expect(q!.takeUsed()).toEqual([{ id: 2, len: 64 }]);
  expect([...mem.read(a, 64)]).not.toEqual(first.slice(0, 64));
  expect(rng.bytesServed).toBe(328);
});

test("device-readable buffers and bytes past the buffers stay untouched", () => {
  const { driver, mem, alloc } = setup();
  const [q] = driver.init();
  const readable = alloc.alloc(32);
  const region = alloc.alloc(96);
  mem.fill(readable, 32, 0x5a);
  mem.fill(region, 96, 0xcc);
  // Writable buffer in the middle of the region: 32 guard bytes each side.
  q!.add([{ addr: readable, len: 32 }, { addr: region + 32, len: 32, write: true }]);
  q!.kick();
  expect(q!.takeUsed()).toEqual([{ id: 0, len: 32 }]);
  expect(mem.read(readable, 32).every((x) => x === 0x5a)).toBe(true);
  expect(mem.read(region, 32).every((x) => x === 0xcc)).toBe(true);
  expect(mem.read(region + 64, 32).every((x) => x === 0xcc)).toBe(true);
});

test("a request gets at most VIRTIO_RNG_MAX_BYTES_PER_REQUEST bytes", () => {
  const { driver, mem, alloc } = setup();
  const [q] = driver.init();
  const size = 3 * VIRTIO_RNG_MAX_BYTES_PER_REQUEST;
  const buf = alloc.alloc(size);
  q!.add([{ addr: buf, len: size, write: true }]);
  q!.kick();
  expect(q!.takeUsed()).toEqual([{ id: 0, len: VIRTIO_RNG_MAX_BYTES_PER_REQUEST }]);
  const got = mem.read(buf, VIRTIO_RNG_MAX_BYTES_PER_REQUEST);
  // All 256 byte values appear in 64 KiB of random data (missing one has probability ~2^-360).
  expect(new Set(got).size).toBe(256);
  expect(mem.read(buf + VIRTIO_RNG_MAX_BYTES_PER_REQUEST, size - VIRTIO_RNG_MAX_BYTES_PER_REQUEST).every((x) => x === 0)).toBe(true);
});

test("a chain with no writable buffer comes back with length 0", () => {
  const { driver, alloc } = setup();
  const [q] = driver.init();
  q!.add([{ addr: alloc.alloc(8), len: 8 }]);
  q!.kick();
  expect(q!.takeUsed()).toEqual([{ id: 0, len: 0 }]);
});

test("DRIVER_OK without the request queue: the device needs a reset", () => {
  const { driver, errors } = setup();
  driver.reset();
  driver.addStatus(V.VIRTIO_CONFIG_S_ACKNOWLEDGE);
  driver.addStatus(V.VIRTIO_CONFIG_S_DRIVER);
  driver.writeDriverFeatures(driver.readDeviceFeatures());
  driver.addStatus(V.VIRTIO_CONFIG_S_FEATURES_OK);
  driver.addStatus(V.VIRTIO_CONFIG_S_DRIVER_OK);
  expect(driver.status() & V.VIRTIO_CONFIG_S_NEEDS_RESET).toBe(V.VIRTIO_CONFIG_S_NEEDS_RESET);
  expect(errors[0]).toContain("requestq");
});
