// virtio-balloon through the virtio-mmio transport and the test driver: the target in configuration space,
// inflated pages released on the host (zeros in a plain buffer; RSS in real mmap'd guest RAM), hostile
// PFNs skipped, the stats buffer held and returned, queue numbering by negotiated features, free page
// reporting.

import { afterEach, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { MiB, ramRegions } from "../src/arch/x86_64/layout.ts";
import {
  BALLOON_PAGE_SIZE, BALLOON_PAGES_PER_MIB, queueRoles, VirtioBalloon, type VirtioBalloonOptions,
} from "../src/devices/virtio/balloon.ts";
import * as V from "../src/devices/virtio/uapi.ts";
import { allocateGuestMemory, freeGuestMemory, GuestMemory } from "../src/memory.ts";
import { type TestQueue, virtioSetup } from "./support/virtio-driver.ts";
import { kvmTest } from "./support/kvm.ts";
import { Vm } from "../src/vm.ts";

const RAM = 16 * MiB;

function setup(opts: Partial<VirtioBalloonOptions> = {}, mem = GuestMemory.plain([{ gpa: 0, size: RAM }])) {
  const balloon = new VirtioBalloon({ amountMib: 0, deflateOnOom: false, ...opts });
  return { balloon, ...virtioSetup(balloon, mem) };
}

/** Puts `pfns` on `q` as one device-readable buffer of le32s (as Linux's tell_host does) and kicks. */
function sendPfns(q: TestQueue, alloc: { alloc(n: number, a?: number): number }, mem: GuestMemory, pfns: number[]): void {
  const addr = alloc.alloc(pfns.length * 4, 4);
  const dv = mem.view(addr, pfns.length * 4);
  pfns.forEach((p, i) => dv.setUint32(i * 4, p, true));
  q.add([{ addr, len: pfns.length * 4 }]);
  q.kick();
}

const range = (first: number, n: number) => Array.from({ length: n }, (_, i) => first + i);

test("identifies as a balloon; offers DEFLATE_ON_OOM, STATS_VQ and PAGE_REPORTING only when asked", () => {
  const plain = setup();
  expect(plain.driver.read32(V.VIRTIO_MMIO_DEVICE_ID)).toBe(V.VIRTIO_ID_BALLOON);
  expect(plain.balloon.deviceFeatures).toBe(0n);
  expect(plain.balloon.queueMaxSizes.length).toBe(2);
  const all = setup({ deflateOnOom: true, statsPollingIntervalS: 1, freePageReporting: true });
  expect(all.balloon.deviceFeatures).toBe(
    V.bit(V.VIRTIO_BALLOON_F_DEFLATE_ON_OOM) | V.bit(V.VIRTIO_BALLOON_F_STATS_VQ) | V.bit(V.VIRTIO_BALLOON_F_PAGE_REPORTING),
  );
  expect(all.balloon.queueMaxSizes.length).toBe(4);
  expect(all.balloon.deviceFeatures & V.bit(V.VIRTIO_BALLOON_F_MUST_TELL_HOST)).toBe(0n);
});

test("the target is num_pages in 4 KiB pages; a new target raises a configuration change", () => {
  const { balloon, driver, irq } = setup({ amountMib: 3 });
  expect(new DataView(driver.readConfig(0, 4).buffer).getUint32(0, true)).toBe(3 * 256);
  driver.init();
  const generation = driver.read32(V.VIRTIO_MMIO_CONFIG_GENERATION);
  const before = irq.count;
  balloon.setTargetMib(5);
  expect(new DataView(driver.readConfig(0, 4).buffer).getUint32(0, true)).toBe(5 * BALLOON_PAGES_PER_MIB);
  expect(driver.read32(V.VIRTIO_MMIO_CONFIG_GENERATION)).not.toBe(generation);
  expect(irq.count).toBe(before + 1);
  expect(driver.handleInterrupt() & V.VIRTIO_MMIO_INT_CONFIG).toBe(V.VIRTIO_MMIO_INT_CONFIG);
  expect(() => balloon.setTargetMib(-1)).toThrow("amount_mib");
  expect(() => balloon.setTargetMib(1.5)).toThrow("amount_mib");
});

test("the driver writes actual; the other fields are the device's", () => {
  const { balloon, driver } = setup({ amountMib: 1 });
  driver.init();
  const four = (n: number) => new Uint8Array(new Uint32Array([n]).buffer);
  driver.dev.write(V.VIRTIO_MMIO_CONFIG + 4, four(200));
  driver.dev.write(V.VIRTIO_MMIO_CONFIG + 0, four(7)); // num_pages is read-only for the driver
  expect(balloon.actualPages).toBe(200);
  expect(balloon.targetPages).toBe(256);
  expect(balloon.statistics()).toMatchObject({ target_pages: 256, actual_pages: 200, target_mib: 1, actual_mib: 0 });
});

test("inflate releases the pages named (they read back as zeros); deflate only counts", () => {
  const { balloon, driver, alloc, mem } = setup({ amountMib: 1 });
  const [inflate, deflate] = driver.init();
  const first = (8 * MiB) / BALLOON_PAGE_SIZE;
  mem.fill(first * BALLOON_PAGE_SIZE, 4 * BALLOON_PAGE_SIZE, 0xab);
  // Out of order, with a gap: pages first, first+1, first+3 released; first+2 untouched.
  sendPfns(inflate!, alloc, mem, [first + 3, first, first + 1]);
  expect(inflate!.takeUsed().length).toBe(1);
  expect(balloon.inflatedPages).toBe(3);
  const page = (i: number) => mem.read((first + i) * BALLOON_PAGE_SIZE, BALLOON_PAGE_SIZE);
  expect(page(0).every((b) => b === 0)).toBe(true);
  expect(page(1).every((b) => b === 0)).toBe(true);
  expect(page(2).every((b) => b === 0xab)).toBe(true);
  expect(page(3).every((b) => b === 0)).toBe(true);
  sendPfns(deflate!, alloc, mem, [first, first + 1]);
  expect(deflate!.takeUsed().length).toBe(1);
  expect(balloon.deflatedPages).toBe(2);
  expect(balloon.counters).toMatchObject({ inflate_count: 1, deflate_count: 1, inflated_pages: 3, deflated_pages: 2 });
});

test("hostile inflate buffers: PFNs outside RAM are skipped, a ragged tail is ignored, the device keeps working", () => {
  const { balloon, driver, alloc, mem, errors } = setup();
  const [inflate] = driver.init();
  const last = RAM / BALLOON_PAGE_SIZE - 1;
  mem.fill(last * BALLOON_PAGE_SIZE, BALLOON_PAGE_SIZE, 0x11);
  sendPfns(inflate!, alloc, mem, [last + 1, 0xffffffff, last]);
  expect(balloon.inflatedPages).toBe(1);
  expect(balloon.invalidPfns).toBe(2);
  // 6 bytes: one PFN and half of another.
  const addr = alloc.alloc(8, 4);
  mem.writeU32(addr, last - 1);
  inflate!.add([{ addr, len: 6 }]);
  inflate!.kick();
  expect(balloon.inflatedPages).toBe(2);
  // A device-writable buffer carries no PFNs the device reads.
  inflate!.add([{ addr, len: 8, write: true }]);
  inflate!.kick();
  expect(balloon.inflatedPages).toBe(2);
  expect(inflate!.takeUsed().length).toBe(3);
  expect(errors).toEqual([]);
});

describe("statistics", () => {
  let balloon: VirtioBalloon | undefined;
  afterEach(() => balloon?.close());

  /** The driver's stats buffer: virtio_balloon_stat entries (packed tag u16, val u64). */
  function statsBuffer(mem: GuestMemory, alloc: { alloc(n: number, a?: number): number }, stats: [number, bigint][]) {
    const size = V.virtio_balloon_stat.size;
    const addr = alloc.alloc(stats.length * size, 8);
    const dv = mem.view(addr, stats.length * size);
    stats.forEach(([tag, val], i) => {
      dv.setUint16(i * size, tag, true);
      dv.setBigUint64(i * size + 2, val, true);
    });
    return { addr, len: stats.length * size };
  }

  test("the device keeps the stats buffer, reads it, and returns it to ask for fresh statistics", () => {
    const s = setup({ statsPollingIntervalS: 3600 });
    balloon = s.balloon;
    const [, , stats] = s.driver.init();
    expect(s.driver.queues.length).toBe(3);
    stats!.add([statsBuffer(s.mem, s.alloc, [[V.VIRTIO_BALLOON_S_MEMFREE, 100n << 20n], [V.VIRTIO_BALLOON_S_MEMTOT, 256n << 20n], [V.VIRTIO_BALLOON_S_MAJFLT, 7n], [999, 1n]])]);
    stats!.kick();
    expect(stats!.takeUsed()).toEqual([]); // held, not returned
    expect(s.balloon.statistics()).toMatchObject({ free_memory: 100 * MiB, total_memory: 256 * MiB, major_faults: 7 });
    expect(Object.keys(s.balloon.statistics())).not.toContain("999");
    const before = s.irq.count;
    s.balloon.requestStats();
    expect(stats!.takeUsed().length).toBe(1);
    expect(s.irq.count).toBe(before + 1);
    s.balloon.requestStats(); // nothing held now: nothing to return
    expect(stats!.takeUsed()).toEqual([]);
  });

  test("the polling interval returns the buffer by itself; a new interval asks at once; on/off after creation is refused", async () => {
    const s = setup({ statsPollingIntervalS: 1 });
    balloon = s.balloon;
    const [, , stats] = s.driver.init();
    stats!.add([statsBuffer(s.mem, s.alloc, [[V.VIRTIO_BALLOON_S_AVAIL, 1n]])]);
    stats!.kick();
    s.balloon.setStatsPollingInterval(2);
    expect(stats!.takeUsed().length).toBe(1);
    stats!.add([statsBuffer(s.mem, s.alloc, [[V.VIRTIO_BALLOON_S_AVAIL, 2n]])]);
    stats!.kick();
    expect(s.balloon.statistics().available_memory).toBe(2);
    await Bun.sleep(2300);
    expect(stats!.takeUsed().length).toBe(1);
    expect(() => s.balloon.setStatsPollingInterval(0)).toThrow("cannot be turned on or off");
    expect(() => setup().balloon.setStatsPollingInterval(1)).toThrow("cannot be turned on or off");
  });
});

test("queue numbering follows the negotiated features, as Linux's init_vqs skips absent queues", () => {
  expect(queueRoles(0n)).toEqual(["inflate", "deflate"]);
  expect(queueRoles(V.bit(V.VIRTIO_BALLOON_F_PAGE_REPORTING))).toEqual(["inflate", "deflate", "reporting"]);
  // Offered stats and reporting, the driver takes only reporting: reporting is queue 2, not 3.
  const { balloon, driver, alloc, mem } = setup({ statsPollingIntervalS: 3600, freePageReporting: true });
  const queues = driver.init({ accept: (f) => f & ~V.bit(V.VIRTIO_BALLOON_F_STATS_VQ), queueSizes: [16, 16, 16] });
  expect(queues.length).toBe(4); // the transport still has four; the driver uses three
  mem.fill(4 * MiB, 2 * BALLOON_PAGE_SIZE, 0x77);
  queues[2]!.add([{ addr: 4 * MiB, len: 2 * BALLOON_PAGE_SIZE, write: true }]);
  queues[2]!.kick();
  expect(queues[2]!.takeUsed()).toEqual([{ id: 0, len: 0 }]);
  expect(balloon.reportedBytes).toBe(2 * BALLOON_PAGE_SIZE);
  expect(mem.read(4 * MiB, 2 * BALLOON_PAGE_SIZE).every((b) => b === 0)).toBe(true);
  void alloc;
  balloon.close();
});

test("free page reporting releases only the whole pages inside a reported range", () => {
  const { balloon, driver, mem } = setup({ freePageReporting: true });
  const [, , reporting] = driver.init();
  const at = 6 * MiB;
  mem.fill(at, 3 * BALLOON_PAGE_SIZE, 0x55);
  reporting!.add([{ addr: at + 100, len: 2 * BALLOON_PAGE_SIZE, write: true }]);
  reporting!.kick();
  expect(balloon.reportedBytes).toBe(BALLOON_PAGE_SIZE);
  expect(mem.read(at, BALLOON_PAGE_SIZE).every((b) => b === 0x55)).toBe(true);
  expect(mem.read(at + BALLOON_PAGE_SIZE, BALLOON_PAGE_SIZE).every((b) => b === 0)).toBe(true);
  expect(mem.read(at + 2 * BALLOON_PAGE_SIZE, BALLOON_PAGE_SIZE).every((b) => b === 0x55)).toBe(true);
});

/** Resident anonymous memory of this process, from /proc/self/status (RssAnon, in kB). */
function rssAnonBytes(): number {
  const m = /^RssAnon:\s+(\d+) kB$/m.exec(readFileSync("/proc/self/status", "utf8"));
  if (!m) throw new Error("no RssAnon in /proc/self/status");
  return Number(m[1]) * 1024;
}

/** Resident bytes of the mapping that starts at `hostAddr` (its /proc/self/smaps entry's Rss). */
function mappingRssBytes(hostAddr: number): number {
  const start = hostAddr.toString(16).padStart(8, "0");
  const entry = readFileSync("/proc/self/smaps", "utf8").split(/\n(?=[0-9a-f]+-[0-9a-f]+ )/).find((e) => e.startsWith(`${start}-`));
  const m = entry && /^Rss:\s+(\d+) kB$/m.exec(entry);
  if (!m) throw new Error(`no smaps entry for the mapping at 0x${start}`);
  return Number(m[1]) * 1024;
}

/**
 * Touches all of a 256 MiB guest's RAM, inflates 64 MiB through the device (256 PFNs per buffer, as Linux's
 * fill_balloon sends them) and measures the RSS of the RAM mapping and of the whole process.
 */
function inflate64of256(mem: GuestMemory): void {
  const { balloon, driver, alloc } = setup({ amountMib: 64 }, mem);
  const [inflate] = driver.init({ queueSizes: [256, 256] });
  // The guest has used all of its RAM: every page is resident on the host.
  for (const r of mem.regions) for (let at = 0; at < r.bytes.byteLength; at += BALLOON_PAGE_SIZE) r.bytes[at] = 1;
  Bun.gc(true);
  const before = rssAnonBytes();
  const ramBefore = mappingRssBytes(mem.regions[0]!.hostAddr!);
  const first = (128 * MiB) / BALLOON_PAGE_SIZE;
  const pages = 64 * BALLOON_PAGES_PER_MIB;
  for (let done = 0; done < pages; done += 256) {
    sendPfns(inflate!, alloc, mem, range(first + done, 256));
    inflate!.takeUsed();
  }
  Bun.gc(true);
  const after = rssAnonBytes();
  const ramAfter = mappingRssBytes(mem.regions[0]!.hostAddr!);
  const droppedMiB = (before - after) / MiB;
  console.log(
    `guest RAM mapping Rss ${(ramBefore / MiB).toFixed(1)} -> ${(ramAfter / MiB).toFixed(1)} MiB; ` +
      `process RssAnon ${(before / MiB).toFixed(1)} -> ${(after / MiB).toFixed(1)} MiB (${droppedMiB.toFixed(1)} MiB less)`,
  );
  expect(balloon.inflatedPages).toBe(pages);
  // The guest RAM mapping lost exactly the 64 MiB; the whole process about that (its JS heap moves a little).
  expect(ramBefore - ramAfter).toBe(64 * MiB);
  expect(droppedMiB).toBeGreaterThan(56);
  expect(droppedMiB).toBeLessThan(80); // the JS heap and allocator may give back a few MiB more
  // The released pages read back as zeros; the ones around them kept their contents.
  expect(mem.readU8(128 * MiB)).toBe(0);
  expect(mem.readU8(192 * MiB - BALLOON_PAGE_SIZE)).toBe(0);
  expect(mem.readU8(192 * MiB)).toBe(1);
  expect(mem.readU8(128 * MiB - BALLOON_PAGE_SIZE)).toBe(1);
  balloon.close();
}

test("inflating 64 MiB of a 256 MiB guest's RAM (mmap'd as a Vm's) lowers the VMM's RSS by about 64 MiB", () => {
  const mem = allocateGuestMemory(ramRegions(256 * MiB));
  try {
    inflate64of256(mem);
  } finally {
    freeGuestMemory(mem);
  }
});

kvmTest("the same on a real Vm's RAM, registered with KVM (KVM_SET_USER_MEMORY_REGION)", async () => {
  const vm = new Vm({ memSize: 256 * MiB, vcpus: 1 });
  try {
    inflate64of256(vm.memory);
  } finally {
    await vm.stop("test done");
  }
});

test("state: target, actual, interval, statistics and counters round-trip; bad states are refused by field", () => {
  const { balloon, driver, alloc, mem } = setup({ amountMib: 2, statsPollingIntervalS: 3600 });
  const [inflate] = driver.init();
  sendPfns(inflate!, alloc, mem, [0x300, 0x301]);
  driver.dev.write(V.VIRTIO_MMIO_CONFIG + 4, new Uint8Array(new Uint32Array([2]).buffer));
  const state = JSON.parse(JSON.stringify(balloon.describe()));
  const fresh = new VirtioBalloon({ amountMib: 0, deflateOnOom: false, statsPollingIntervalS: 3600 });
  fresh.restore(state);
  expect(fresh.describe()).toEqual(balloon.describe());
  expect(fresh.statistics()).toMatchObject({ target_mib: 2, actual_pages: 2 });
  expect(() => fresh.restore({ ...state, stats: { bogus: 1 } })).toThrow("stats.bogus");
  expect(() => new VirtioBalloon({ amountMib: 0, deflateOnOom: false }).restore(state)).toThrow("statsPollingIntervalS");
  balloon.close();
  fresh.close();
});
