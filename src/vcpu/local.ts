// Exits the vCPU's own thread completes, without waking the main thread. A hand-off to the main thread and
// back costs more than the exit itself on some hosts (bench/README.md, exit round trip): for a device
// whose accesses need no host I/O and whose state, if any, lives in shared memory, the worker reads the
// access out of kvm_run, does what the device's kind says (bus.ts, VcpuThreadModel) and enters KVM_RUN
// again at once. Everything else (and everything, while an exit trace is attached: CONTROL.LOCAL is 0)
// goes to the main thread as before.
//
// The kinds are implemented here once, for both threads: a ModelServer is what the worker runs, and what a
// device's own read/write call on the main thread. This file runs in the worker: it imports no values.

import type { VcpuThreadModel } from "../bus.ts";
import type { LocalExitsInit, LocalRange } from "./protocol.ts";

/** The clock counters use: ns since the Unix epoch, the same on every thread (performance.now() is not). */
export function nowNs(): bigint {
  return BigInt(Math.round((performance.timeOrigin + performance.now()) * 1e6));
}

/** A device of one of the kinds, on one thread: its shared state viewed once. */
export class ModelServer {
  private readonly counter?: BigInt64Array;

  constructor(readonly model: VcpuThreadModel) {
    if (model.kind === "counter") this.counter = new BigInt64Array(model.state, 0, 3);
  }

  /** Complete one access of `data.length` bytes (data is filled in for a read). */
  serve(write: boolean, data: Uint8Array): void {
    this.serveAt(write, data, 0, data.length);
  }

  /** The same for the `size` bytes at `at` in `bytes`: the worker's path, which makes no subarray per exit. */
  serveAt(write: boolean, bytes: Uint8Array, at: number, size: number): void {
    const m = this.model;
    if (m.kind === "sink") {
      if (!write) bytes.fill(m.fill, at, at + size);
      return;
    }
    if (!write) {
      bytes.fill(0, at, at + size);
      return;
    }
    const c = this.counter!;
    const t = nowNs();
    if (Atomics.add(c, 0, 1n) === 0n) Atomics.store(c, 1, t);
    // Two vCPUs writing at once may store their times out of order by a few ns: fine for a first/last clock.
    Atomics.store(c, 2, t);
  }
}

type Served = { base: number; end: number; server: ModelServer };

function find(ranges: Served[], addr: number): ModelServer | undefined {
  for (const r of ranges) if (addr >= r.base && addr < r.end) return r.server;
  return undefined;
}

const serversFor = (ranges: LocalRange[]): Served[] => ranges.map((r) => ({ base: r.base, end: r.base + r.size, server: new ModelServer(r.model) }));

/** A little-endian u64 field of kvm_run as a number, without a BigInt (KVM's addresses and offsets fit). */
const u64 = (dv: DataView, at: number) => dv.getUint32(at, true) + dv.getUint32(at + 4, true) * 2 ** 32;

/**
 * The worker's side: given the exit KVM_RUN just returned 0 for, complete it here if it is local. It runs
 * once per exit, so it allocates nothing of its own (no BigInt for kvm_run's u64 fields, no subarray per
 * access): a garbage collection in the worker stops that vCPU. (A counter's clock is a BigInt: measured,
 * 2 collections per 200,000 exits instead of 5.)
 */
export class LocalExits {
  private readonly bytes: Uint8Array;
  private readonly dv: DataView;
  private readonly counts: Int32Array;
  private readonly pio: Served[];
  private readonly mmio: Served[];
  private readonly off: LocalExitsInit["off"];
  private readonly exitIo: number;
  private readonly exitMmio: number;
  private readonly ioOut: number;

  constructor(init: LocalExitsInit, run: ArrayBuffer) {
    this.bytes = new Uint8Array(run);
    this.dv = new DataView(run);
    this.counts = new Int32Array(init.counts);
    this.pio = serversFor(init.pio);
    this.mmio = serversFor(init.mmio);
    this.off = init.off;
    this.exitIo = init.exitIo;
    this.exitMmio = init.exitMmio;
    this.ioOut = init.ioOut;
  }

  /** True when the exit in kvm_run was completed here (the guest may run again), false to hand it over. */
  serve(): boolean {
    const off = this.off;
    const reason = this.dv.getUint32(off.exit_reason, true);
    if (reason === this.exitIo) {
      const r = find(this.pio, this.dv.getUint16(off.io_port, true));
      if (!r) return false;
      const size = this.bytes[off.io_size]!;
      const count = this.dv.getUint32(off.io_count, true);
      const at = u64(this.dv, off.io_data_offset);
      if (at + count * size > this.bytes.byteLength) return false; // the main thread reports it
      const write = this.bytes[off.io_direction] === this.ioOut;
      // `rep outs`/`rep ins`: `count` accesses back to back in the data area, as Vcpu.handleExit does.
      for (let i = 0; i < count; i++) r.serveAt(write, this.bytes, at + i * size, size);
      Atomics.add(this.counts, 0, 1);
      return true;
    }
    if (reason === this.exitMmio) {
      const r = find(this.mmio, u64(this.dv, off.mmio_phys_addr));
      if (!r) return false;
      const len = Math.min(this.dv.getUint32(off.mmio_len, true), 8);
      r.serveAt(this.bytes[off.mmio_is_write] !== 0, this.bytes, off.mmio_data, len);
      Atomics.add(this.counts, 1, 1);
      return true;
    }
    return false;
  }
}
