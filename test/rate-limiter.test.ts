// The token bucket and rate limiter (src/devices/rate-limiter.ts) against a clock and timers the test
// moves by hand: refill rate, fractional carry, one-time burst, overdraft, blocking and unblocking, live
// updates.

import { describe, expect, test } from "bun:test";
import { measureCappedRead } from "../bench/rate-limiter.ts";
import { limitOutput, RateLimiter, REFILL_TIMER_MS, TokenBucket } from "../src/devices/rate-limiter.ts";
import { NET_HDR_SIZE, VirtioNet, type NetBackend } from "../src/devices/virtio/net.ts";
import { VirtioRng } from "../src/devices/virtio/rng.ts";
import { bit, VIRTIO_RING_F_EVENT_IDX } from "../src/devices/virtio/uapi.ts";
import { virtioSetup, waitFor } from "./support/virtio-driver.ts";

/** A clock and a timer queue that only move when the test says so. */
function fakeTime() {
  let now = 0;
  const timers: { at: number; fn: () => void; live: boolean }[] = [];
  return {
    clock: () => now,
    schedule: (fn: () => void, ms: number) => {
      const t = { at: now + ms, fn, live: true };
      timers.push(t);
      return () => void (t.live = false);
    },
    /** Advance to now+ms, firing due timers in order. */
    advance(ms: number) {
      const end = now + ms;
      for (;;) {
        const due = timers.filter((t) => t.live && t.at <= end).sort((a, b) => a.at - b.at)[0];
        if (!due) break;
        now = Math.max(now, due.at);
        due.live = false;
        due.fn();
      }
      now = end;
    },
    pending: () => timers.filter((t) => t.live).length,
  };
}

describe("TokenBucket", () => {
  test("size 0 or refill_time 0 is no bucket", () => {
    expect(TokenBucket.create({ size: 0, refill_time: 100 })).toBeUndefined();
    expect(TokenBucket.create({ size: 100, refill_time: 0 })).toBeUndefined();
    expect(TokenBucket.create(undefined)).toBeUndefined();
  });

  test("starts full, refills at size/refill_time, never above size", () => {
    const t = fakeTime();
    const b = TokenBucket.create({ size: 1000, refill_time: 1000 }, t.clock)!;
    expect(b.reduce(1000).kind).toBe("ok");
    expect(b.reduce(1).kind).toBe("empty");
    t.advance(250);
    expect(b.reduce(250).kind).toBe("ok");
    expect(b.reduce(1).kind).toBe("empty");
    t.advance(5000);
    expect(b.reduce(1000).kind).toBe("ok");
    expect(b.budget).toBe(0);
  });

  test("fractions of a token carry over between refills", () => {
    const t = fakeTime();
    // 3 tokens per 10 ms: 0.3 per ms.
    const b = TokenBucket.create({ size: 3, refill_time: 10 }, t.clock)!;
    b.reduce(3);
    let got = 0;
    for (let i = 0; i < 100; i++) {
      t.advance(1);
      while (b.reduce(1).kind === "ok") got++;
    }
    // 100 ms at 0.3 tokens/ms is 30 tokens, however the refills were sliced.
    expect(got).toBe(30);
  });

  test("the one-time burst is spent first and does not come back", () => {
    const t = fakeTime();
    const b = TokenBucket.create({ size: 100, one_time_burst: 500, refill_time: 1000 }, t.clock)!;
    expect(b.reduce(400).kind).toBe("ok");
    expect(b.oneTimeBurst).toBe(100);
    expect(b.reduce(150).kind).toBe("ok"); // 100 from the burst, 50 from the budget
    expect(b.oneTimeBurst).toBe(0);
    expect(b.budget).toBe(50);
    expect(b.config()).toEqual({ size: 100, one_time_burst: 500, refill_time: 1000 });
  });

  test("a request larger than the bucket passes once as an overdraft", () => {
    const t = fakeTime();
    const b = TokenBucket.create({ size: 100, refill_time: 1000 }, t.clock)!;
    expect(b.reduce(350)).toEqual({ kind: "overdraft", ratio: 2.5 });
    expect(b.budget).toBe(0);
  });
});

describe("RateLimiter", () => {
  test("no buckets: everything passes, no timer", () => {
    const t = fakeTime();
    const r = new RateLimiter(undefined, t);
    for (let i = 0; i < 1000; i++) expect(r.admit(1 << 20)).toBe(true);
    expect(t.pending()).toBe(0);
  });

  test("a refused request blocks until the refill timer, which calls onUnblocked", () => {
    const t = fakeTime();
    const r = new RateLimiter({ ops: { size: 2, refill_time: 1000 } }, t);
    let unblocked = 0;
    r.onUnblocked = () => unblocked++;
    expect(r.admit(0)).toBe(true);
    expect(r.admit(0)).toBe(true);
    expect(r.admit(0)).toBe(false);
    expect(r.blocked).toBe(true);
    expect(r.admit(0)).toBe(false); // blocked: refused without touching the buckets
    t.advance(REFILL_TIMER_MS - 1);
    expect(unblocked).toBe(0);
    t.advance(1);
    expect(unblocked).toBe(1);
    expect(r.blocked).toBe(false);
    // 100 ms of 2 ops/s is 0.2 of an op: still refused, blocks again.
    expect(r.admit(0)).toBe(false);
    t.advance(400);
    expect(r.admit(0)).toBe(true);
  });

  test("admit takes an op and the bytes, or neither", () => {
    const t = fakeTime();
    const r = new RateLimiter({ bandwidth: { size: 1000, refill_time: 1000 }, ops: { size: 10, refill_time: 1000 } }, t);
    expect(r.admit(800)).toBe(true);
    expect(r.admit(800)).toBe(false);
    // The op of the refused request was given back.
    expect(r.ops!.budget).toBe(9);
    expect(r.bandwidth!.budget).toBe(200);
  });

  test("an overdraft passes and blocks for the time it takes to repay", () => {
    const t = fakeTime();
    const r = new RateLimiter({ bandwidth: { size: 1000, refill_time: 100 } }, t);
    let unblocked = 0;
    r.onUnblocked = () => unblocked++;
    expect(r.admit(3000)).toBe(true); // 2000 over: 2 refills of 100 ms
    expect(r.admit(1)).toBe(false);
    t.advance(199);
    expect(unblocked).toBe(0);
    t.advance(1);
    expect(unblocked).toBe(1);
  });

  test("update replaces named buckets, keeps the others, and wakes a blocked device", () => {
    const t = fakeTime();
    const r = new RateLimiter({ bandwidth: { size: 10, refill_time: 1000 }, ops: { size: 5, refill_time: 1000 } }, t);
    let unblocked = 0;
    r.onUnblocked = () => unblocked++;
    expect(r.admit(20)).toBe(true); // overdraft
    expect(r.blocked).toBe(true);
    r.update({ bandwidth: { size: 1 << 20, refill_time: 1000 } });
    expect(r.blocked).toBe(false);
    t.advance(0);
    expect(unblocked).toBe(1);
    expect(r.config()).toEqual({ bandwidth: { size: 1 << 20, refill_time: 1000 }, ops: { size: 5, refill_time: 1000 } });
    r.update({ ops: { size: 0, refill_time: 0 } });
    expect(r.config()).toEqual({ bandwidth: { size: 1 << 20, refill_time: 1000 } });
    r.update({ bandwidth: { size: 0, refill_time: 0 } });
    expect(r.unlimited).toBe(true);
  });

  test("steady rate: 1 MiB/s over 5 simulated seconds in 64 KiB requests", () => {
    const t = fakeTime();
    const r = new RateLimiter({ bandwidth: { size: 1 << 20, refill_time: 1000 } }, t);
    let bytes = 0;
    const req = 64 << 10;
    r.onUnblocked = () => {
      while (r.admit(req)) bytes += req;
    };
    // Drain the initial full bucket, then measure 5 s.
    while (r.admit(req)) {}
    bytes = 0;
    t.advance(5000);
    expect(Math.abs(bytes - 5 * (1 << 20))).toBeLessThanOrEqual(req);
  });
});

// ---- through the device models ----


describe("devices under a rate limiter", () => {
  test("a drive capped at 1 MiB/s reads at 1 MiB/s (+-10%) over 2 s (bench/rate-limiter.ts runs 5 s)", async () => {
    const r = await measureCappedRead(2);
    expect(r.ratio).toBeGreaterThan(0.9);
    expect(r.ratio).toBeLessThan(1.1);
  }, 10_000);

  test("virtio-rng: requests over the ops budget wait on the queue and complete after the refill", async () => {
    const rng = new VirtioRng({ queueSize: 16, rateLimiter: { ops: { size: 2, refill_time: 200 } } });
    const s = virtioSetup(rng);
    // Without EVENT_IDX every used buffer asks for an interrupt.
    const [q] = s.driver.init({ accept: (f) => f & ~bit(VIRTIO_RING_F_EVENT_IDX) });
    q!.postWritable(4, 32);
    q!.kick();
    expect(q!.takeUsed().length).toBe(2);
    expect(rng.rateLimiter.blocked).toBe(true);
    const irqs = s.irq.count;
    // 200 ms refills both ops; the timer fires at 100 ms (one op), then again.
    await Bun.sleep(350);
    expect(q!.takeUsed().length).toBe(2);
    expect(s.irq.count).toBeGreaterThan(irqs);
    rng.close();
  });

  test("a live update lifts the limit for what already waits", async () => {
    const rng = new VirtioRng({ queueSize: 16, rateLimiter: { bandwidth: { size: 64, refill_time: 100_000 } } });
    const s = virtioSetup(rng);
    const [q] = s.driver.init();
    q!.postWritable(3, 64);
    q!.kick();
    expect(q!.takeUsed().length).toBe(1);
    rng.rateLimiter.update({ bandwidth: { size: 0, refill_time: 0 } });
    await Bun.sleep(20);
    expect(q!.takeUsed().length).toBe(2);
    rng.close();
  });
});

describe("serial output limit", () => {
  test("writes over budget are dropped whole and counted", () => {
    const t = fakeTime();
    const out: number[] = [];
    let dropped = 0;
    const write = limitOutput({ size: 100, refill_time: 1000 }, (b) => out.push(b.byteLength), { clock: t.clock, onDrop: (n) => (dropped += n) });
    write(new Uint8Array(60));
    write(new Uint8Array(60));
    write(new Uint8Array(40));
    expect(out).toEqual([60, 40]);
    expect(dropped).toBe(60);
    t.advance(1000);
    write(new Uint8Array(200)); // more than the bucket: an overdraft, dropped
    expect(dropped).toBe(260);
    const plain = (b: Uint8Array) => void b;
    expect(limitOutput(undefined, plain)).toBe(plain);
  });
});

describe("virtio-net under rate limiters", () => {
  class Backend implements NetBackend {
    readonly name = "rl0";
    written = 0;
    released = 0;
    onFrame?: (f: Uint8Array) => void;
    write(): void {
      this.written++;
    }
    setOffload(): void {}
    startReading(onFrame: (f: Uint8Array) => void): void {
      this.onFrame = onFrame;
    }
    releaseFrame(): void {
      this.released++;
    }
    close(): void {}
  }
  const frame = () => {
    const f = new Uint8Array(NET_HDR_SIZE + 60);
    f.fill(0xff, NET_HDR_SIZE, NET_HDR_SIZE + 6);
    return f;
  };

  test("tx: frames over the ops budget wait on the queue, then go out", async () => {
    const b = new Backend();
    const net = new VirtioNet(b, { queueSize: 16, txRateLimiter: { ops: { size: 2, refill_time: 100 } } });
    const s = virtioSetup(net);
    const [, tx] = s.driver.init();
    for (let i = 0; i < 4; i++) tx!.send([frame()]);
    tx!.kick();
    expect(b.written).toBe(2);
    expect(tx!.takeUsed().length).toBe(2);
    await waitFor(() => b.written === 4, "the waiting frames to go out", 2000);
    expect(tx!.takeUsed().length).toBe(2);
    await net.close();
  });

  test("rx: frames over the bandwidth budget wait in the pending queue, then arrive", async () => {
    const b = new Backend();
    const size = NET_HDR_SIZE + 60;
    const net = new VirtioNet(b, { queueSize: 16, rxRateLimiter: { bandwidth: { size: 2 * size, refill_time: 100 } } });
    const s = virtioSetup(net);
    const [rx] = s.driver.init();
    rx!.postWritable(8, 2048);
    rx!.kick();
    for (let i = 0; i < 4; i++) b.onFrame!(frame());
    expect(rx!.takeUsed().length).toBe(2);
    expect(net.pendingFrames).toBe(2);
    await waitFor(() => net.pendingFrames === 0, "the pending frames to be delivered", 2000);
    expect(rx!.takeUsed().length).toBe(2);
    expect(b.released).toBe(4);
    await net.close();
  });
});
