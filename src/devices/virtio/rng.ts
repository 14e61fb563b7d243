// virtio-rng, the entropy device (virtio 1.2 §5.4): the guest posts device-writable buffers on its one
// queue (requestq) and the device fills them with random bytes. No feature bits, no configuration space.
// Linux's hw_random/virtio-rng.c feeds what it gets into the kernel's entropy pool.
//
// The bytes come from crypto.getRandomValues (the host's CSPRNG). A request gets at most
// VIRTIO_RNG_MAX_BYTES_PER_REQUEST bytes however large its buffers: the used length says how many
// (§5.4.6.2: the device MAY fill less than the whole buffer).

import { RateLimiter, resumeOnUnblock, serveLimited, type RateLimiterConfig } from "../rate-limiter.ts";
import { checkKind, int } from "../state.ts";
import type { VirtioContext, VirtioDevice, VirtioDeviceState } from "./device.ts";
import type { DescriptorChain, Virtqueue } from "./queue.ts";
import { VIRTIO_ID_RNG } from "./uapi.ts";

export const VIRTIO_RNG_MAX_BYTES_PER_REQUEST = 64 * 1024;
/** crypto.getRandomValues fills at most 65536 bytes per call (Web Crypto, QuotaExceededError). */
const GET_RANDOM_VALUES_MAX = 65536;

/** No configuration, no pending work (requests are answered as they are popped): a counter. */
export type VirtioRngState = { kind: "virtio-rng"; bytesServed: number };

export class VirtioRng implements VirtioDevice {
  readonly name = "virtio-rng";
  readonly deviceId = VIRTIO_ID_RNG;
  readonly deviceFeatures = 0n;
  readonly queueMaxSizes: readonly number[];
  /** Random bytes handed to the guest, for metrics and tests. */
  bytesServed = 0;
  private queue: Virtqueue | undefined;
  private ctx: VirtioContext | undefined;
  /** Firecracker's entropy `rate_limiter`: bytes and requests; requests over budget wait on the queue. */
  readonly rateLimiter: RateLimiter;

  constructor(opts: { queueSize?: number; rateLimiter?: RateLimiterConfig } = {}) {
    this.queueMaxSizes = [opts.queueSize ?? 256];
    this.rateLimiter = new RateLimiter(opts.rateLimiter);
    this.rateLimiter.onUnblocked = resumeOnUnblock(() => this.ctx, () => this.process(0));
  }

  readConfig(_offset: number, data: Uint8Array): void {
    data.fill(0);
  }

  writeConfig(): void {}

  activate(ctx: VirtioContext): void {
    const q = ctx.queues[0];
    if (!q) throw new Error("queue 0 (requestq) is not ready");
    this.queue = q;
    this.ctx = ctx;
  }

  reset(): void {
    this.queue = undefined;
    this.ctx = undefined;
  }

  close(): void {
    this.rateLimiter.close();
  }

  describe(): VirtioRngState {
    return { kind: "virtio-rng", bytesServed: this.bytesServed };
  }

  restore(s: VirtioDeviceState): void {
    checkKind(this.name, s, "virtio-rng");
    this.bytesServed = int(this.name, "bytesServed", s.bytesServed, 0, Number.MAX_SAFE_INTEGER);
  }

  process(_queueIndex: number): boolean {
    const q = this.queue;
    if (!q) return false;
    const cost = (c: DescriptorChain) => Math.min(c.writableLength, VIRTIO_RNG_MAX_BYTES_PER_REQUEST);
    return serveLimited(q, this.rateLimiter, cost, (chain) => {
      // Device-readable buffers carry nothing for this device and are ignored.
      const len = Math.min(chain.writableLength, VIRTIO_RNG_MAX_BYTES_PER_REQUEST);
      for (const s of chain.writableSlices(0, len)) {
        for (let at = 0; at < s.byteLength; at += GET_RANDOM_VALUES_MAX) {
          crypto.getRandomValues(s.subarray(at, Math.min(s.byteLength, at + GET_RANDOM_VALUES_MAX)));
        }
      }
      this.bytesServed += len;
      return len;
    });
  }
}
