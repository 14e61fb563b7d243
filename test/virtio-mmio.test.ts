// The virtio-mmio transport: identification, feature negotiation, the status state machine, queue setup,
// notifications, interrupts and configuration generation, driven through the MMIO handlers by the test
// driver in test/support/virtio-driver.ts.

import { describe, expect, test } from "bun:test";
import type { VirtioContext, VirtioDevice } from "../src/devices/virtio/device.ts";
import { readConfigBytes } from "../src/devices/virtio/device.ts";
import { KINDLING_VIRTIO_VENDOR_ID, TRANSPORT_FEATURES } from "../src/devices/virtio/mmio.ts";
import type { Virtqueue } from "../src/devices/virtio/queue.ts";
import * as V from "../src/devices/virtio/uapi.ts";
import { PAGE_SIZE } from "../src/arch/x86_64/layout.ts";
import { TEST_RAM_SIZE, virtioSetup } from "./support/virtio-driver.ts";

const S = {
  ACK: V.VIRTIO_CONFIG_S_ACKNOWLEDGE,
  DRIVER: V.VIRTIO_CONFIG_S_DRIVER,
  FEATURES_OK: V.VIRTIO_CONFIG_S_FEATURES_OK,
  DRIVER_OK: V.VIRTIO_CONFIG_S_DRIVER_OK,
  NEEDS_RESET: V.VIRTIO_CONFIG_S_NEEDS_RESET,
  FAILED: V.VIRTIO_CONFIG_S_FAILED,
};
const RUNNING = S.ACK | S.DRIVER | S.FEATURES_OK | S.DRIVER_OK;
/** A device-type feature bit the echo device offers, and one it does not. */
const ECHO_F_OFFERED = 3;
const ECHO_F_NOT_OFFERED = 7;

/**
 * A device for exercising the transport: two queues; each chain's readable bytes are copied into its
 * writable bytes. An 8-byte config space whose writes are recorded.
 */
class EchoDevice implements VirtioDevice {
  readonly name = "virtio-echo";
  readonly deviceId = 0x7e;
  readonly deviceFeatures = V.bit(ECHO_F_OFFERED);
  readonly queueMaxSizes = [8, 4];
  config = Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8);
  configWrites: [number, number[]][] = [];
  processCalls = 0;
  resets = 0;
  activations = 0;
  /** Chains to use per process() call (to test the round budget). */
  perRound = Infinity;
  throwOnProcess = false;
  ctx: VirtioContext | undefined;

  readConfig(offset: number, data: Uint8Array): void {
    readConfigBytes(this.config, offset, data);
  }
  writeConfig(offset: number, data: Uint8Array): void {
    this.configWrites.push([offset, [...data]]);
  }
  activate(ctx: VirtioContext): void {
    this.activations++;
    this.ctx = ctx;
  }
  reset(): void {
    this.resets++;
    this.ctx = undefined;
  }
  describe() {
    return { kind: "virtio-echo", config: [...this.config] };
  }
  restore(s: Record<string, unknown>): void {
    this.config = Uint8Array.from(s.config as number[]);
  }
  process(queueIndex: number): boolean {
    this.processCalls++;
    if (this.throwOnProcess) throw new Error("backend exploded");
    const q = this.ctx!.queues[queueIndex] as Virtqueue;
    for (let n = 0; n < Math.min(q.size, this.perRound); n++) {
      const chain = q.pop();
      if (!chain) return false;
      const len = Math.min(chain.readableLength, chain.writableLength);
      chain.write(0, chain.read(0, len));
      q.push(chain, len);
    }
    return q.hasAvailable();
  }
}

function setup() {
  const echo = new EchoDevice();
  return { echo, ...virtioSetup(echo) };
}

describe("identification", () => {
  test("magic, version, device and vendor ids, queue sizes", () => {
    const { driver } = setup();
    expect(driver.read32(V.VIRTIO_MMIO_MAGIC_VALUE)).toBe(0x74726976);
    expect(driver.read32(V.VIRTIO_MMIO_VERSION)).toBe(2);
    expect(driver.read32(V.VIRTIO_MMIO_DEVICE_ID)).toBe(0x7e);
    expect(driver.read32(V.VIRTIO_MMIO_VENDOR_ID)).toBe(KINDLING_VIRTIO_VENDOR_ID);
    const maxOf = (i: number) => {
      driver.write32(V.VIRTIO_MMIO_QUEUE_SEL, i);
      return driver.read32(V.VIRTIO_MMIO_QUEUE_NUM_MAX);
    };
    expect([maxOf(0), maxOf(1), maxOf(2), maxOf(0xffffffff)]).toEqual([8, 4, 0, 0]);
  });

  test("register names for traces", () => {
    const { dev } = setup();
    expect(dev.registerName(0x050, true)).toBe("QueueNotify");
    expect(dev.registerName(0x000, false)).toBe("MagicValue");
    expect(dev.registerName(0x090, true)).toBe("QueueDriverLow");
    expect(dev.registerName(0x0a4, true)).toBe("QueueDeviceHigh");
    expect(dev.registerName(0x0fc, false)).toBe("ConfigGeneration");
    expect(dev.registerName(0x104, false)).toBe("Config+0x4");
    expect(dev.registerName(0x0f0, false)).toBeUndefined();
  });

  test("registers take only 32-bit aligned accesses", () => {
    const { dev, logs } = setup();
    const b = new Uint8Array(2).fill(0xaa);
    dev.read(V.VIRTIO_MMIO_MAGIC_VALUE, b);
    expect([...b]).toEqual([0, 0]);
    const w = new Uint8Array(4);
    dev.read(V.VIRTIO_MMIO_MAGIC_VALUE + 2, w);
    expect([...w]).toEqual([0, 0, 0, 0]);
    dev.write(V.VIRTIO_MMIO_STATUS, Uint8Array.of(1));
    expect(dev.status).toBe(0);
    expect(logs.some((l) => l.includes("32-bit aligned"))).toBe(true);
  });

  test("config space is the device's, at any access size", () => {
    const { driver, echo } = setup();
    expect([...driver.readConfig(0, 8)]).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect([...driver.readConfig(6, 4)]).toEqual([7, 8, 0, 0]);
    expect([...driver.readConfig(0x200, 2)]).toEqual([0, 0]);
    driver.dev.write(V.VIRTIO_MMIO_CONFIG + 2, Uint8Array.of(9));
    expect(echo.configWrites).toEqual([[2, [9]]]);
  });
});

describe("feature negotiation", () => {
  test("features are offered in 32-bit pages", () => {
    const { driver } = setup();
    const offered = driver.readDeviceFeatures();
    expect(offered).toBe(V.bit(ECHO_F_OFFERED) | TRANSPORT_FEATURES);
    expect(offered & V.bit(V.VIRTIO_F_VERSION_1)).not.toBe(0n);
    driver.write32(V.VIRTIO_MMIO_DEVICE_FEATURES_SEL, 2);
    expect(driver.read32(V.VIRTIO_MMIO_DEVICE_FEATURES)).toBe(0);
  });

  test("a full bring-up as Linux does it", () => {
    const { driver, dev, echo } = setup();
    driver.init({ accept: (f) => f & ~V.bit(V.VIRTIO_RING_F_EVENT_IDX) });
    expect(driver.status()).toBe(RUNNING);
    expect(dev.driverFeatures).toBe(V.bit(ECHO_F_OFFERED) | V.bit(V.VIRTIO_F_VERSION_1) | V.bit(V.VIRTIO_RING_F_INDIRECT_DESC));
    expect(echo.activations).toBe(1);
    expect(echo.ctx!.features).toBe(dev.driverFeatures);
    expect(echo.ctx!.queues.length).toBe(2);
  });

  test("features the device did not offer: FEATURES_OK stays clear", () => {
    const { driver, echo } = setup();
    expect(() => driver.init({ accept: (f) => f | V.bit(ECHO_F_NOT_OFFERED) })).toThrow("refused the features");
    expect(driver.status()).toBe(S.ACK | S.DRIVER);
    // DRIVER_OK cannot follow a refused FEATURES_OK.
    driver.addStatus(S.DRIVER_OK);
    expect(driver.status()).toBe(S.ACK | S.DRIVER);
    expect(echo.activations).toBe(0);
  });

  test("VIRTIO_F_VERSION_1 not accepted: FEATURES_OK stays clear", () => {
    const { driver } = setup();
    expect(() => driver.init({ accept: (f) => f & ~V.bit(V.VIRTIO_F_VERSION_1) })).toThrow("refused the features");
    expect(driver.status() & S.FEATURES_OK).toBe(0);
  });

  test("feature bits above 63: refused", () => {
    const { driver } = setup();
    driver.reset();
    driver.addStatus(S.ACK);
    driver.addStatus(S.DRIVER);
    driver.writeDriverFeatures(driver.readDeviceFeatures());
    driver.write32(V.VIRTIO_MMIO_DRIVER_FEATURES_SEL, 2);
    driver.write32(V.VIRTIO_MMIO_DRIVER_FEATURES, 1);
    driver.addStatus(S.FEATURES_OK);
    expect(driver.status() & S.FEATURES_OK).toBe(0);
  });

  test("DriverFeatures is written only between DRIVER and FEATURES_OK", () => {
    const { driver, dev } = setup();
    driver.reset();
    driver.addStatus(S.ACK);
    driver.writeDriverFeatures(V.bit(V.VIRTIO_F_VERSION_1));
    expect(dev.driverFeatures).toBe(0n);
    driver.addStatus(S.DRIVER);
    driver.writeDriverFeatures(V.bit(V.VIRTIO_F_VERSION_1));
    driver.addStatus(S.FEATURES_OK);
    expect(driver.status()).toBe(S.ACK | S.DRIVER | S.FEATURES_OK);
    driver.writeDriverFeatures(V.bit(V.VIRTIO_F_VERSION_1) | V.bit(ECHO_F_OFFERED));
    expect(dev.driverFeatures).toBe(V.bit(V.VIRTIO_F_VERSION_1));
  });
});

describe("status state machine", () => {
  test("bits out of order are refused", () => {
    const { driver, logs } = setup();
    driver.write32(V.VIRTIO_MMIO_STATUS, S.DRIVER);
    expect(driver.status()).toBe(0);
    driver.write32(V.VIRTIO_MMIO_STATUS, S.ACK | S.FEATURES_OK);
    // ACKNOWLEDGE is taken, FEATURES_OK without DRIVER is not.
    expect(driver.status()).toBe(S.ACK);
    driver.write32(V.VIRTIO_MMIO_STATUS, S.ACK | S.DRIVER_OK);
    expect(driver.status()).toBe(S.ACK);
    expect(logs.some((l) => l.includes("DRIVER_OK needs"))).toBe(true);
  });

  test("DRIVER_OK without FEATURES_OK is refused", () => {
    const { driver, echo } = setup();
    driver.addStatus(S.ACK);
    driver.addStatus(S.DRIVER);
    driver.writeDriverFeatures(driver.readDeviceFeatures());
    driver.addStatus(S.DRIVER_OK);
    expect(driver.status()).toBe(S.ACK | S.DRIVER);
    expect(echo.activations).toBe(0);
  });

  test("bits are cleared only by writing 0, which resets everything", () => {
    const { driver, echo } = setup();
    driver.init();
    driver.write32(V.VIRTIO_MMIO_STATUS, S.ACK);
    expect(driver.status()).toBe(RUNNING);
    driver.reset();
    expect(driver.status()).toBe(0);
    expect(echo.resets).toBeGreaterThanOrEqual(2);
    driver.write32(V.VIRTIO_MMIO_QUEUE_SEL, 0);
    expect(driver.read32(V.VIRTIO_MMIO_QUEUE_READY)).toBe(0);
    expect(driver.dev.driverFeatures).toBe(0n);
    // And the device comes up again.
    driver.init();
    expect(driver.status()).toBe(RUNNING);
    expect(echo.activations).toBe(2);
  });

  test("queue setup before FEATURES_OK is refused", () => {
    const { driver } = setup();
    driver.addStatus(S.ACK);
    driver.addStatus(S.DRIVER);
    driver.write32(V.VIRTIO_MMIO_QUEUE_SEL, 0);
    driver.write32(V.VIRTIO_MMIO_QUEUE_NUM, 4);
    driver.write32(V.VIRTIO_MMIO_QUEUE_READY, 1);
    expect(driver.read32(V.VIRTIO_MMIO_QUEUE_READY)).toBe(0);
  });

  test("queue setup after DRIVER_OK is refused", () => {
    const { driver, dev, logs } = setup();
    driver.reset();
    driver.addStatus(S.ACK);
    driver.addStatus(S.DRIVER);
    driver.writeDriverFeatures(driver.readDeviceFeatures());
    driver.addStatus(S.FEATURES_OK);
    driver.setupQueue(0);
    driver.addStatus(S.DRIVER_OK);
    expect(driver.status()).toBe(RUNNING);
    driver.write32(V.VIRTIO_MMIO_QUEUE_SEL, 1);
    driver.write32(V.VIRTIO_MMIO_QUEUE_NUM, 4);
    driver.write32(V.VIRTIO_MMIO_QUEUE_READY, 1);
    expect(driver.read32(V.VIRTIO_MMIO_QUEUE_READY)).toBe(0);
    // Nor can a running queue be switched off or moved.
    driver.write32(V.VIRTIO_MMIO_QUEUE_SEL, 0);
    driver.write32(V.VIRTIO_MMIO_QUEUE_READY, 0);
    expect(driver.read32(V.VIRTIO_MMIO_QUEUE_READY)).toBe(1);
    expect(logs.filter((l) => l.includes("before DRIVER_OK")).length).toBeGreaterThanOrEqual(3);
    expect(dev.status).toBe(RUNNING);
  });

  test("a ready queue's registers cannot change", () => {
    const { driver } = setup();
    driver.reset();
    driver.addStatus(S.ACK);
    driver.addStatus(S.DRIVER);
    driver.writeDriverFeatures(driver.readDeviceFeatures());
    driver.addStatus(S.FEATURES_OK);
    const q = driver.setupQueue(0, 8);
    driver.write32(V.VIRTIO_MMIO_QUEUE_NUM, 3);
    driver.addStatus(S.DRIVER_OK);
    // Had QueueNum 3 been taken, activation would fail (not a power of 2).
    expect(driver.status()).toBe(RUNNING);
    q.add([{ addr: q.desc, len: 4 }, { addr: driver.alloc.alloc(4), len: 4, write: true }]);
    q.kick();
    expect(q.takeUsed()).toEqual([{ id: 0, len: 4 }]);
  });

  test("FAILED is accepted; nothing but a reset follows", () => {
    const { driver } = setup();
    driver.addStatus(S.ACK);
    driver.addStatus(S.FAILED);
    expect(driver.status()).toBe(S.ACK | S.FAILED);
    driver.addStatus(S.DRIVER);
    expect(driver.status()).toBe(S.ACK | S.FAILED);
    driver.reset();
    expect(driver.status()).toBe(0);
  });

  test("unknown status bits are refused", () => {
    const { driver } = setup();
    driver.write32(V.VIRTIO_MMIO_STATUS, S.ACK | 0x10);
    expect(driver.status()).toBe(0);
  });
});

describe("activation checks the queues", () => {
  function upToQueues() {
    const s = setup();
    const d = s.driver;
    d.reset();
    d.addStatus(S.ACK);
    d.addStatus(S.DRIVER);
    d.writeDriverFeatures(d.readDeviceFeatures());
    d.addStatus(S.FEATURES_OK);
    return s;
  }

  test("size not a power of 2: DEVICE_NEEDS_RESET and a config interrupt", () => {
    const { driver, errors, irq, echo } = upToQueues();
    driver.setupQueue(0, 6);
    driver.addStatus(S.DRIVER_OK);
    expect(driver.status()).toBe(RUNNING | S.NEEDS_RESET);
    expect(errors[0]).toContain("size 6 is not a power of 2");
    expect(irq.count).toBe(1);
    expect(driver.handleInterrupt()).toBe(V.VIRTIO_MMIO_INT_CONFIG);
    expect(echo.activations).toBe(0);
    // A notify now does nothing.
    driver.write32(V.VIRTIO_MMIO_QUEUE_NOTIFY, 0);
    expect(echo.processCalls).toBe(0);
  });

  test("size above QueueNumMax", () => {
    const { driver, errors } = upToQueues();
    driver.setupQueue(1, 8);
    driver.addStatus(S.DRIVER_OK);
    expect(errors[0]).toContain("QueueNumMax 4");
  });

  test("rings outside guest RAM or misaligned", () => {
    for (const [reg, value, msg] of [
      [V.VIRTIO_MMIO_QUEUE_DESC_LOW, TEST_RAM_SIZE + 16, `descriptor table at 0x${(TEST_RAM_SIZE + 16).toString(16)}+`],
      [V.VIRTIO_MMIO_QUEUE_DESC_LOW, PAGE_SIZE + 8, "not 16-byte aligned"],
      [V.VIRTIO_MMIO_QUEUE_AVAIL_LOW, 0xffffffff, "not 2-byte aligned"],
      [V.VIRTIO_MMIO_QUEUE_USED_HIGH, 1, "used ring at 0x1"],
      // Starts in RAM, ends past it: 4 + 8 * 8 + 2 = 0x46 bytes.
      [V.VIRTIO_MMIO_QUEUE_USED_LOW, TEST_RAM_SIZE - 4, `used ring at 0x${(TEST_RAM_SIZE - 4).toString(16)}+0x46`],
    ] as const) {
      const { driver, errors } = upToQueues();
      driver.setupQueue(0, 8);
      driver.write32(V.VIRTIO_MMIO_QUEUE_READY, 0);
      driver.write32(reg, value);
      driver.write32(V.VIRTIO_MMIO_QUEUE_READY, 1);
      driver.addStatus(S.DRIVER_OK);
      expect(driver.status() & S.NEEDS_RESET).toBe(S.NEEDS_RESET);
      expect(errors[0]).toContain(msg);
    }
  });

  test("a device that refuses activation needs a reset", () => {
    const { driver, echo, errors } = upToQueues();
    echo.activate = () => {
      throw new Error("queue 0 missing");
    };
    driver.addStatus(S.DRIVER_OK);
    expect(driver.status() & S.NEEDS_RESET).toBe(S.NEEDS_RESET);
    expect(errors[0]).toContain("queue 0 missing");
  });
});

describe("notifications and interrupts", () => {
  test("a notify processes the queue and raises a used-buffer interrupt", () => {
    const { driver, irq, mem, alloc } = setup();
    const [q] = driver.init({ accept: (f) => f & ~V.bit(V.VIRTIO_RING_F_EVENT_IDX) });
    const src = alloc.alloc(16);
    const dst = alloc.alloc(16);
    mem.write(src, new TextEncoder().encode("hello, virtio!!!"));
    q!.add([{ addr: src, len: 16 }, { addr: dst, len: 16, write: true }]);
    expect(irq.count).toBe(0);
    q!.kick();
    expect(q!.takeUsed()).toEqual([{ id: 0, len: 16 }]);
    expect(new TextDecoder().decode(mem.read(dst, 16))).toBe("hello, virtio!!!");
    expect(irq.count).toBe(1);
    expect(driver.read32(V.VIRTIO_MMIO_INTERRUPT_STATUS)).toBe(V.VIRTIO_MMIO_INT_VRING);
    expect(driver.handleInterrupt()).toBe(V.VIRTIO_MMIO_INT_VRING);
    expect(driver.read32(V.VIRTIO_MMIO_INTERRUPT_STATUS)).toBe(0);
  });

  test("indirect chains", () => {
    const { driver, mem, alloc } = setup();
    const [q] = driver.init();
    const a = alloc.alloc(3);
    const b = alloc.alloc(3);
    const out = alloc.alloc(6);
    mem.write(a, Uint8Array.of(1, 2, 3));
    mem.write(b, Uint8Array.of(4, 5, 6));
    q!.add([{ addr: a, len: 3 }, { addr: b, len: 3 }, { addr: out, len: 2, write: true }, { addr: out + 2, len: 4, write: true }], { indirect: true });
    q!.kick();
    expect(q!.takeUsed()).toEqual([{ id: 0, len: 6 }]);
    expect([...mem.read(out, 6)]).toEqual([1, 2, 3, 4, 5, 6]);
  });

  test("QueueNotify before DRIVER_OK, or for a queue that is not ready, does nothing", () => {
    const { driver, echo } = setup();
    driver.write32(V.VIRTIO_MMIO_QUEUE_NOTIFY, 0);
    expect(echo.processCalls).toBe(0);
    driver.reset();
    driver.addStatus(S.ACK);
    driver.addStatus(S.DRIVER);
    driver.writeDriverFeatures(driver.readDeviceFeatures());
    driver.addStatus(S.FEATURES_OK);
    driver.setupQueue(0);
    driver.addStatus(S.DRIVER_OK);
    driver.write32(V.VIRTIO_MMIO_QUEUE_NOTIFY, 1);
    driver.write32(V.VIRTIO_MMIO_QUEUE_NOTIFY, 7);
    expect(echo.processCalls).toBe(0);
    driver.write32(V.VIRTIO_MMIO_QUEUE_NOTIFY, 0);
    expect(echo.processCalls).toBe(1);
  });

  test("the notify hook: the VM swaps it for ioeventfd and calls notify() itself", () => {
    const { driver, dev, echo, alloc } = setup();
    const [q] = driver.init();
    const hooked: number[] = [];
    dev.onQueueNotify = (i) => hooked.push(i);
    q!.add([{ addr: alloc.alloc(4), len: 4, write: true }]);
    q!.kick();
    expect(hooked).toEqual([0]);
    expect(echo.processCalls).toBe(0);
    dev.notify(0);
    expect(echo.processCalls).toBe(1);
    expect(q!.takeUsed()).toEqual([{ id: 0, len: 0 }]);
  });

  test("VRING_AVAIL_F_NO_INTERRUPT suppresses interrupts without EVENT_IDX", () => {
    const { driver, irq, alloc } = setup();
    const [q] = driver.init({ accept: (f) => f & ~V.bit(V.VIRTIO_RING_F_EVENT_IDX) });
    q!.setAvailFlags(V.VRING_AVAIL_F_NO_INTERRUPT);
    q!.add([{ addr: alloc.alloc(4), len: 4, write: true }]);
    q!.kick();
    expect(q!.takeUsed().length).toBe(1);
    expect(irq.count).toBe(0);
    q!.setAvailFlags(0);
    q!.add([{ addr: alloc.alloc(4), len: 4, write: true }]);
    q!.kick();
    expect(irq.count).toBe(1);
  });

  test("EVENT_IDX: interrupt only when used.idx passes used_event; avail_event follows our index", () => {
    const { driver, irq, alloc } = setup();
    const [q] = driver.init();
    const buf = () => [{ addr: alloc.alloc(4), len: 4, write: true }];
    q!.setUsedEvent(2); // interrupt when the 3rd buffer is used
    q!.add(buf());
    q!.kick();
    q!.add(buf());
    q!.kick();
    expect(irq.count).toBe(0);
    expect(q!.availEvent()).toBe(2);
    q!.add(buf());
    q!.kick();
    expect(irq.count).toBe(1);
    q!.add(buf());
    q!.kick();
    expect(irq.count).toBe(1);
    expect(q!.usedIdx()).toBe(4);
    // The device ignores VRING_AVAIL_F_NO_INTERRUPT with EVENT_IDX.
    q!.setAvailFlags(V.VRING_AVAIL_F_NO_INTERRUPT);
    q!.setUsedEvent(4);
    q!.add(buf());
    q!.kick();
    expect(irq.count).toBe(2);
  });

  test("indexes wrap at 2^16", () => {
    const { driver, alloc, irq } = setup();
    const [q] = driver.init({ queueSizes: [8, 4] });
    const bufs = Array.from({ length: 8 }, () => alloc.alloc(4));
    let used = 0;
    for (let round = 0; round < 8300; round++) {
      for (const b of bufs) q!.add([{ addr: b, len: 4, write: true }]);
      q!.setUsedEvent((q!.availIdx - 1) & 0xffff);
      q!.kick();
      used += q!.takeUsed().length;
    }
    expect(used).toBe(8 * 8300);
    expect(q!.usedIdx()).toBe((8 * 8300) & 0xffff);
    expect(irq.count).toBe(8300);
    expect(driver.status()).toBe(RUNNING);
  });

  test("a busy queue is processed in rounds, the rest scheduled", () => {
    const { driver, dev, echo, alloc } = setup();
    const [q] = driver.init();
    const scheduled: number[] = [];
    dev.scheduleNotify = (i) => scheduled.push(i);
    echo.perRound = 2;
    for (let i = 0; i < 5; i++) q!.add([{ addr: alloc.alloc(4), len: 4, write: true }]);
    q!.kick();
    expect(q!.takeUsed().length).toBe(2);
    expect(scheduled).toEqual([0]);
    dev.notify(0);
    dev.notify(0);
    expect(q!.takeUsed().length).toBe(3);
    expect(scheduled).toEqual([0, 0]);
  });

  test("an exception in the device sets DEVICE_NEEDS_RESET, not a crash", () => {
    const { driver, echo, errors, irq } = setup();
    const [q] = driver.init();
    echo.throwOnProcess = true;
    q!.add([{ addr: driver.alloc.alloc(4), len: 4, write: true }]);
    expect(() => q!.kick()).not.toThrow();
    expect(driver.status()).toBe(RUNNING | S.NEEDS_RESET);
    expect(errors[0]).toContain("backend exploded");
    expect(driver.handleInterrupt() & V.VIRTIO_MMIO_INT_CONFIG).toBe(V.VIRTIO_MMIO_INT_CONFIG);
    expect(irq.count).toBe(1);
    // The driver's reset clears it.
    driver.reset();
    expect(driver.status()).toBe(0);
    expect(driver.dev.lastError).toBeUndefined();
  });
});

describe("configuration changes", () => {
  test("ConfigGeneration changes and a config interrupt is raised once running", () => {
    const { driver, dev, irq, echo } = setup();
    const g0 = driver.read32(V.VIRTIO_MMIO_CONFIG_GENERATION);
    dev.configChanged();
    const g1 = driver.read32(V.VIRTIO_MMIO_CONFIG_GENERATION);
    expect(g1).not.toBe(g0);
    expect(irq.count).toBe(0);
    driver.init();
    echo.config[0] = 42;
    echo.ctx!.configChanged();
    expect(driver.read32(V.VIRTIO_MMIO_CONFIG_GENERATION)).not.toBe(g1);
    expect(irq.count).toBe(1);
    expect(driver.handleInterrupt()).toBe(V.VIRTIO_MMIO_INT_CONFIG);
    expect(driver.readConfig(0, 1)[0]).toBe(42);
  });
});
