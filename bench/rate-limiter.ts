// Rate-limiter throughput: a virtio-blk drive with a `rate_limiter` bandwidth bucket, read as fast as a
// driver can ask, through the device model and the virtio-mmio transport (the test driver of
// test/support/virtio-driver.ts writes real rings into guest memory; no KVM, no guest kernel). The driver
// keeps 8 reads of 16 KiB in flight and re-posts each one as it completes; the limiter's refill timer does
// the pacing. The bucket starts full (Firecracker's buckets do), so the clock starts when that first
// bucketful is spent (the first request the limiter refuses) and runs for `seconds`.
// Usage: bun bench/rate-limiter.ts [--seconds 5] [--bytes-per-second 1048576] [--json]

import type { RateLimiterConfig } from "../src/devices/rate-limiter.ts";
import { VirtioBlock, type BlockBackend } from "../src/devices/virtio/block.ts";
import * as V from "../src/devices/virtio/uapi.ts";
import { StructView } from "../src/kvm/struct.ts";
import { GuestMemory } from "../src/memory.ts";
import { virtioSetup } from "../test/support/virtio-driver.ts";

/** A 1 GiB disk of zeros that costs nothing to read. */
class ZeroBackend implements BlockBackend {
  readonly size = 1 << 30;
  readonly readOnly = true;
  read(buf: Uint8Array): void {
    buf.fill(0);
  }
  write(): void {
    throw new Error("read-only");
  }
  flush(): void {}
  close(): void {}
}

export interface CappedReadResult {
  /** The configured rate, bytes per second. */
  cap: number;
  seconds: number;
  bytes: number;
  /** bytes / seconds. */
  rate: number;
  /** rate / cap. */
  ratio: number;
}

const REQUEST = 16 * 1024;
const IN_FLIGHT = 8;

/** Read a drive capped at `cap` bytes per second (bucket of `cap` bytes refilled in 1000 ms) for `seconds`. */
export async function measureCappedRead(seconds: number, cap = 1 << 20): Promise<CappedReadResult> {
  const limiter: RateLimiterConfig = { bandwidth: { size: cap, refill_time: 1000 } };
  const blk = new VirtioBlock(new ZeroBackend(), { queueSize: 32, rateLimiter: limiter });
  const s = virtioSetup(blk, GuestMemory.plain([{ gpa: 0, size: 4 << 20 }]));
  const [q] = s.driver.init();
  if (!q) throw new Error("no queue");
  let sector = 0;
  const post = () => {
    const hdr = s.alloc.alloc(V.virtio_blk_outhdr.size);
    s.mem.write(hdr, new StructView(V.virtio_blk_outhdr).assign({ type: V.VIRTIO_BLK_T_IN, ioprio: 0, sector: BigInt(sector) }).bytes);
    sector = (sector + REQUEST / V.SECTOR_SIZE) % (blk.capacity - REQUEST / V.SECTOR_SIZE);
    return hdr;
  };
  // Each slot: a header, a 64 KiB buffer and a status byte, reused for every request it carries.
  const slots = Array.from({ length: IN_FLIGHT }, () => ({ hdr: post(), data: s.alloc.alloc(REQUEST), status: s.alloc.alloc(1) }));
  const heads = new Map<number, (typeof slots)[number]>();
  const submit = (slot: (typeof slots)[number]) => {
    const head = q.add([
      { addr: slot.hdr, len: V.virtio_blk_outhdr.size },
      { addr: slot.data, len: REQUEST, write: true },
      { addr: slot.status, len: 1, write: true },
    ]);
    heads.set(head, slot);
  };
  for (const slot of slots) submit(slot);
  q.kick();

  let start = -1;
  let bytes = 0;
  let end = Infinity;
  for (;;) {
    await Bun.sleep(2);
    const now = performance.now();
    if (start < 0 && blk.rateLimiter.blocked) {
      // The first bucketful is spent: measure from here.
      start = now;
      end = start + seconds * 1000;
      bytes = 0;
    }
    for (const u of q.takeUsed()) {
      const slot = heads.get(u.id)!;
      heads.delete(u.id);
      if (s.mem.readU8(slot.status) !== V.VIRTIO_BLK_S_OK) throw new Error(`read failed with status ${s.mem.readU8(slot.status)}`);
      if (start >= 0 && now <= end) bytes += u.len - 1;
      submit(slot);
    }
    q.kick();
    if (now >= end) break;
  }
  blk.close();
  const rate = bytes / seconds;
  return { cap, seconds, bytes, rate, ratio: rate / cap };
}

if (import.meta.main) {
  const args = process.argv.slice(2);
  const opt = (name: string, dflt: number) => {
    const i = args.indexOf(name);
    return i >= 0 ? Number(args[i + 1]) : dflt;
  };
  const r = await measureCappedRead(opt("--seconds", 5), opt("--bytes-per-second", 1 << 20));
  if (args.includes("--json")) console.log(JSON.stringify(r));
  else {
    console.log(`drive capped at ${(r.cap / (1 << 20)).toFixed(3)} MiB/s: read ${(r.bytes / (1 << 20)).toFixed(3)} MiB in ${r.seconds} s = ` +
      `${(r.rate / (1 << 20)).toFixed(3)} MiB/s (${((r.ratio - 1) * 100).toFixed(1)}% from the cap)`);
  }
}
