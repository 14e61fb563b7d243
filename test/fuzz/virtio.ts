// A seeded fuzzer for the virtio devices (blk, net, vsock, rng) on the virtio-mmio transport: a hostile
// guest driver that writes random descriptor chains (and well-formed requests for each device, so the
// device code is reached), random register and configuration-space writes, and resets at any moment,
// including between a request and its notify and while a device has work waiting (a host frame for net, an
// answer for vsock). It grows the ideas of test/virtio-hostile.test.ts to every device and every queue.
//
// Every guest-memory access goes through a GuestMemory that counts accesses and those out of range. For
// each case it measures the notify: guest-memory accesses and wall time. Reported: cases per second, the
// worst notify in accesses and microseconds, exceptions that escaped the device (must be 0), accesses
// outside guest RAM (must be 0), and how often each outcome happened (chains used, DEVICE_NEEDS_RESET).
//
//   bun test/fuzz/virtio.ts --cases 1000000 --seed 7 [--devices blk,net,vsock,rng] [--json]
//
// The cases are shared out evenly over the devices. test/virtio-fuzz.test.ts runs a smaller count.

import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { RAM_64BIT_START, PAGE_SIZE } from "../../src/arch/x86_64/layout.ts";
import { FileBlockBackend, VirtioBlock } from "../../src/devices/virtio/block.ts";
import type { VirtioDevice } from "../../src/devices/virtio/device.ts";
import { VirtioMmioTransport } from "../../src/devices/virtio/mmio.ts";
import { NET_HDR_SIZE, VirtioNet, type NetBackend } from "../../src/devices/virtio/net.ts";
import { VirtioRng } from "../../src/devices/virtio/rng.ts";
import * as V from "../../src/devices/virtio/uapi.ts";
import { VirtioVsock, VSOCK_HDR_SIZE } from "../../src/devices/virtio/vsock.ts";
import { StructView } from "../../src/kvm/struct.ts";
import { CountingIrq, GuestAllocator, TestDriver, TestQueue } from "../support/virtio-driver.ts";
import { CheckedMemory } from "../support/checked-memory.ts";
import { prng } from "../support/prng.ts";

export type DeviceKind = "blk" | "net" | "vsock" | "rng";
export const DEVICE_KINDS: readonly DeviceKind[] = ["blk", "net", "vsock", "rng"];

/** Low RAM, a hole, then a small region at 4 GiB: buffers that span the hole must be refused. */
const LOW_SIZE = 512 * 1024;
const HIGH_SIZE = 64 * 1024;
/** Every queue's QueueNumMax in the fuzz (small, so that rings wrap and fill often). */
export const QUEUE_SIZE = 16;
/**
 * The most guest-memory accesses one notify may make. A notify runs one round on the notified queue (at
 * most QUEUE_SIZE chains) and, for net and vsock, one receive round (at most QUEUE_SIZE chains more). Per
 * chain: three ring accesses, two per descriptor (copy and range check) for up to QUEUE_SIZE direct and
 * QUEUE_SIZE indirect descriptors, one per buffer for the data, the used-ring writes; plus the interrupt
 * decision on each queue. Generous by a factor of two.
 */
export const MAX_ACCESSES_PER_NOTIFY = 2 * (2 * QUEUE_SIZE * (3 + 2 * 2 * QUEUE_SIZE + 2 * QUEUE_SIZE + 4) + 3 * 8);

export interface FuzzResult {
  kind: DeviceKind;
  seed: number;
  cases: number;
  seconds: number;
  /** Exceptions that escaped the device or transport (each with its stack), at most 20 kept. */
  escaped: string[];
  escapedCount: number;
  outOfRange: number;
  worstAccesses: number;
  worstMicros: number;
  /** Notify times at the 50th, 99th and 99.9th percentiles, in µs (the worst includes GC pauses and fsync). */
  p50Micros: number;
  p99Micros: number;
  p999Micros: number;
  /** Chains the device returned in the used rings. */
  used: number;
  /** Cases after which the device was in DEVICE_NEEDS_RESET. */
  needsReset: number;
  /** Cases in which the device was running when notified. */
  running: number;
  resets: number;
}

/** The device under test, with what the fuzz needs to drive its host side. */
function makeDevice(kind: DeviceKind, dir: string, seed: number) {
  const net = { deliver: undefined as ((f: Uint8Array) => void) | undefined, inFlight: 0, maxInFlight: 0 };
  let device: VirtioDevice;
  let close = () => {};
  switch (kind) {
    case "blk": {
      const path = join(dir, `fuzz-${seed}.img`);
      writeFileSync(path, new Uint8Array(64 * V.SECTOR_SIZE));
      const backend = new FileBlockBackend(path);
      device = new VirtioBlock(backend, { queueSize: QUEUE_SIZE });
      close = () => backend.close();
      break;
    }
    case "rng":
      device = new VirtioRng({ queueSize: QUEUE_SIZE });
      break;
    case "net": {
      const backend: NetBackend = {
        name: "fuzz0",
        write() {},
        setOffload() {},
        startReading(onFrame, opts) {
          net.deliver = onFrame;
          net.maxInFlight = opts.maxInFlight ?? 64;
        },
        releaseFrame() {
          net.inFlight--;
        },
        close() {},
      };
      device = new VirtioNet(backend, { queueSize: QUEUE_SIZE, maxPendingFrames: 8 });
      break;
    }
    case "vsock": {
      const v = new VirtioVsock({ guestCid: 3, udsPath: join(dir, `fuzz-${seed}.vsock`), queueSize: QUEUE_SIZE });
      device = v;
      close = () => v.close();
      break;
    }
  }
  return { device, net, close };
}

/** Run `cases` hostile cases against one device. Async only to let the devices' deferred rounds run. */
export async function fuzzDevice(kind: DeviceKind, seed: number, cases: number, dir: string): Promise<FuzzResult> {
  const r = prng(seed);
  const { device, net, close } = makeDevice(kind, dir, seed);
  const mem = new CheckedMemory(LOW_SIZE, HIGH_SIZE);
  const irq = new CountingIrq();
  const dev = new VirtioMmioTransport(device, { mem, irq, onError: () => {} });
  // Rounds are measured per notify: leftover work waits for the next notify (or the device's own deferred
  // round, which runs when the fuzz yields to the event loop).
  dev.scheduleNotify = () => {};
  const driver = new TestDriver(dev, mem, new GuestAllocator(PAGE_SIZE, LOW_SIZE), irq);
  const queueCount = device.queueMaxSizes.length;

  const result: FuzzResult = {
    kind, seed, cases, seconds: 0, escaped: [], escapedCount: 0, outOfRange: 0, worstAccesses: 0, worstMicros: 0, p50Micros: 0, p99Micros: 0, p999Micros: 0,
    used: 0, needsReset: 0, running: 0, resets: 0,
  };
  const escaped = (what: string, e: unknown) => {
    result.escapedCount++;
    if (result.escaped.length < 20) result.escaped.push(`${kind} seed ${seed}: ${what}: ${(e as Error)?.stack ?? String(e)}`);
  };
  const guarded = (what: string, fn: () => void) => {
    try {
      fn();
    } catch (e) {
      escaped(what, e);
    }
  };
  const onUncaught = (e: unknown) => escaped("uncaught (a deferred device round)", e);
  process.on("uncaughtException", onUncaught);
  process.on("unhandledRejection", onUncaught);

  // Fixed areas: the rings of each queue, an indirect-table scratch area, a request-template area, and
  // data buffers.
  const ringsAlloc = new GuestAllocator(PAGE_SIZE, 8 * PAGE_SIZE);
  const rings = Array.from({ length: queueCount }, () => ({
    desc: ringsAlloc.alloc(V.vringDescBytes(QUEUE_SIZE), 16),
    avail: ringsAlloc.alloc(V.vringAvailBytes(QUEUE_SIZE), 2),
    used: ringsAlloc.alloc(V.vringUsedBytes(QUEUE_SIZE), 4),
  }));
  const indirectArea = 8 * PAGE_SIZE;
  const templateArea = 9 * PAGE_SIZE;
  const dataArea = 16 * PAGE_SIZE;
  const queues: (TestQueue | undefined)[] = [];

  const randomAddr = (): number | bigint => r.pick<() => number | bigint>([
    () => dataArea + r.int(LOW_SIZE - dataArea),
    () => dataArea + 16 * r.int((LOW_SIZE - dataArea) / 16),
    () => LOW_SIZE - r.int(64),
    () => LOW_SIZE,
    () => RAM_64BIT_START + r.int(HIGH_SIZE),
    () => RAM_64BIT_START - r.int(64),
    () => indirectArea,
    () => templateArea,
    () => 0,
    () => 2 ** 53 - 1,
    () => 2n ** 64n - 1n,
    () => BigInt(r.u32()) << 32n,
  ])();
  const randomLen = () => r.pick([0, 1, 11, 12, 15, 16, 17, 43, 44, 45, 64, 512, 513, 1024, 1526, 4096, r.int(70000), 0xffffffff, 0x80000000]);
  const randomFlags = () => (r.chance(0.9) ? r.int(8) : r.int(0x10000));
  const randomNext = () => (r.chance(0.9) ? r.int(QUEUE_SIZE) : r.int(0x10000));
  const randomDesc = () => ({ addr: randomAddr(), len: randomLen(), flags: randomFlags(), next: randomNext() });

  /** A plausible request for `queue` of this device, written at a template slot; returns its chain. */
  const template = (queue: number): { addr: number; len: number; write?: boolean }[] => {
    const at = templateArea + 64 * r.int(64);
    const data = dataArea + 16 * r.int(1024);
    const W = true;
    switch (kind) {
      case "blk": {
        new StructView(V.virtio_blk_outhdr, mem.slice(at, V.virtio_blk_outhdr.size)).assign({
          type: r.pick([0, 1, 4, 8, 11, 0x80000000]), ioprio: 0, sector: BigInt(r.pick([0, 1, 63, 64, r.u32()])),
        });
        const dataLen = r.pick([0, 20, 512, 1024, 100]);
        return [{ addr: at, len: 16 }, { addr: data, len: dataLen, write: r.chance(0.5) }, { addr: data + 8192, len: 1, write: W }];
      }
      case "rng":
        return [{ addr: data, len: r.pick([0, 1, 64, 4096, 70000]), write: W }];
      case "net":
        if (queue === 0) return Array.from({ length: 1 + r.int(3) }, () => ({ addr: dataArea + 4096 * r.int(64), len: r.pick([0, 11, 12, 100, 1526, 4096]), write: W }));
        mem.slice(at, NET_HDR_SIZE).set(Array.from({ length: NET_HDR_SIZE }, () => (r.chance(0.7) ? 0 : r.int(256))));
        return [{ addr: at, len: NET_HDR_SIZE }, { addr: data, len: r.pick([0, 14, 60, 1514, 65550]) }];
      case "vsock": {
        if (queue !== 1) return [{ addr: dataArea + 4096 * r.int(64), len: r.pick([0, 43, 44, 100, 4096]), write: W }];
        new StructView(V.virtio_vsock_hdr, mem.slice(at, VSOCK_HDR_SIZE)).assign({
          src_cid: r.chance(0.95) ? 3 : r.int(10), dst_cid: r.chance(0.95) ? 2 : r.int(10), src_port: r.int(4),
          dst_port: r.pick([0, 1, 7000, r.u32()]), len: r.pick([0, 1, 10, 100, 4096, 70000, r.u32()]),
          type: r.chance(0.95) ? V.VIRTIO_VSOCK_TYPE_STREAM : r.int(5), op: r.int(9), flags: r.int(4),
          buf_alloc: r.pick([0, 4096, 65536, 0xffffffff]), fwd_cnt: r.pick([0, 10, r.u32()]),
        });
        return [{ addr: at, len: VSOCK_HDR_SIZE }, { addr: data, len: r.pick([0, 1, 10, 100, 4096]) }];
      }
    }
  };

  /** Linux's bring-up, with random deviations. Checks nothing: the device must cope. */
  const bringUp = () => {
    driver.write32(V.VIRTIO_MMIO_STATUS, 0);
    result.resets++;
    driver.addStatus(V.VIRTIO_CONFIG_S_ACKNOWLEDGE);
    driver.addStatus(V.VIRTIO_CONFIG_S_DRIVER);
    let features = driver.readDeviceFeatures();
    if (r.chance(0.3)) features &= ~V.bit(V.VIRTIO_RING_F_EVENT_IDX);
    if (r.chance(0.2)) features &= ~V.bit(V.VIRTIO_RING_F_INDIRECT_DESC);
    if (r.chance(0.1)) features &= ~BigInt(r.u32());
    if (r.chance(0.05)) features |= V.bit(r.int(64));
    driver.writeDriverFeatures(features);
    driver.addStatus(V.VIRTIO_CONFIG_S_FEATURES_OK);
    queues.length = 0;
    for (let i = 0; i < queueCount; i++) {
      if (r.chance(0.05)) continue; // a queue left unready
      const size = r.chance(0.9) ? r.pick([1, 2, 4, 8, 16, 16, 16]) : r.pick([0, 3, 17, 32, r.u32()]);
      const ring = rings[i]!;
      driver.write32(V.VIRTIO_MMIO_QUEUE_SEL, i);
      driver.write32(V.VIRTIO_MMIO_QUEUE_NUM, size);
      driver.write64(V.VIRTIO_MMIO_QUEUE_DESC_LOW, r.chance(0.97) ? ring.desc : Number(randomAddr()) % 2 ** 52);
      driver.write64(V.VIRTIO_MMIO_QUEUE_AVAIL_LOW, ring.avail);
      driver.write64(V.VIRTIO_MMIO_QUEUE_USED_LOW, r.chance(0.97) ? ring.used : ring.used + 2);
      driver.write32(V.VIRTIO_MMIO_QUEUE_READY, 1);
      mem.fill(ring.desc, V.vringDescBytes(QUEUE_SIZE));
      mem.fill(ring.avail, V.vringAvailBytes(QUEUE_SIZE));
      mem.fill(ring.used, V.vringUsedBytes(QUEUE_SIZE));
      queues[i] = new TestQueue(driver, i, Math.max(1, Math.min(QUEUE_SIZE, size)), ring);
    }
    driver.addStatus(V.VIRTIO_CONFIG_S_DRIVER_OK);
  };

  const registerOffsets = [
    V.VIRTIO_MMIO_STATUS, V.VIRTIO_MMIO_QUEUE_SEL, V.VIRTIO_MMIO_QUEUE_NUM, V.VIRTIO_MMIO_QUEUE_READY,
    V.VIRTIO_MMIO_QUEUE_NOTIFY, V.VIRTIO_MMIO_INTERRUPT_ACK, V.VIRTIO_MMIO_DRIVER_FEATURES,
    V.VIRTIO_MMIO_DRIVER_FEATURES_SEL, V.VIRTIO_MMIO_DEVICE_FEATURES_SEL, V.VIRTIO_MMIO_QUEUE_DESC_LOW,
    V.VIRTIO_MMIO_QUEUE_DESC_HIGH, V.VIRTIO_MMIO_QUEUE_AVAIL_LOW, V.VIRTIO_MMIO_QUEUE_USED_LOW,
    V.VIRTIO_MMIO_QUEUE_USED_HIGH, V.VIRTIO_MMIO_QUEUE_RESET, V.VIRTIO_MMIO_QUEUE_PFN, V.VIRTIO_MMIO_CONFIG,
  ];
  /** A register or configuration-space access: random offset, size and value. */
  const randomRegisterAccess = () => {
    const offset = r.chance(0.6) ? r.pick(registerOffsets) : r.chance(0.5) ? V.VIRTIO_MMIO_CONFIG + r.int(0x100) : r.int(0x1000);
    const data = new Uint8Array(r.pick([4, 4, 4, 1, 2, 8]));
    if (r.chance(0.5)) {
      for (let i = 0; i < data.length; i++) data[i] = r.chance(0.5) ? r.int(256) : 0;
      dev.write(offset, data);
    } else {
      dev.read(offset, data);
    }
  };

  /** A host frame for net: sometimes well-formed, sometimes not. */
  const injectFrame = () => {
    if (!net.deliver || net.inFlight >= net.maxInFlight) return;
    const len = r.pick([0, 5, NET_HDR_SIZE, NET_HDR_SIZE + 60, NET_HDR_SIZE + 1514, NET_HDR_SIZE + 4000, NET_HDR_SIZE + 65535, 70000]);
    const frame = new Uint8Array(len);
    if (len >= NET_HDR_SIZE && r.chance(0.3)) frame.set(Array.from({ length: NET_HDR_SIZE }, () => r.int(256)));
    net.inFlight++;
    net.deliver(frame);
  };

  const micros = new Float64Array(cases);
  const started = performance.now();
  for (let it = 0; it < cases; it++) {
    if (r.chance(0.1)) guarded("register access", () => { for (let n = 1 + r.int(4); n > 0; n--) randomRegisterAccess(); });
    if (dev.status !== (V.VIRTIO_CONFIG_S_ACKNOWLEDGE | V.VIRTIO_CONFIG_S_DRIVER | V.VIRTIO_CONFIG_S_FEATURES_OK | V.VIRTIO_CONFIG_S_DRIVER_OK) || r.chance(0.01)) {
      guarded("bring-up", bringUp);
    }
    const qi = r.int(queueCount);
    const queue = queues[qi];

    guarded("ring setup", () => {
      if (!queue) return;
      for (let n = r.int(QUEUE_SIZE); n > 0; n--) queue.writeDesc(r.int(QUEUE_SIZE), randomDesc());
      if (r.chance(0.2)) {
        const entries = r.pick([1, 2, 3, 4, 8, 16, 17]);
        for (let i = 0; i < entries; i++) queue.writeDesc(i, randomDesc(), indirectArea);
        queue.writeDesc(r.int(QUEUE_SIZE), { addr: indirectArea, len: r.chance(0.8) ? 16 * entries : randomLen(), flags: V.VRING_DESC_F_INDIRECT | (r.chance(0.1) ? V.VRING_DESC_F_NEXT : 0), next: randomNext() });
      }
      for (let k = r.int(3); k > 0; k--) {
        // A well-formed request for this queue, laid out in descriptors after a random head.
        const bufs = template(qi);
        const head = r.int(QUEUE_SIZE - bufs.length + 1);
        bufs.forEach((b, i) => queue.writeDesc(head + i, {
          addr: b.addr, len: b.len, flags: (b.write ? V.VRING_DESC_F_WRITE : 0) | (i < bufs.length - 1 ? V.VRING_DESC_F_NEXT : 0), next: head + i + 1,
        }));
        mem.writeU16(queue.avail + V.vring_avail.offsetOf("ring") + 2 * (queue.availIdx % queue.size), head);
        queue.availIdx = (queue.availIdx + 1) & 0xffff;
      }
      for (let n = r.int(3); n > 0; n--) {
        mem.writeU16(queue.avail + V.vring_avail.offsetOf("ring") + 2 * r.int(QUEUE_SIZE), r.chance(0.9) ? r.int(QUEUE_SIZE) : r.int(0x10000));
      }
      const step = r.chance(0.85) ? r.int(queue.size + 1) : r.pick([queue.size + 1, 0x8000, 0xffff, r.int(0x10000)]);
      queue.availIdx = (queue.availIdx + step) & 0xffff;
      queue.setAvailIdx(queue.availIdx);
      if (r.chance(0.1)) queue.setAvailFlags(r.int(0x10000));
      if (r.chance(0.1)) queue.setUsedEvent(r.int(0x10000));
    });
    if (kind === "net" && r.chance(0.3)) guarded("host frame", injectFrame);
    // A reset between the request and its notify, now and then.
    if (r.chance(0.01)) guarded("reset before notify", () => driver.write32(V.VIRTIO_MMIO_STATUS, 0));

    const usedBefore = queue ? mem.readU16(queue.used + V.vring_used.offsetOf("idx")) : 0;
    if (dev.status & V.VIRTIO_CONFIG_S_DRIVER_OK && !(dev.status & V.VIRTIO_CONFIG_S_NEEDS_RESET)) result.running++;
    const before = mem.accesses;
    const t0 = performance.now();
    guarded("notify", () => {
      if (r.chance(0.5)) driver.write32(V.VIRTIO_MMIO_QUEUE_NOTIFY, r.chance(0.95) ? qi : r.u32());
      else dev.notify(r.chance(0.95) ? qi : r.int(8));
    });
    micros[it] = (performance.now() - t0) * 1000;
    result.worstMicros = Math.max(result.worstMicros, micros[it]!);
    result.worstAccesses = Math.max(result.worstAccesses, mem.accesses - before);
    if (queue) result.used += (mem.readU16(queue.used + V.vring_used.offsetOf("idx")) - usedBefore) & 0xffff;
    if (dev.status & V.VIRTIO_CONFIG_S_NEEDS_RESET) result.needsReset++;
    guarded("interrupt", () => driver.handleInterrupt());
    // Let deferred rounds (net and vsock receive, vsock host sockets) run, sometimes after a reset.
    if (it % 512 === 511) {
      if (r.chance(0.2)) guarded("reset while work waits", () => driver.write32(V.VIRTIO_MMIO_STATUS, 0));
      await new Promise((resolve) => setImmediate(resolve));
    }
  }
  await new Promise((resolve) => setImmediate(resolve));
  result.seconds = (performance.now() - started) / 1000;
  result.outOfRange = mem.outOfRange;
  micros.sort();
  const at = (q: number) => micros[Math.min(cases - 1, Math.floor(q * cases))]!;
  result.p50Micros = at(0.5);
  result.p99Micros = at(0.99);
  result.p999Micros = at(0.999);
  guarded("reset at the end", () => driver.write32(V.VIRTIO_MMIO_STATUS, 0));
  guarded("close", close);
  process.off("uncaughtException", onUncaught);
  process.off("unhandledRejection", onUncaught);
  return result;
}

/** Run `cases` cases shared over `kinds`, seeds derived from `seed`. */
export async function fuzzAll(cases: number, seed: number, kinds: readonly DeviceKind[] = DEVICE_KINDS): Promise<FuzzResult[]> {
  // The disk image on tmpfs where there is one: fsync (a FLUSH, or every write without VIRTIO_BLK_F_FLUSH)
  // then costs nothing, and the times measure the device code rather than the host's disk.
  const dir = mkdtempSync(join(existsSync("/dev/shm") ? "/dev/shm" : tmpdir(), "kindling-fuzz-"));
  try {
    const out: FuzzResult[] = [];
    for (const [i, kind] of kinds.entries()) {
      const share = Math.floor(cases / kinds.length) + (i < cases % kinds.length ? 1 : 0);
      out.push(await fuzzDevice(kind, (seed + i * 0x9e3779b9) >>> 0, share, dir));
    }
    return out;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** One line per device and a total. */
export function report(results: FuzzResult[]): string {
  const lines = results.map((x) =>
    `${x.kind.padEnd(5)} seed ${String(x.seed).padStart(10)}: ${x.cases} cases in ${x.seconds.toFixed(1)} s (${Math.round(x.cases / x.seconds)}/s); ` +
    `worst notify ${x.worstAccesses} accesses, ${x.worstMicros.toFixed(0)} µs (p50 ${x.p50Micros.toFixed(0)}, p99 ${x.p99Micros.toFixed(0)}, p99.9 ${x.p999Micros.toFixed(0)} µs); escaped ${x.escapedCount}; outside RAM ${x.outOfRange}; ` +
    `used ${x.used}, needs-reset ${x.needsReset}, running ${x.running}, resets ${x.resets}`);
  const cases = results.reduce((n, x) => n + x.cases, 0);
  const seconds = results.reduce((n, x) => n + x.seconds, 0);
  lines.push(
    `total: ${cases} cases in ${seconds.toFixed(1)} s (${Math.round(cases / seconds)} cases/s); worst notify ` +
    `${Math.max(...results.map((x) => x.worstAccesses))} accesses (limit ${MAX_ACCESSES_PER_NOTIFY}), ` +
    `${Math.max(...results.map((x) => x.worstMicros)).toFixed(0)} µs; exceptions escaped ${results.reduce((n, x) => n + x.escapedCount, 0)}; ` +
    `accesses outside RAM ${results.reduce((n, x) => n + x.outOfRange, 0)}`,
  );
  return lines.join("\n");
}

if (import.meta.main) {
  const arg = (name: string) => {
    const i = process.argv.indexOf(`--${name}`);
    return i >= 0 ? process.argv[i + 1] : undefined;
  };
  const cases = Number(arg("cases") ?? 1_000_000);
  const seed = Number(arg("seed") ?? Math.floor(Math.random() * 2 ** 32));
  const kinds = (arg("devices")?.split(",") ?? DEVICE_KINDS) as DeviceKind[];
  if (!Number.isSafeInteger(cases) || cases < 1 || !Number.isSafeInteger(seed) || kinds.some((k) => !DEVICE_KINDS.includes(k))) {
    console.error("usage: bun test/fuzz/virtio.ts [--cases N] [--seed N] [--devices blk,net,vsock,rng] [--json]");
    process.exit(2);
  }
  console.log(`virtio fuzz: ${cases} cases over ${kinds.join(", ")}, seed ${seed}`);
  const results = await fuzzAll(cases, seed, kinds);
  console.log(process.argv.includes("--json") ? JSON.stringify(results, null, 2) : report(results));
  for (const x of results) for (const e of x.escaped) console.error(e);
  const bad = results.some((x) => x.escapedCount > 0 || x.outOfRange > 0 || x.worstAccesses > MAX_ACCESSES_PER_NOTIFY);
  process.exit(bad ? 1 : 0);
}
