// The port-IO bus and the MMIO bus: each maps address ranges to the devices that claim them.
//
// When the guest touches a port or an MMIO address that KVM does not handle itself, the vCPU exits with
// KVM_EXIT_IO or KVM_EXIT_MMIO, and the VMM looks the address up here. A device sees the offset inside its
// own range and a byte buffer of the access size: it fills the buffer on a read and decodes it on a write.
//
// Ranges may not overlap (registering one that does is an error). An access nobody claims is counted and
// logged once per address; reads of it return all-ones, as on a real bus with nothing driving it. The guest
// chooses those addresses, so both are bounded: counts are kept for the first UNCLAIMED_TRACKED_MAX
// addresses (the rest share one counter), and the log lines go through a rate limit (src/rate-limit.ts).

import { rateLimitedLog } from "./rate-limit.ts";

/** Something on a bus. `data.length` is the access size: 1, 2, 4 or 8 bytes. */
export interface BusDevice {
  /** Short name for logs and traces: "8250", "i8042", "virtio-blk". */
  readonly name: string;
  read(offset: number, data: Uint8Array): void;
  write(offset: number, data: Uint8Array): void;
  /** The register an offset names, for traces (`LSR`, `QueueNotify`); optional. */
  registerName?(offset: number, isWrite: boolean): string | undefined;
  /**
   * Set when the vCPU's own thread may complete this device's accesses, without waking the main thread
   * (src/vcpu/local.ts): the device is one of the kinds below and any state it has is in shared memory.
   * Its read and write must do what the kind says, for the accesses that do reach the main thread (an
   * exit trace, which wants every exit, turns the vCPU-thread path off) and for replay.
   */
  readonly onVcpuThread?: VcpuThreadModel;
}

/**
 * The device kinds a vCPU thread completes itself, implemented once in src/vcpu/local.ts:
 *   sink     writes are dropped; reads return `fill` in every byte (port 0x80, Linux's I/O delay)
 *   counter  writes are counted, with the times of the first and the last, in `state` as a BigInt64Array
 *            [count, first, last] (ns on performance.timeOrigin + performance.now()'s clock, the same on
 *            every thread), updated atomically so that two vCPUs writing at once are both counted; reads
 *            return zeros (the exit benchmark's devices)
 */
export type VcpuThreadModel = { kind: "sink"; fill: number } | { kind: "counter"; state: SharedArrayBuffer };

/** An interrupt line a device raises: an irqfd-backed eventfd on a real VM, a counter in unit tests. */
export interface InterruptLine {
  readonly gsi: number;
  trigger(): void;
}

interface Range {
  readonly base: number;
  readonly size: number;
  readonly device: BusDevice;
}

/** Unclaimed addresses counted one by one; accesses to further addresses are only counted together. */
export const UNCLAIMED_TRACKED_MAX = 256;

export class BusError extends Error {
  override name = "BusError";
}

export class Bus {
  private ranges: Range[] = [];
  /** Unclaimed accesses by address (at most UNCLAIMED_TRACKED_MAX addresses), so each is logged once. */
  readonly unclaimed = new Map<number, number>();
  /** Unclaimed accesses to addresses beyond the first UNCLAIMED_TRACKED_MAX. */
  unclaimedUntracked = 0;
  private readonly log: (msg: string) => void;

  constructor(
    /** "pio" or "mmio", used in messages. */
    readonly kind: "pio" | "mmio",
    log: (msg: string) => void = () => {},
  ) {
    this.log = rateLimitedLog(log);
  }

  register(base: number, size: number, device: BusDevice): void {
    if (size <= 0 || !Number.isSafeInteger(base) || !Number.isSafeInteger(size)) {
      throw new BusError(`${this.kind}: bad range 0x${base.toString(16)}+${size} for ${device.name}`);
    }
    for (const r of this.ranges) {
      if (base < r.base + r.size && r.base < base + size) {
        throw new BusError(
          `${this.kind}: ${device.name} at 0x${base.toString(16)}-0x${(base + size - 1).toString(16)} overlaps ` +
            `${r.device.name} at 0x${r.base.toString(16)}-0x${(r.base + r.size - 1).toString(16)}`,
        );
      }
    }
    this.ranges.push({ base, size, device });
    this.ranges.sort((a, b) => a.base - b.base);
  }

  /** The device whose range holds `addr`, and the offset inside it (binary search: ranges are sorted). */
  find(addr: number): { device: BusDevice; offset: number } | undefined {
    let lo = 0;
    let hi = this.ranges.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const r = this.ranges[mid]!;
      if (addr < r.base) hi = mid - 1;
      else if (addr >= r.base + r.size) lo = mid + 1;
      else return { device: r.device, offset: addr - r.base };
    }
    return undefined;
  }

  /** The ranges whose devices a vCPU thread may serve itself (src/vcpu/local.ts), in address order. */
  vcpuThreadRanges(): { base: number; size: number; model: VcpuThreadModel }[] {
    return this.ranges.flatMap((r) => (r.device.onVcpuThread ? [{ base: r.base, size: r.size, model: r.device.onVcpuThread }] : []));
  }

  /** Every registered range, in address order (for --explain and the docs). */
  list(): { base: number; size: number; name: string }[] {
    return this.ranges.map((r) => ({ base: r.base, size: r.size, name: r.device.name }));
  }

  read(addr: number, data: Uint8Array): BusDevice | undefined {
    const hit = this.find(addr);
    if (!hit) {
      data.fill(0xff);
      this.miss(addr, data.length, "read");
      return undefined;
    }
    hit.device.read(hit.offset, data);
    return hit.device;
  }

  write(addr: number, data: Uint8Array): BusDevice | undefined {
    const hit = this.find(addr);
    if (!hit) {
      this.miss(addr, data.length, "write");
      return undefined;
    }
    hit.device.write(hit.offset, data);
    return hit.device;
  }

  private miss(addr: number, size: number, what: string): void {
    const n = this.unclaimed.get(addr);
    if (n !== undefined) {
      this.unclaimed.set(addr, n + 1);
      return;
    }
    if (this.unclaimed.size >= UNCLAIMED_TRACKED_MAX) {
      if (this.unclaimedUntracked++ === 0) this.log(`${this.kind}: unclaimed accesses at more than ${UNCLAIMED_TRACKED_MAX} addresses; counting the rest together`);
      return;
    }
    this.unclaimed.set(addr, 1);
    this.log(`${this.kind}: unclaimed ${size}-byte ${what} at 0x${addr.toString(16)} (logged once per address)`);
  }
}
