// A virtio "guest driver" in TypeScript, for testing the device models without a VM.
//
// It lays out split rings in a GuestMemory buffer the way Linux's virtio_ring.c does and talks to the
// device only through its MMIO read/write handlers, in the order Linux's virtio_mmio.c and virtio.c use
// (virtio 1.2 §3.1.1): reset, ACKNOWLEDGE, DRIVER, read the 64-bit features (page 1 then page 0), write the
// accepted ones, FEATURES_OK, read the status back, set up each queue, DRIVER_OK.

import { PAGE_SIZE } from "../../src/arch/x86_64/layout.ts";
import type { InterruptLine } from "../../src/bus.ts";
import type { VirtioDevice } from "../../src/devices/virtio/device.ts";
import { VirtioMmioTransport } from "../../src/devices/virtio/mmio.ts";
import * as V from "../../src/devices/virtio/uapi.ts";
import { GuestMemory } from "../../src/memory.ts";

/** An InterruptLine that counts triggers. */
export class CountingIrq implements InterruptLine {
  count = 0;
  constructor(readonly gsi = 5) {}
  trigger(): void {
    this.count++;
  }
}

/** A bump allocator over a range of guest-physical addresses. */
export class GuestAllocator {
  constructor(
    private next: number,
    private readonly end: number,
  ) {}
  alloc(size: number, align = 16): number {
    const at = Math.ceil(this.next / align) * align;
    if (at + size > this.end) throw new Error(`test allocator: out of guest memory for ${size} bytes`);
    this.next = at + size;
    return at;
  }
}

/** A buffer in a chain: device-readable unless `write`. */
export interface Buf {
  addr: number;
  len: number;
  write?: boolean;
}

export interface UsedElem {
  id: number;
  len: number;
}

const DESC = V.vring_desc.size;
const AVAIL_RING = V.vring_avail.offsetOf("ring");
const USED_RING = V.vring_used.offsetOf("ring");

export class TestQueue {
  readonly desc: number;
  readonly avail: number;
  readonly used: number;
  /** Our avail.idx (free-running). */
  availIdx = 0;
  /** The used.idx we have consumed up to. */
  lastUsed = 0;
  private free: number[];
  /** Descriptors (direct table) each in-flight head holds, to free them when it comes back. */
  private held = new Map<number, number[]>();
  /** Buffers that postWritable/send allocated, by head, to recycle when the chain comes back. */
  private owned = new Map<number, Buf[]>();
  /** Recycled buffers by length. */
  private pool = new Map<number, number[]>();

  /** Allocates and zeroes the three rings, unless `rings` gives where they already are. */
  constructor(
    readonly driver: TestDriver,
    readonly index: number,
    readonly size: number,
    rings?: { desc: number; avail: number; used: number },
  ) {
    const a = driver.alloc;
    this.desc = rings?.desc ?? a.alloc(V.vringDescBytes(size), V.VRING_DESC_ALIGN);
    this.avail = rings?.avail ?? a.alloc(V.vringAvailBytes(size), V.VRING_AVAIL_ALIGN);
    this.used = rings?.used ?? a.alloc(V.vringUsedBytes(size), V.VRING_USED_ALIGN);
    if (!rings) {
      const mem = driver.mem;
      mem.fill(this.desc, V.vringDescBytes(size));
      mem.fill(this.avail, V.vringAvailBytes(size));
      mem.fill(this.used, V.vringUsedBytes(size));
    }
    this.free = Array.from({ length: size }, (_, i) => i);
  }

  get mem(): GuestMemory {
    return this.driver.mem;
  }

  /** Write descriptor `i` of the table at `table` (the queue's own by default). */
  writeDesc(i: number, d: { addr: number | bigint; len: number; flags: number; next: number }, table = this.desc): void {
    const at = table + DESC * i;
    this.mem.writeU64(at + V.vring_desc.offsetOf("addr"), BigInt(d.addr));
    this.mem.writeU32(at + V.vring_desc.offsetOf("len"), d.len);
    this.mem.writeU16(at + V.vring_desc.offsetOf("flags"), d.flags);
    this.mem.writeU16(at + V.vring_desc.offsetOf("next"), d.next);
  }

  /**
   * Put a chain in the descriptor table (or in a fresh indirect table) and publish it in the available
   * ring. Returns the head index. Does not notify.
   */
  add(bufs: Buf[], opts: { indirect?: boolean } = {}): number {
    if (opts.indirect) {
      const table = this.driver.alloc.alloc(DESC * bufs.length, V.VRING_DESC_ALIGN);
      bufs.forEach((b, i) => this.writeDesc(i, {
        addr: b.addr, len: b.len,
        flags: (b.write ? V.VRING_DESC_F_WRITE : 0) | (i < bufs.length - 1 ? V.VRING_DESC_F_NEXT : 0),
        next: i < bufs.length - 1 ? i + 1 : 0,
      }, table));
      const head = this.take(1)[0]!;
      this.writeDesc(head, { addr: table, len: DESC * bufs.length, flags: V.VRING_DESC_F_INDIRECT, next: 0 });
      this.held.set(head, [head]);
      this.publish(head);
      return head;
    }
    const ids = this.take(bufs.length);
    bufs.forEach((b, i) => this.writeDesc(ids[i]!, {
      addr: b.addr, len: b.len,
      flags: (b.write ? V.VRING_DESC_F_WRITE : 0) | (i < bufs.length - 1 ? V.VRING_DESC_F_NEXT : 0),
      next: ids[i + 1] ?? 0,
    }));
    this.held.set(ids[0]!, ids);
    this.publish(ids[0]!);
    return ids[0]!;
  }

  private take(n: number): number[] {
    if (n > this.free.length) throw new Error(`test driver: ${n} descriptors wanted, ${this.free.length} free`);
    return this.free.splice(0, n);
  }

  /** Put `head` in the next available slot and bump avail.idx. */
  publish(head: number): void {
    this.mem.writeU16(this.avail + AVAIL_RING + 2 * (this.availIdx % this.size), head);
    this.availIdx = (this.availIdx + 1) & 0xffff;
    this.setAvailIdx(this.availIdx);
  }

  setAvailIdx(idx: number): void {
    this.mem.writeU16(this.avail + V.vring_avail.offsetOf("idx"), idx);
  }

  /** avail.flags (VRING_AVAIL_F_NO_INTERRUPT). */
  setAvailFlags(flags: number): void {
    this.mem.writeU16(this.avail + V.vring_avail.offsetOf("flags"), flags);
  }

  /** used_event (EVENT_IDX): interrupt me when used.idx passes this. */
  setUsedEvent(idx: number): void {
    this.mem.writeU16(this.avail + AVAIL_RING + 2 * this.size, idx);
  }

  /** avail_event, as the device last wrote it. */
  availEvent(): number {
    return this.mem.readU16(this.used + USED_RING + V.vring_used_elem.size * this.size);
  }

  usedIdx(): number {
    return this.mem.readU16(this.used + V.vring_used.offsetOf("idx"));
  }

  /** Write QueueNotify, as virtio_mmio's vm_notify does. */
  kick(): void {
    this.driver.write32(V.VIRTIO_MMIO_QUEUE_NOTIFY, this.index);
  }

  /** A buffer of `len` bytes from the recycled ones, or newly allocated. */
  private buffer(len: number): number {
    return this.pool.get(len)?.pop() ?? this.driver.alloc.alloc(Math.max(len, 1));
  }

  /**
   * Post `count` empty device-writable chains of one `size`-byte buffer each (a receive queue), zeroed.
   * Does not notify. Returns their heads.
   */
  postWritable(count: number, size: number): number[] {
    const heads: number[] = [];
    for (let i = 0; i < count; i++) {
      const buf: Buf = { addr: this.buffer(size), len: size, write: true };
      this.mem.fill(buf.addr, size);
      const head = this.add([buf]);
      this.owned.set(head, [buf]);
      heads.push(head);
    }
    return heads;
  }

  /** Post one device-readable chain with each of `parts` in its own descriptor. Does not notify. */
  send(parts: Uint8Array[], opts: { indirect?: boolean } = {}): number {
    const bufs: Buf[] = parts.map((p) => {
      const addr = this.buffer(p.byteLength);
      this.mem.write(addr, p);
      return { addr, len: p.byteLength };
    });
    const head = this.add(bufs, opts);
    this.owned.set(head, bufs);
    return head;
  }

  /**
   * Like takeUsed, with the bytes the device wrote into each chain (`len` bytes across its writable
   * buffers, in order). Buffers that postWritable/send allocated are recycled.
   */
  takeUsedData(): (UsedElem & { data: Uint8Array })[] {
    return this.collect(true) as (UsedElem & { data: Uint8Array })[];
  }

  /** Used elements the device returned since the last call; their descriptors go back on the free list. */
  takeUsed(): UsedElem[] {
    return this.collect(false);
  }

  private collect(withData: boolean): (UsedElem & { data?: Uint8Array })[] {
    const out: (UsedElem & { data?: Uint8Array })[] = [];
    const idx = this.usedIdx();
    while (this.lastUsed !== idx) {
      const at = this.used + USED_RING + V.vring_used_elem.size * (this.lastUsed % this.size);
      const e: UsedElem & { data?: Uint8Array } = {
        id: this.mem.readU32(at + V.vring_used_elem.offsetOf("id")),
        len: this.mem.readU32(at + V.vring_used_elem.offsetOf("len")),
      };
      const owned = this.owned.get(e.id) ?? [];
      if (withData) e.data = this.writtenBytes(owned, e.len);
      out.push(e);
      const ids = this.held.get(e.id);
      if (ids) {
        this.free.push(...ids);
        this.held.delete(e.id);
      }
      for (const b of owned) {
        const list = this.pool.get(b.len) ?? [];
        list.push(b.addr);
        this.pool.set(b.len, list);
      }
      this.owned.delete(e.id);
      this.lastUsed = (this.lastUsed + 1) & 0xffff;
    }
    return out;
  }

  /** The first `len` bytes across the writable buffers of a chain. */
  private writtenBytes(bufs: Buf[], len: number): Uint8Array {
    const writable = bufs.filter((b) => b.write);
    const data = new Uint8Array(Math.min(len, writable.reduce((n, b) => n + b.len, 0)));
    let at = 0;
    for (const b of writable) {
      if (at >= data.byteLength) break;
      const n = Math.min(b.len, data.byteLength - at);
      data.set(this.mem.read(b.addr, n), at);
      at += n;
    }
    return data;
  }
}

export interface InitOptions {
  /** Which offered features to accept (default: all offered). */
  accept?: (offered: bigint) => bigint;
  /** Queue sizes to use (default: QueueNumMax of each queue the device has). */
  queueSizes?: number[];
}

export class TestDriver {
  queues: TestQueue[] = [];
  features = 0n;

  constructor(
    readonly dev: VirtioMmioTransport,
    readonly mem: GuestMemory,
    readonly alloc: GuestAllocator,
    readonly irq: CountingIrq,
  ) {}

  read32(offset: number): number {
    const b = new Uint8Array(4);
    this.dev.read(offset, b);
    return new DataView(b.buffer).getUint32(0, true);
  }

  write32(offset: number, value: number): void {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, value >>> 0, true);
    this.dev.write(offset, b);
  }

  readConfig(offset: number, length: number): Uint8Array {
    const b = new Uint8Array(length);
    this.dev.read(V.VIRTIO_MMIO_CONFIG + offset, b);
    return b;
  }

  status(): number {
    return this.read32(V.VIRTIO_MMIO_STATUS);
  }

  reset(): void {
    this.write32(V.VIRTIO_MMIO_STATUS, 0);
  }

  /** Linux's virtio_add_status(): read the status, OR a bit in, write it back. */
  addStatus(bit: number): void {
    this.write32(V.VIRTIO_MMIO_STATUS, this.status() | bit);
  }

  /** vm_get_features(): page 1 (high), then page 0 (low). */
  readDeviceFeatures(): bigint {
    this.write32(V.VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
    const high = BigInt(this.read32(V.VIRTIO_MMIO_DEVICE_FEATURES));
    this.write32(V.VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
    return (high << 32n) | BigInt(this.read32(V.VIRTIO_MMIO_DEVICE_FEATURES));
  }

  /** vm_finalize_features(): page 1, then page 0. */
  writeDriverFeatures(features: bigint): void {
    this.write32(V.VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
    this.write32(V.VIRTIO_MMIO_DRIVER_FEATURES, Number((features >> 32n) & 0xffffffffn));
    this.write32(V.VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
    this.write32(V.VIRTIO_MMIO_DRIVER_FEATURES, Number(features & 0xffffffffn));
  }

  /** vm_setup_vq(): select, check not in use, read the max, program size and the three addresses, ready. */
  setupQueue(index: number, size?: number): TestQueue {
    this.write32(V.VIRTIO_MMIO_QUEUE_SEL, index);
    if (this.read32(V.VIRTIO_MMIO_QUEUE_READY) !== 0) throw new Error(`queue ${index} already in use`);
    const max = this.read32(V.VIRTIO_MMIO_QUEUE_NUM_MAX);
    if (max === 0) throw new Error(`queue ${index} does not exist`);
    const q = new TestQueue(this, index, size ?? max);
    this.write32(V.VIRTIO_MMIO_QUEUE_NUM, q.size);
    this.write64(V.VIRTIO_MMIO_QUEUE_DESC_LOW, q.desc);
    this.write64(V.VIRTIO_MMIO_QUEUE_AVAIL_LOW, q.avail);
    this.write64(V.VIRTIO_MMIO_QUEUE_USED_LOW, q.used);
    this.write32(V.VIRTIO_MMIO_QUEUE_READY, 1);
    return q;
  }

  /** A 64-bit address into a Low/High register pair. */
  write64(lowOffset: number, value: number): void {
    this.write32(lowOffset, value % 2 ** 32);
    this.write32(lowOffset + 4, Math.floor(value / 2 ** 32));
  }

  /**
   * The whole bring-up. Throws if the device is not a virtio-mmio v2 device or refuses the features
   * (FEATURES_OK reads back clear), as Linux's probe would fail.
   */
  init(opts: InitOptions = {}): TestQueue[] {
    if (this.read32(V.VIRTIO_MMIO_MAGIC_VALUE) !== V.VIRTIO_MMIO_MAGIC) throw new Error("bad magic");
    if (this.read32(V.VIRTIO_MMIO_VERSION) !== V.VIRTIO_MMIO_VERSION_2) throw new Error("not version 2");
    if (this.read32(V.VIRTIO_MMIO_DEVICE_ID) === 0) throw new Error("no device");
    this.reset();
    this.addStatus(V.VIRTIO_CONFIG_S_ACKNOWLEDGE);
    this.addStatus(V.VIRTIO_CONFIG_S_DRIVER);
    const offered = this.readDeviceFeatures();
    this.features = opts.accept ? opts.accept(offered) : offered;
    this.writeDriverFeatures(this.features);
    this.addStatus(V.VIRTIO_CONFIG_S_FEATURES_OK);
    if (!(this.status() & V.VIRTIO_CONFIG_S_FEATURES_OK)) throw new Error("device refused the features");
    this.queues = [];
    for (let i = 0; ; i++) {
      this.write32(V.VIRTIO_MMIO_QUEUE_SEL, i);
      if (this.read32(V.VIRTIO_MMIO_QUEUE_NUM_MAX) === 0) break;
      this.queues.push(this.setupQueue(i, opts.queueSizes?.[i]));
    }
    this.addStatus(V.VIRTIO_CONFIG_S_DRIVER_OK);
    return this.queues;
  }

  /** vm_interrupt(): read InterruptStatus and acknowledge exactly those bits. */
  handleInterrupt(): number {
    const s = this.read32(V.VIRTIO_MMIO_INTERRUPT_STATUS);
    this.write32(V.VIRTIO_MMIO_INTERRUPT_ACK, s);
    return s;
  }
}

/** Guest RAM for tests: 1 MiB at guest-physical 0. */
export const TEST_RAM_SIZE = 1 << 20;

/**
 * A device on the virtio-mmio transport with a test driver in front of it. Rings and buffers are
 * allocated from the first page up; `logs` and `errors` collect what the transport reports.
 */
export function virtioSetup(device: VirtioDevice, mem = GuestMemory.plain([{ gpa: 0, size: TEST_RAM_SIZE }])) {
  const irq = new CountingIrq();
  const logs: string[] = [];
  const errors: string[] = [];
  const dev = new VirtioMmioTransport(device, { mem, irq, log: (m) => logs.push(m), onError: (m) => errors.push(m) });
  const first = mem.regions[0]!;
  const alloc = new GuestAllocator(first.gpa + PAGE_SIZE, first.gpa + first.bytes.byteLength);
  const driver = new TestDriver(dev, mem, alloc, irq);
  return { mem, irq, dev, driver, alloc, logs, errors };
}

/**
 * Wait, letting the event loop run (host sockets, TAP reader threads), until `cond()` holds. Throws naming
 * `what` after `timeoutMs`: a device that never answers fails the test instead of hanging it.
 */
export async function waitFor(cond: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!cond()) {
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await Bun.sleep(1);
  }
}
