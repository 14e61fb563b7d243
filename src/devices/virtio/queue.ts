// A split virtqueue (virtio 1.2 §2.7), seen from the device side.
//
// The driver owns three areas of guest memory: the descriptor table (buffers: address, length, flags,
// next), the available ring (heads of chains it offers) and the used ring (written by the device: heads it
// has finished with, and how many bytes it wrote). The device pops chains from the available ring, uses
// their buffers and pushes them onto the used ring.
//
// Everything in those areas is written by the guest and may change while we read it, so:
//   - each descriptor is copied out of guest memory once, then checked, then used (never read twice);
//   - every index is checked against the table it indexes, every buffer against guest RAM, before use;
//   - a chain may visit at most Queue Size descriptors (a loop in `next` ends there), an indirect table
//     at most its own length, and indirect tables do not nest;
//   - device-readable buffers must come before device-writable ones (§2.7.4.2);
//   - the available index may run ahead of ours by at most Queue Size.
// A violation breaks the queue: the transport is told (it sets DEVICE_NEEDS_RESET) and the queue does
// nothing more until the driver resets the device. No error escapes to the caller.
//
// Indexes (avail.idx, used.idx, ours) are free-running 16-bit counters: the slot is `idx % size`, and
// differences are taken modulo 2^16, so wrap-around at 65536 needs no special case.
//
// Memory ordering: the driver runs on other CPUs. We read avail.idx before the ring slot and descriptors
// it publishes, and write a used element before the used.idx that publishes it; on x86 (TSO) program order
// is what the other side sees, which is what the spec's barriers (§2.7.13, §2.7.8) ask for.

import { DeviceStateError, int } from "../state.ts";
import { GuestMemory } from "../../memory.ts";
import {
  vring_avail, vring_desc, vring_used, vring_used_elem, vring_need_event, vringAvailBytes, vringDescBytes,
  vringUsedBytes, VRING_AVAIL_ALIGN, VRING_AVAIL_F_NO_INTERRUPT, VRING_DESC_ALIGN, VRING_DESC_F_INDIRECT,
  VRING_DESC_F_NEXT, VRING_DESC_F_WRITE, VRING_USED_ALIGN,
} from "./uapi.ts";

/** A buffer in guest memory, already checked to lie inside guest RAM. */
export interface GuestBuffer {
  readonly addr: number;
  readonly len: number;
}

/** A broken rule in a queue the driver set up; becomes DEVICE_NEEDS_RESET, never escapes. */
export class VirtqueueError extends Error {
  override name = "VirtqueueError";
}

const DESC_ADDR = vring_desc.offsetOf("addr");
const DESC_LEN = vring_desc.offsetOf("len");
const DESC_FLAGS = vring_desc.offsetOf("flags");
const DESC_NEXT = vring_desc.offsetOf("next");
const AVAIL_FLAGS = vring_avail.offsetOf("flags");
const AVAIL_IDX = vring_avail.offsetOf("idx");
const AVAIL_RING = vring_avail.offsetOf("ring");
const USED_IDX = vring_used.offsetOf("idx");
const USED_RING = vring_used.offsetOf("ring");
const USED_ELEM_ID = vring_used_elem.offsetOf("id");
const USED_ELEM_LEN = vring_used_elem.offsetOf("len");

const hex = (n: number | bigint) => `0x${n.toString(16)}`;

/** The buffers of one popped chain: device-readable ones first, then device-writable ones. */
export class DescriptorChain {
  readonly readableLength: number;
  readonly writableLength: number;

  constructor(
    /** Index of the head descriptor: what goes back in the used ring. */
    readonly head: number,
    readonly readable: readonly GuestBuffer[],
    readonly writable: readonly GuestBuffer[],
    private readonly mem: GuestMemory,
  ) {
    this.readableLength = readable.reduce((n, b) => n + b.len, 0);
    this.writableLength = writable.reduce((n, b) => n + b.len, 0);
  }

  /** Copy `length` readable bytes starting `offset` bytes into the readable part. */
  read(offset: number, length: number): Uint8Array {
    const out = new Uint8Array(length);
    let at = 0;
    for (const s of this.readableSlices(offset, length)) {
      out.set(s, at);
      at += s.byteLength;
    }
    return out;
  }

  /** Scatter `data` into the writable part, starting `offset` bytes in. */
  write(offset: number, data: Uint8Array): void {
    let at = 0;
    for (const s of this.writableSlices(offset, data.byteLength)) {
      s.set(data.subarray(at, at + s.byteLength));
      at += s.byteLength;
    }
  }

  /** Views into guest memory covering readable bytes [offset, offset+length): for zero-copy I/O. */
  readableSlices(offset: number, length: number): Uint8Array[] {
    return this.slices(this.readable, offset, length, "readable");
  }

  /** Views into guest memory covering writable bytes [offset, offset+length). */
  writableSlices(offset: number, length: number): Uint8Array[] {
    return this.slices(this.writable, offset, length, "writable");
  }

  private slices(bufs: readonly GuestBuffer[], offset: number, length: number, what: string): Uint8Array[] {
    const out: Uint8Array[] = [];
    let skip = offset;
    let left = length;
    for (const b of bufs) {
      if (left === 0) break;
      if (skip >= b.len) {
        skip -= b.len;
        continue;
      }
      const n = Math.min(b.len - skip, left);
      out.push(this.mem.slice(b.addr + skip, n));
      left -= n;
      skip = 0;
    }
    if (left > 0) throw new RangeError(`descriptor chain ${this.head}: ${length} ${what} bytes at ${offset} run past its end`);
    return out;
  }
}

/** What the driver programmed through the transport's queue registers. */
export interface VirtqueueConfig {
  /** The queue's number on its device, for messages. */
  readonly index: number;
  readonly size: number;
  /** QueueNumMax. */
  readonly maxSize: number;
  /** Guest-physical addresses (64-bit, from two 32-bit registers each). */
  readonly descTable: bigint;
  readonly availRing: bigint;
  readonly usedRing: bigint;
  /** VIRTIO_RING_F_EVENT_IDX was negotiated. */
  readonly eventIdx: boolean;
  /** VIRTIO_RING_F_INDIRECT_DESC was negotiated. */
  readonly indirect: boolean;
}

/** A virtqueue's device-side positions (free-running 16-bit indices) and chains popped but not pushed. */
export type VirtqueueState = {
  nextAvail: number;
  nextUsed: number;
  signalledUsed: number;
  inFlight: number;
  broken: string | null;
};

export class Virtqueue {
  readonly index: number;
  readonly size: number;
  readonly eventIdx: boolean;
  readonly indirect: boolean;
  private readonly desc: number;
  private readonly avail: number;
  private readonly used: number;
  /** Our free-running copy of the available index: the next ring slot to pop. */
  nextAvail = 0;
  /** The free-running used index we publish. */
  nextUsed = 0;
  /** used.idx when we last decided about an interrupt (for vring_need_event). */
  private signalledUsed = 0;
  /** Chains popped and not yet pushed back. */
  private inFlight = 0;
  /** Why the queue stopped, once it has. */
  broken: string | undefined;

  /** The ring positions only the device knows (the rest is in the transport's queue registers). */
  describe(): VirtqueueState {
    return { nextAvail: this.nextAvail, nextUsed: this.nextUsed, signalledUsed: this.signalledUsed, inFlight: this.inFlight, broken: this.broken ?? null };
  }

  restore(s: VirtqueueState, device: string): void {
    const at = `queue ${this.index}`;
    const u16 = (f: "nextAvail" | "nextUsed" | "signalledUsed") => int(device, `${at}.${f}`, s?.[f], 0, 0xffff);
    const next = { nextAvail: u16("nextAvail"), nextUsed: u16("nextUsed"), signalledUsed: u16("signalledUsed"), inFlight: int(device, `${at}.inFlight`, s.inFlight, 0, this.size) };
    if (s.broken !== null && typeof s.broken !== "string") throw new DeviceStateError(device, `${at}.broken: not a string or null`);
    Object.assign(this, next);
    this.broken = s.broken ?? undefined;
  }

  /**
   * Check the driver's settings (§2.7: size a power of 2 no larger than QueueNumMax; each part aligned and
   * inside guest RAM) and build the queue, or return a message naming what is wrong.
   */
  static create(mem: GuestMemory, cfg: VirtqueueConfig, onError: (message: string) => void): Virtqueue | string {
    const { index, size, maxSize } = cfg;
    if (!Number.isInteger(size) || size < 1 || size > maxSize || (size & (size - 1)) !== 0) {
      return `queue ${index}: size ${size} is not a power of 2 between 1 and QueueNumMax ${maxSize}`;
    }
    const parts: [string, bigint, number, number][] = [
      ["descriptor table", cfg.descTable, vringDescBytes(size), VRING_DESC_ALIGN],
      ["available ring", cfg.availRing, vringAvailBytes(size), VRING_AVAIL_ALIGN],
      ["used ring", cfg.usedRing, vringUsedBytes(size), VRING_USED_ALIGN],
    ];
    for (const [what, addr, bytes, align] of parts) {
      if (addr % BigInt(align) !== 0n) return `queue ${index}: ${what} at ${hex(addr)} is not ${align}-byte aligned`;
      if (addr > BigInt(Number.MAX_SAFE_INTEGER) || !mem.contains(Number(addr), bytes)) {
        return `queue ${index}: ${what} at ${hex(addr)}+${hex(bytes)} is not in guest RAM`;
      }
    }
    return new Virtqueue(mem, cfg, onError);
  }

  private constructor(
    private readonly mem: GuestMemory,
    cfg: VirtqueueConfig,
    private readonly onError: (message: string) => void,
  ) {
    this.index = cfg.index;
    this.size = cfg.size;
    this.eventIdx = cfg.eventIdx;
    this.indirect = cfg.indirect;
    this.desc = Number(cfg.descTable);
    this.avail = Number(cfg.availRing);
    this.used = Number(cfg.usedRing);
  }

  /** used_event: after the available ring's `ring[size]` (§2.7.6). */
  private get usedEventAddr(): number {
    return this.avail + AVAIL_RING + 2 * this.size;
  }

  /** avail_event: after the used ring's `ring[size]` (§2.7.8). */
  private get availEventAddr(): number {
    return this.used + USED_RING + vring_used_elem.size * this.size;
  }

  /** True if the driver has made chains available that we have not popped (false once broken). */
  hasAvailable(): boolean {
    if (this.broken) return false;
    try {
      return this.mem.readU16(this.avail + AVAIL_IDX) !== this.nextAvail;
    } catch (e) {
      this.fail(e);
      return false;
    }
  }

  /** The next available chain, or undefined if there is none (or the queue is broken). */
  pop(): DescriptorChain | undefined {
    if (this.broken) return undefined;
    try {
      // With EVENT_IDX, ask to be notified when the driver publishes the slot after the ones we have
      // seen (§2.7.10). Written before reading avail.idx, so a chain added in between is either seen now
      // or notified.
      if (this.eventIdx) this.mem.writeU16(this.availEventAddr, this.nextAvail);
      const availIdx = this.mem.readU16(this.avail + AVAIL_IDX);
      const pending = (availIdx - this.nextAvail) & 0xffff;
      if (pending === 0) return undefined;
      if (pending > this.size) {
        throw new VirtqueueError(
          `available index moved from ${this.nextAvail} to ${availIdx}: ${pending} new chains, more than the queue size ${this.size}`,
        );
      }
      const head = this.mem.readU16(this.avail + AVAIL_RING + 2 * (this.nextAvail % this.size));
      const chain = this.walk(head);
      this.nextAvail = (this.nextAvail + 1) & 0xffff;
      this.inFlight++;
      return chain;
    } catch (e) {
      this.fail(e);
      return undefined;
    }
  }

  /**
   * Put back the last `count` chains popped and not pushed, to be popped again later: for a device that
   * took buffers and found it cannot use them yet (a received frame larger than the buffers available).
   * The chains are walked and checked again when popped again.
   */
  undoPop(count = 1): void {
    if (this.broken || count === 0) return;
    if (!Number.isInteger(count) || count < 0 || count > this.inFlight) {
      throw new Error(`queue ${this.index}: cannot undo ${count} pops with ${this.inFlight} chains in flight (device bug)`);
    }
    this.nextAvail = (this.nextAvail - count) & 0xffff;
    this.inFlight -= count;
  }

  /**
   * One round of request-response service, the shape of most devices' `process`: pop up to `size` chains,
   * hand each to `handle`, push it back with the byte count `handle` returns. True if more are waiting
   * (the transport then schedules another round, so one busy queue cannot hold the main thread).
   */
  serve(handle: (chain: DescriptorChain) => number): boolean {
    for (let n = 0; n < this.size; n++) {
      const chain = this.pop();
      if (!chain) return false;
      this.push(chain, handle(chain));
    }
    return this.hasAvailable();
  }

  /** Return a popped chain to the driver, saying how many bytes the device wrote into it (§2.7.8). */
  push(chain: DescriptorChain, written: number): void {
    if (this.broken) return;
    try {
      if (this.inFlight === 0) throw new VirtqueueError(`chain ${chain.head} pushed but none is in flight (device bug)`);
      // Never claim more than the chain's writable bytes (the used length is an upper bound the driver trusts).
      const len = Math.max(0, Math.min(written, chain.writableLength, 0xffffffff));
      const elem = this.used + USED_RING + vring_used_elem.size * (this.nextUsed % this.size);
      this.mem.writeU32(elem + USED_ELEM_ID, chain.head);
      this.mem.writeU32(elem + USED_ELEM_LEN, len);
      this.nextUsed = (this.nextUsed + 1) & 0xffff;
      this.mem.writeU16(this.used + USED_IDX, this.nextUsed);
      this.inFlight--;
    } catch (e) {
      this.fail(e);
    }
  }

  /**
   * Should the driver get a used-buffer interrupt for what was pushed since the last call (§2.7.7)?
   * With EVENT_IDX: only if used.idx passed used_event. Without: unless avail.flags has
   * VRING_AVAIL_F_NO_INTERRUPT.
   */
  needsInterrupt(): boolean {
    const old = this.signalledUsed;
    const now = this.nextUsed;
    if (old === now || this.broken) return false;
    this.signalledUsed = now;
    try {
      if (this.eventIdx) return vring_need_event(this.mem.readU16(this.usedEventAddr), now, old);
      return (this.mem.readU16(this.avail + AVAIL_FLAGS) & VRING_AVAIL_F_NO_INTERRUPT) === 0;
    } catch (e) {
      this.fail(e);
      return false;
    }
  }

  /** Follow a chain from `head`, checking every descriptor (see the rules at the top of the file). */
  private walk(head: number): DescriptorChain {
    if (head >= this.size) throw new VirtqueueError(`available ring names head descriptor ${head}, queue size is ${this.size}`);
    const readable: GuestBuffer[] = [];
    const writable: GuestBuffer[] = [];
    let table = this.desc;
    let tableSize = this.size;
    let index = head;
    let inIndirect = false;
    let visited = 0;
    const where = () => (inIndirect ? `indirect descriptor ${index}` : `descriptor ${index}`);
    for (;;) {
      if (index >= tableSize) throw new VirtqueueError(`chain ${head}: next index ${index} is past the ${tableSize}-entry table`);
      if (++visited > tableSize) throw new VirtqueueError(`chain ${head}: longer than ${tableSize} descriptors (a loop?)`);
      // One copy of the descriptor; the guest may rewrite the table meanwhile, we use only the copy.
      const d = new DataView(this.mem.read(table + vring_desc.size * index, vring_desc.size).buffer);
      const addr = d.getBigUint64(DESC_ADDR, true);
      const len = d.getUint32(DESC_LEN, true);
      const flags = d.getUint16(DESC_FLAGS, true);
      const next = d.getUint16(DESC_NEXT, true);
      const inRam = addr <= BigInt(Number.MAX_SAFE_INTEGER) && this.mem.contains(Number(addr), len);

      if (flags & VRING_DESC_F_INDIRECT) {
        // §2.7.5.3.1: only if negotiated, never inside an indirect table, never together with NEXT; the
        // table is a whole number of descriptors, and a chain is no longer than the queue size.
        if (!this.indirect) throw new VirtqueueError(`chain ${head}: ${where()} is INDIRECT but VIRTIO_RING_F_INDIRECT_DESC was not negotiated`);
        if (inIndirect) throw new VirtqueueError(`chain ${head}: ${where()} is INDIRECT inside an indirect table`);
        if (flags & VRING_DESC_F_NEXT) throw new VirtqueueError(`chain ${head}: ${where()} has both INDIRECT and NEXT`);
        if (len === 0 || len % vring_desc.size !== 0) throw new VirtqueueError(`chain ${head}: indirect table length ${len} is not a positive multiple of ${vring_desc.size}`);
        if (len / vring_desc.size > this.size) throw new VirtqueueError(`chain ${head}: indirect table of ${len / vring_desc.size} descriptors is longer than the queue size ${this.size}`);
        if (!inRam) throw new VirtqueueError(`chain ${head}: indirect table at ${hex(addr)}+${hex(len)} is not in guest RAM`);
        // The WRITE flag of the descriptor pointing at a table is ignored (§2.7.5.3.2).
        table = Number(addr);
        tableSize = len / vring_desc.size;
        index = 0;
        visited = 0;
        inIndirect = true;
        continue;
      }

      if (!inRam) throw new VirtqueueError(`chain ${head}: ${where()} buffer ${hex(addr)}+${hex(len)} is not in guest RAM`);
      if (flags & VRING_DESC_F_WRITE) {
        writable.push({ addr: Number(addr), len });
      } else {
        if (writable.length > 0) throw new VirtqueueError(`chain ${head}: ${where()} is device-readable after a device-writable one`);
        readable.push({ addr: Number(addr), len });
      }
      if (!(flags & VRING_DESC_F_NEXT)) break;
      index = next;
    }
    return new DescriptorChain(head, readable, writable, this.mem);
  }

  private fail(e: unknown): void {
    const message = `queue ${this.index}: ${e instanceof Error ? e.message : String(e)}`;
    if (this.broken) return;
    this.broken = message;
    this.onError(message);
  }
}
