// A hostile guest against the virtqueue code and the virtio-mmio transport.
//
// First each rule of split virtqueues (virtio 1.2 §2.7) is broken on purpose, one at a time: the device
// must set DEVICE_NEEDS_RESET, log why, and touch no memory outside guest RAM. Then thousands of rounds
// of seeded random descriptor chains, ring indexes and register writes, against virtio-blk and virtio-rng:
// no exception may escape the device, every notify must finish within a fixed number of guest-memory
// accesses, and no access may fall outside guest RAM.
//
// Guest memory is a GuestMemory subclass that counts every access (`slice`, which every read and write
// goes through, and `contains`) and every access that would be out of range. The devices are expected to
// check before they touch: the count of out-of-range accesses must stay 0, not merely be caught.

import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { RAM_64BIT_START, PAGE_SIZE } from "../src/arch/x86_64/layout.ts";
import { FileBlockBackend, VirtioBlock } from "../src/devices/virtio/block.ts";
import type { VirtioDevice } from "../src/devices/virtio/device.ts";
import { VirtioMmioTransport } from "../src/devices/virtio/mmio.ts";
import { Virtqueue } from "../src/devices/virtio/queue.ts";
import { VirtioRng } from "../src/devices/virtio/rng.ts";
import * as V from "../src/devices/virtio/uapi.ts";
import { StructView } from "../src/kvm/struct.ts";
import { CountingIrq, GuestAllocator, TestDriver, TestQueue } from "./support/virtio-driver.ts";
import { CheckedMemory } from "./support/checked-memory.ts";
import { prng } from "./support/prng.ts";

/** Low RAM, then a hole, then a small region at 4 GiB: buffers that span the hole must be refused. */
const LOW_SIZE = 256 * 1024;
const HIGH_SIZE = 64 * 1024;

const RUNNING =
  V.VIRTIO_CONFIG_S_ACKNOWLEDGE | V.VIRTIO_CONFIG_S_DRIVER | V.VIRTIO_CONFIG_S_FEATURES_OK | V.VIRTIO_CONFIG_S_DRIVER_OK;

function hostileSetup(device: VirtioDevice) {
  const mem = new CheckedMemory(LOW_SIZE, HIGH_SIZE);
  const irq = new CountingIrq();
  const errors: string[] = [];
  const dev = new VirtioMmioTransport(device, { mem, irq, onError: (m) => errors.push(m) });
  const driver = new TestDriver(dev, mem, new GuestAllocator(PAGE_SIZE, LOW_SIZE), irq);
  return { mem, irq, errors, dev, driver };
}

describe("each virtqueue rule, broken on purpose", () => {
  /** A running virtio-rng with one queue of 8, and a writable buffer to point descriptors at. */
  function running(opts: { indirect?: boolean } = {}) {
    const s = hostileSetup(new VirtioRng({ queueSize: 8 }));
    const [q] = s.driver.init({
      accept: (f) => (opts.indirect === false ? f & ~V.bit(V.VIRTIO_RING_F_INDIRECT_DESC) : f),
    });
    const buf = s.driver.alloc.alloc(64);
    return { ...s, q: q!, buf };
  }

  function expectBroken(s: ReturnType<typeof running>, message: string) {
    const usedBefore = s.q.usedIdx();
    s.q.kick();
    expect(s.q.takeUsed()).toEqual([]);
    expect(s.dev.status).toBe(RUNNING | V.VIRTIO_CONFIG_S_NEEDS_RESET);
    expect(s.errors.length).toBe(1);
    expect(s.errors[0]).toContain(message);
    expect(s.dev.lastError).toContain(message);
    // A configuration-change interrupt tells the driver (§2.1.2).
    expect(s.driver.handleInterrupt()).toBe(V.VIRTIO_MMIO_INT_CONFIG);
    expect(s.mem.outOfRange).toBe(0);
    // Nothing more happens until a reset; after one, the device works again.
    s.q.kick();
    expect(s.q.usedIdx()).toBe(usedBefore);
    const [q] = s.driver.init();
    q!.add([{ addr: s.buf, len: 8, write: true }]);
    q!.kick();
    expect(q!.takeUsed()).toEqual([{ id: 0, len: 8 }]);
  }

  const W = V.VRING_DESC_F_WRITE;
  const N = V.VRING_DESC_F_NEXT;
  const I = V.VRING_DESC_F_INDIRECT;

  test("a loop in the chain", () => {
    const s = running();
    s.q.writeDesc(0, { addr: s.buf, len: 8, flags: W | N, next: 1 });
    s.q.writeDesc(1, { addr: s.buf, len: 8, flags: W | N, next: 0 });
    s.q.publish(0);
    expectBroken(s, "longer than 8 descriptors");
  });

  test("a descriptor pointing at itself", () => {
    const s = running();
    s.q.writeDesc(3, { addr: s.buf, len: 8, flags: W | N, next: 3 });
    s.q.publish(3);
    expectBroken(s, "longer than 8 descriptors");
  });

  test("a loop inside an indirect table", () => {
    const s = running();
    const table = s.driver.alloc.alloc(32, 16);
    s.q.writeDesc(0, { addr: s.buf, len: 8, flags: W | N, next: 1 }, table);
    s.q.writeDesc(1, { addr: s.buf, len: 8, flags: W | N, next: 0 }, table);
    s.q.writeDesc(0, { addr: table, len: 32, flags: I, next: 0 });
    s.q.publish(0);
    expectBroken(s, "longer than 2 descriptors");
  });

  test("a head index past the table", () => {
    const s = running();
    s.q.publish(8);
    expectBroken(s, "head descriptor 8");
  });

  test("a next index past the table", () => {
    const s = running();
    s.q.writeDesc(0, { addr: s.buf, len: 8, flags: W | N, next: 0xffff });
    s.q.publish(0);
    expectBroken(s, "next index 65535");
  });

  test("a next index past an indirect table", () => {
    const s = running();
    const table = s.driver.alloc.alloc(32, 16);
    s.q.writeDesc(0, { addr: s.buf, len: 8, flags: W | N, next: 2 }, table);
    s.q.writeDesc(0, { addr: table, len: 32, flags: I, next: 0 });
    s.q.publish(0);
    expectBroken(s, "past the 2-entry table");
  });

  for (const [what, addr, len] of [
    ["past the end of low RAM", LOW_SIZE - 4, 8],
    ["starting past the end of low RAM", LOW_SIZE + 4096, 1],
    ["in the hole below 4 GiB", RAM_64BIT_START - 8, 4],
    ["past the end of high RAM", RAM_64BIT_START + HIGH_SIZE - 1, 2],
    ["with a 4 GiB length", 0, 0xffffffff],
    ["above 2^53", 2n ** 60n, 8],
    ["at 2^64 - 1", 2n ** 64n - 1n, 2],
  ] as const) {
    test(`a buffer ${what}`, () => {
      const s = running();
      s.q.writeDesc(0, { addr, len, flags: W, next: 0 });
      s.q.publish(0);
      expectBroken(s, "is not in guest RAM");
    });
  }

  test("buffers at the very end of each region are fine", () => {
    const s = running();
    s.q.add([{ addr: LOW_SIZE - 8, len: 8, write: true }, { addr: RAM_64BIT_START + HIGH_SIZE - 8, len: 8, write: true }]);
    s.q.kick();
    expect(s.q.takeUsed()).toEqual([{ id: 0, len: 16 }]);
    expect(s.dev.status).toBe(RUNNING);
  });

  test("a device-readable buffer after a device-writable one", () => {
    const s = running();
    s.q.add([{ addr: s.buf, len: 8, write: true }, { addr: s.buf, len: 8 }]);
    expectBroken(s, "device-readable after a device-writable");
  });

  test("the same, inside an indirect table", () => {
    const s = running();
    s.q.add([{ addr: s.buf, len: 8 }, { addr: s.buf, len: 8, write: true }, { addr: s.buf, len: 8 }], { indirect: true });
    expectBroken(s, "indirect descriptor 2 is device-readable after");
  });

  test("an indirect table inside an indirect table", () => {
    const s = running();
    const inner = s.driver.alloc.alloc(16, 16);
    s.q.writeDesc(0, { addr: s.buf, len: 8, flags: W, next: 0 }, inner);
    const outer = s.driver.alloc.alloc(16, 16);
    s.q.writeDesc(0, { addr: inner, len: 16, flags: I, next: 0 }, outer);
    s.q.writeDesc(0, { addr: outer, len: 16, flags: I, next: 0 });
    s.q.publish(0);
    expectBroken(s, "INDIRECT inside an indirect table");
  });

  test("INDIRECT together with NEXT", () => {
    const s = running();
    const table = s.driver.alloc.alloc(16, 16);
    s.q.writeDesc(0, { addr: s.buf, len: 8, flags: W, next: 0 }, table);
    s.q.writeDesc(0, { addr: table, len: 16, flags: I | N, next: 1 });
    s.q.publish(0);
    expectBroken(s, "both INDIRECT and NEXT");
  });

  test("INDIRECT when VIRTIO_RING_F_INDIRECT_DESC was not negotiated", () => {
    const s = running({ indirect: false });
    s.q.add([{ addr: s.buf, len: 8, write: true }], { indirect: true });
    expectBroken(s, "VIRTIO_RING_F_INDIRECT_DESC was not negotiated");
  });

  for (const len of [0, 24]) {
    test(`an indirect table of ${len} bytes`, () => {
      const s = running();
      s.q.writeDesc(0, { addr: s.driver.alloc.alloc(32, 16), len, flags: I, next: 0 });
      s.q.publish(0);
      expectBroken(s, `indirect table length ${len}`);
    });
  }

  test("an indirect table longer than the queue", () => {
    const s = running();
    s.q.writeDesc(0, { addr: s.driver.alloc.alloc(16 * 9, 16), len: 16 * 9, flags: I, next: 0 });
    s.q.publish(0);
    expectBroken(s, "indirect table of 9 descriptors is longer than the queue size 8");
  });

  test("an indirect table outside guest RAM", () => {
    const s = running();
    s.q.writeDesc(0, { addr: LOW_SIZE - 16, len: 32, flags: I, next: 0 });
    s.q.publish(0);
    expectBroken(s, "indirect table at");
  });

  test("the available index jumping by more than the queue size", () => {
    const s = running();
    s.q.setAvailIdx(9);
    expectBroken(s, "9 new chains, more than the queue size 8");
  });

  test("the available index going backwards looks like a huge jump", () => {
    const s = running();
    s.q.add([{ addr: s.buf, len: 8, write: true }]);
    s.q.kick();
    s.q.takeUsed();
    s.driver.handleInterrupt();
    s.q.setAvailIdx(0);
    expectBroken(s, "from 1 to 0");
  });

  test("a full ring of exactly Queue Size chains is fine", () => {
    const s = running();
    for (let i = 0; i < 8; i++) s.q.add([{ addr: s.buf, len: 8, write: true }]);
    s.q.kick();
    expect(s.q.takeUsed().length).toBe(8);
    expect(s.dev.status).toBe(RUNNING);
  });

  test("descriptors are copied once: changing the table after the pop changes nothing", () => {
    const mem = new CheckedMemory(LOW_SIZE, HIGH_SIZE);
    const alloc = new GuestAllocator(PAGE_SIZE, LOW_SIZE);
    const desc = alloc.alloc(V.vringDescBytes(4), 16);
    const avail = alloc.alloc(V.vringAvailBytes(4), 2);
    const used = alloc.alloc(V.vringUsedBytes(4), 4);
    const errors: string[] = [];
    const q = Virtqueue.create(mem, {
      index: 0, size: 4, maxSize: 4, descTable: BigInt(desc), availRing: BigInt(avail), usedRing: BigInt(used),
      eventIdx: false, indirect: false,
    }, (m) => errors.push(m));
    if (typeof q === "string") throw new Error(q);
    const buf = alloc.alloc(64);
    const d = new StructView(V.vring_desc, mem.slice(desc, V.vring_desc.size));
    d.assign({ addr: buf, len: 64, flags: V.VRING_DESC_F_WRITE, next: 0 });
    mem.writeU16(avail + V.vring_avail.offsetOf("idx"), 1);
    const chain = q.pop()!;
    d.assign({ addr: 2n ** 63n, len: 0xffffffff });
    expect(chain.writable).toEqual([{ addr: buf, len: 64 }]);
    chain.write(0, new Uint8Array(64).fill(1));
    q.push(chain, 64);
    expect(mem.readU32(used + V.vring_used.offsetOf("ring") + V.vring_used_elem.offsetOf("len"))).toBe(64);
    expect(errors).toEqual([]);
    // A push with nothing in flight is a device bug, reported like a guest error rather than thrown.
    q.push(chain, 64);
    expect(errors[0]).toContain("none is in flight");
  });
});

// ---- randomized ----

const dir = mkdtempSync(join(tmpdir(), "kindling-hostile-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const QUEUE_SIZE = 16;
/**
 * Guest-memory accesses one notify may make, at most: per chain (at most QUEUE_SIZE of them per round),
 * three ring accesses, two per descriptor (copy and range check) for up to QUEUE_SIZE direct and
 * QUEUE_SIZE indirect descriptors, one per buffer for the data, and the used-ring writes; plus the
 * interrupt decision. Generous by a factor of two.
 */
const MAX_ACCESSES_PER_NOTIFY = 2 * (QUEUE_SIZE * (3 + 2 * 2 * QUEUE_SIZE + 2 * QUEUE_SIZE + 4) + 8);

function fuzz(kind: "blk" | "rng", seed: number, iterations: number) {
  const r = prng(seed);
  let device: VirtioDevice;
  if (kind === "blk") {
    const path = join(dir, `fuzz-${seed}.img`);
    writeFileSync(path, new Uint8Array(64 * V.SECTOR_SIZE));
    device = new VirtioBlock(new FileBlockBackend(path), { queueSize: QUEUE_SIZE });
  } else {
    device = new VirtioRng({ queueSize: QUEUE_SIZE });
  }
  const s = hostileSetup(device);
  s.dev.scheduleNotify = () => {}; // rounds are counted per notify; leftover work waits for the next one
  const { mem, dev, driver } = s;

  // Fixed areas: rings (for the largest queue), an indirect-table scratch area, and data buffers whose
  // every 16-byte slot holds a plausible virtio-blk header so that random chains reach the device code.
  const ringsAlloc = new GuestAllocator(PAGE_SIZE, 4 * PAGE_SIZE);
  const ringMem = { desc: ringsAlloc.alloc(V.vringDescBytes(QUEUE_SIZE), 16), avail: ringsAlloc.alloc(V.vringAvailBytes(QUEUE_SIZE), 2), used: ringsAlloc.alloc(V.vringUsedBytes(QUEUE_SIZE), 4) };
  const indirectArea = 4 * PAGE_SIZE;
  const dataArea = 8 * PAGE_SIZE;
  const template = new Uint8Array(LOW_SIZE - dataArea);
  for (let at = 0; at + V.virtio_blk_outhdr.size <= template.byteLength; at += V.virtio_blk_outhdr.size) {
    new StructView(V.virtio_blk_outhdr, template, at).assign({
      type: r.pick([0, 1, 4, 8, 11, 0x80000000]), ioprio: 0, sector: BigInt(r.pick([0, 1, 63, 64, r.u32()])),
    });
  }
  const seedData = () => mem.write(dataArea, template);
  seedData();

  let q: TestQueue | undefined;
  const randomAddr = (): number | bigint => r.pick<() => number | bigint>([
    () => dataArea + r.int(LOW_SIZE - dataArea),
    () => dataArea + 16 * r.int((LOW_SIZE - dataArea) / 16),
    () => LOW_SIZE - r.int(64),
    () => LOW_SIZE,
    () => RAM_64BIT_START + r.int(HIGH_SIZE),
    () => RAM_64BIT_START - r.int(64),
    () => indirectArea,
    () => 0,
    () => 2 ** 53 - 1,
    () => 2n ** 64n - 1n,
    () => BigInt(r.u32()) << 32n,
  ])();
  const randomLen = () => r.pick([0, 1, 15, 16, 17, 32, 64, 512, 513, 1024, 4096, r.int(70000), 0xffffffff, 0x80000000]);
  const randomFlags = () => (r.chance(0.9) ? r.int(8) : r.int(0x10000));
  const randomNext = () => (r.chance(0.9) ? r.int(QUEUE_SIZE) : r.int(0x10000));
  const randomDesc = () => ({ addr: randomAddr(), len: randomLen(), flags: randomFlags(), next: randomNext() });

  /** Linux's bring-up, with random deviations. Does not check anything: the device must cope. */
  const bringUp = () => {
    driver.write32(V.VIRTIO_MMIO_STATUS, 0);
    driver.addStatus(V.VIRTIO_CONFIG_S_ACKNOWLEDGE);
    driver.addStatus(V.VIRTIO_CONFIG_S_DRIVER);
    let features = driver.readDeviceFeatures();
    if (r.chance(0.3)) features &= ~V.bit(V.VIRTIO_RING_F_EVENT_IDX);
    if (r.chance(0.2)) features &= ~V.bit(V.VIRTIO_RING_F_INDIRECT_DESC);
    if (r.chance(0.05)) features |= V.bit(r.int(64));
    driver.writeDriverFeatures(features);
    driver.addStatus(V.VIRTIO_CONFIG_S_FEATURES_OK);
    const size = r.chance(0.9) ? r.pick([1, 2, 4, 8, 16, 16, 16]) : r.pick([0, 3, 17, 32, r.u32()]);
    driver.write32(V.VIRTIO_MMIO_QUEUE_SEL, 0);
    driver.write32(V.VIRTIO_MMIO_QUEUE_NUM, size);
    driver.write64(V.VIRTIO_MMIO_QUEUE_DESC_LOW, r.chance(0.95) ? ringMem.desc : Number(randomAddr()) % 2 ** 52);
    driver.write64(V.VIRTIO_MMIO_QUEUE_AVAIL_LOW, ringMem.avail);
    driver.write64(V.VIRTIO_MMIO_QUEUE_USED_LOW, r.chance(0.95) ? ringMem.used : ringMem.used + 2);
    driver.write32(V.VIRTIO_MMIO_QUEUE_READY, 1);
    mem.fill(ringMem.desc, V.vringDescBytes(QUEUE_SIZE));
    mem.fill(ringMem.avail, V.vringAvailBytes(QUEUE_SIZE));
    mem.fill(ringMem.used, V.vringUsedBytes(QUEUE_SIZE));
    driver.addStatus(V.VIRTIO_CONFIG_S_DRIVER_OK);
    // A TestQueue over the same rings, for writing descriptors and reading the used ring.
    q = new TestQueue(driver, 0, Math.max(1, Math.min(QUEUE_SIZE, size)), ringMem);
  };

  const registerOffsets = [
    V.VIRTIO_MMIO_STATUS, V.VIRTIO_MMIO_QUEUE_SEL, V.VIRTIO_MMIO_QUEUE_NUM, V.VIRTIO_MMIO_QUEUE_READY,
    V.VIRTIO_MMIO_QUEUE_NOTIFY, V.VIRTIO_MMIO_INTERRUPT_ACK, V.VIRTIO_MMIO_DRIVER_FEATURES,
    V.VIRTIO_MMIO_DRIVER_FEATURES_SEL, V.VIRTIO_MMIO_DEVICE_FEATURES_SEL, V.VIRTIO_MMIO_QUEUE_DESC_LOW,
    V.VIRTIO_MMIO_QUEUE_DESC_HIGH, V.VIRTIO_MMIO_QUEUE_AVAIL_LOW, V.VIRTIO_MMIO_QUEUE_USED_LOW,
    V.VIRTIO_MMIO_QUEUE_USED_HIGH, V.VIRTIO_MMIO_QUEUE_RESET, V.VIRTIO_MMIO_QUEUE_PFN, V.VIRTIO_MMIO_CONFIG,
  ];
  const randomRegisterAccess = () => {
    const offset = r.chance(0.8) ? r.pick(registerOffsets) : r.int(0x1000);
    const data = new Uint8Array(r.pick([4, 4, 4, 1, 2, 8]));
    if (r.chance(0.5)) {
      if (r.chance(0.5)) data[0] = r.int(256);
      else for (let i = 0; i < data.length; i++) data[i] = r.int(256);
      dev.write(offset, data);
    } else {
      dev.read(offset, data);
    }
  };

  const stats = { escaped: [] as string[], maxAccesses: 0, notifies: 0, used: 0, needsReset: 0, running: 0 };
  const guarded = (what: string, fn: () => void) => {
    try {
      fn();
    } catch (e) {
      stats.escaped.push(`${what}: ${(e as Error).stack}`);
    }
  };

  for (let it = 0; it < iterations; it++) {
    if (r.chance(0.02)) seedData();
    if (r.chance(0.15)) guarded("register access", () => { for (let n = 1 + r.int(4); n > 0; n--) randomRegisterAccess(); });
    if (dev.status !== RUNNING || !q || r.chance(0.02)) guarded("bring-up", bringUp);
    if (dev.status === RUNNING) stats.running++;
    const queue = q!;

    // Descriptors: random ones, sometimes a well-formed request, sometimes an indirect table.
    guarded("ring setup", () => {
      for (let n = r.int(2 * QUEUE_SIZE); n > 0; n--) queue.writeDesc(r.int(QUEUE_SIZE), randomDesc());
      if (r.chance(0.3)) {
        const entries = r.pick([1, 2, 3, 4, 8, 16, 17]);
        for (let i = 0; i < entries; i++) queue.writeDesc(i, randomDesc(), indirectArea);
        queue.writeDesc(r.int(QUEUE_SIZE), { addr: indirectArea, len: r.chance(0.8) ? 16 * entries : randomLen(), flags: V.VRING_DESC_F_INDIRECT | (r.chance(0.1) ? V.VRING_DESC_F_NEXT : 0), next: randomNext() });
      }
      if (r.chance(0.3)) {
        // header, data, status: in order and in range, so the device-level checks get exercised.
        const base = dataArea + 16 * r.int(64);
        const dataLen = r.pick([0, 20, 512, 1024, 100]);
        const head = r.int(QUEUE_SIZE - 2);
        queue.writeDesc(head, { addr: base, len: 16, flags: V.VRING_DESC_F_NEXT, next: head + 1 });
        queue.writeDesc(head + 1, { addr: base + 4096, len: dataLen, flags: V.VRING_DESC_F_NEXT | (r.chance(0.5) ? V.VRING_DESC_F_WRITE : 0), next: head + 2 });
        queue.writeDesc(head + 2, { addr: base + 8192, len: 1, flags: V.VRING_DESC_F_WRITE, next: 0 });
        mem.writeU16(queue.avail + V.vring_avail.offsetOf("ring") + 2 * (queue.availIdx % queue.size), head);
        queue.availIdx = (queue.availIdx + 1) & 0xffff;
      }
      // Available ring: random heads, then an index that is usually sane and sometimes not.
      for (let n = r.int(4); n > 0; n--) {
        mem.writeU16(queue.avail + V.vring_avail.offsetOf("ring") + 2 * r.int(QUEUE_SIZE), r.chance(0.9) ? r.int(QUEUE_SIZE) : r.int(0x10000));
      }
      const step = r.chance(0.85) ? r.int(queue.size + 1) : r.pick([queue.size + 1, 0x8000, 0xffff, r.int(0x10000)]);
      queue.availIdx = (queue.availIdx + step) & 0xffff;
      queue.setAvailIdx(queue.availIdx);
      if (r.chance(0.2)) queue.setAvailFlags(r.int(0x10000));
      if (r.chance(0.2)) queue.setUsedEvent(r.int(0x10000));
    });

    // Notify, through the register or as the VM's ioeventfd reader would, and count the work.
    const before = mem.accesses;
    const usedBefore = mem.readU16(ringMem.used + V.vring_used.offsetOf("idx"));
    guarded("notify", () => {
      if (r.chance(0.5)) driver.write32(V.VIRTIO_MMIO_QUEUE_NOTIFY, r.chance(0.9) ? 0 : r.u32());
      else dev.notify(r.chance(0.9) ? 0 : r.int(4));
    });
    stats.notifies++;
    stats.maxAccesses = Math.max(stats.maxAccesses, mem.accesses - before);
    stats.used += (mem.readU16(ringMem.used + V.vring_used.offsetOf("idx")) - usedBefore) & 0xffff;
    if (dev.status & V.VIRTIO_CONFIG_S_NEEDS_RESET) stats.needsReset++;
    guarded("interrupt", () => driver.handleInterrupt());
  }
  return { stats, mem, errors: s.errors };
}

describe("randomized hostile guest", () => {
  for (const [kind, seed] of [["rng", 1], ["blk", 2], ["rng", 3], ["blk", 4]] as const) {
    test(`${kind}, seed ${seed}: 2500 rounds`, () => {
      const { stats, mem, errors } = fuzz(kind, seed, 2500);
      expect(stats.escaped).toEqual([]);
      expect(mem.outOfRange).toBe(0);
      expect(stats.maxAccesses).toBeLessThanOrEqual(MAX_ACCESSES_PER_NOTIFY);
      // The run must have exercised both outcomes: chains completed, and chains refused.
      expect(stats.used).toBeGreaterThan(500);
      expect(errors.length).toBeGreaterThan(200);
      expect(stats.running).toBeGreaterThan(500);
    }, 10_000);
  }
});
