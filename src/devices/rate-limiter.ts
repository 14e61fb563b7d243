// Rate limiting for device I/O, with Firecracker's token-bucket semantics (its src/vmm/src/rate_limiter).
//
// A RateLimiter has up to two token buckets: `bandwidth` (one token per byte) and `ops` (one token per
// request). Each bucket is configured as Firecracker's TokenBucket: `size` tokens of capacity, refilled
// from empty to full in `refill_time` milliseconds (so size / refill_time tokens per ms), plus
// `one_time_burst` extra tokens that are spent first and never come back. A bucket with size 0 or
// refill_time 0 is no bucket: that kind of limiting is off. A bucket starts full.
//
// Refill is lazy: a bucket adds the tokens earned since its last update only when a request does not fit
// in what it has (Firecracker's auto_replenish), carrying the fraction of a token not yet earned over to
// the next time, so that many small refills add up to the exact rate.
//
// A request that does not fit blocks the limiter: the device leaves the request where it was (on its
// queue), and a timer (100 ms, Firecracker's REFILL_TIMER_DURATION) unblocks it and calls the device's
// `onUnblocked` to try again. A request larger than the whole bucket is let through once (it could never
// fit otherwise) and blocks the limiter for as long as the overdraft takes to refill
// (Firecracker's BucketReduction::OverConsumption). Nothing busy-waits: the main thread is free while a
// limiter is blocked.

/** One token bucket's configuration, as Firecracker's TokenBucket object (all integers). */
export interface TokenBucketConfig {
  size: number;
  one_time_burst?: number;
  /** Milliseconds to refill from empty to `size`. */
  refill_time: number;
}

/** Firecracker's RateLimiter object: either bucket may be absent. */
export interface RateLimiterConfig {
  bandwidth?: TokenBucketConfig;
  ops?: TokenBucketConfig;
}

/** Time in milliseconds (performance.now() by default); tests give their own. */
export type Clock = () => number;
/** Run `fn` after `ms`; returns a cancel function. Default: setTimeout. */
export type Scheduler = (fn: () => void, ms: number) => () => void;

/** Firecracker's REFILL_TIMER_DURATION: how long a blocked limiter waits before trying again. */
export const REFILL_TIMER_MS = 100;

const defaultClock: Clock = () => performance.now();
const defaultScheduler: Scheduler = (fn, ms) => {
  const t = setTimeout(fn, ms);
  return () => clearTimeout(t);
};

/** The result of TokenBucket.reduce: "ok", "empty" (not enough tokens), or the overdraft ratio. */
export type Reduction = { kind: "ok" } | { kind: "empty" } | { kind: "overdraft"; ratio: number };

export class TokenBucket {
  readonly size: number;
  readonly initialOneTimeBurst: number;
  readonly refillTimeMs: number;
  /** Tokens spent before the budget; never refilled. */
  oneTimeBurst: number;
  /** Current tokens, 0..size. */
  budget: number;
  private lastUpdate: number;

  /** A bucket, or undefined when `size` or `refill_time` is 0 (that limit is off). */
  static create(cfg: TokenBucketConfig | undefined, clock: Clock = defaultClock): TokenBucket | undefined {
    if (!cfg || cfg.size === 0 || cfg.refill_time === 0) return undefined;
    return new TokenBucket(cfg, clock);
  }

  private constructor(
    cfg: TokenBucketConfig,
    private readonly clock: Clock,
  ) {
    for (const [k, v] of Object.entries(cfg)) {
      if (v !== undefined && (!Number.isSafeInteger(v) || v < 0)) throw new RangeError(`token bucket ${k} ${v} is not a non-negative integer`);
    }
    this.size = cfg.size;
    this.refillTimeMs = cfg.refill_time;
    this.initialOneTimeBurst = cfg.one_time_burst ?? 0;
    this.oneTimeBurst = this.initialOneTimeBurst;
    this.budget = this.size;
    this.lastUpdate = clock();
  }

  /** The configuration this bucket was made from (one_time_burst only when it had one, as Firecracker). */
  config(): TokenBucketConfig {
    const c: TokenBucketConfig = { size: this.size, refill_time: this.refillTimeMs };
    if (this.initialOneTimeBurst) c.one_time_burst = this.initialOneTimeBurst;
    return c;
  }

  /** Add the tokens earned since the last update (Firecracker's auto_replenish). */
  private replenish(): void {
    const now = this.clock();
    const elapsed = now - this.lastUpdate;
    if (elapsed >= this.refillTimeMs) {
      this.budget = this.size;
      this.lastUpdate = now;
      return;
    }
    const tokens = Math.floor((elapsed * this.size) / this.refillTimeMs);
    if (tokens <= 0) return;
    // Advance by the time those whole tokens took: the fraction of the next one carries over.
    this.lastUpdate += (tokens * this.refillTimeMs) / this.size;
    this.budget = Math.min(this.budget + tokens, this.size);
  }

  /** Take `tokens` (Firecracker's reduce). */
  reduce(tokens: number): Reduction {
    if (this.oneTimeBurst > 0) {
      if (this.oneTimeBurst >= tokens) {
        this.oneTimeBurst -= tokens;
        this.lastUpdate = this.clock();
        return { kind: "ok" };
      }
      tokens -= this.oneTimeBurst;
      this.oneTimeBurst = 0;
    }
    if (tokens > this.budget) {
      this.replenish();
      if (tokens > this.size) {
        // Larger than the bucket can ever hold: let it through, empty the bucket, report the overdraft.
        const over = tokens - this.budget;
        this.budget = 0;
        return { kind: "overdraft", ratio: over / this.size };
      }
      if (tokens > this.budget) return { kind: "empty" };
    }
    this.budget -= tokens;
    return { kind: "ok" };
  }

  /** Give tokens back (a request that took them could not be carried out after all). */
  forceReplenish(tokens: number): void {
    if (this.oneTimeBurst > 0) {
      this.oneTimeBurst = Math.min(this.oneTimeBurst + tokens, this.initialOneTimeBurst);
      return;
    }
    this.budget = Math.min(this.budget + tokens, this.size);
  }
}

export type TokenType = "bandwidth" | "ops";

export interface RateLimiterOptions {
  clock?: Clock;
  schedule?: Scheduler;
}

export class RateLimiter {
  bandwidth: TokenBucket | undefined;
  ops: TokenBucket | undefined;
  /** Called when the refill timer fires: the device retries what it left waiting. */
  onUnblocked: () => void = () => {};
  /** Requests let through and refused, for tests and metrics. */
  readonly counters = { throttled: 0 };
  private readonly clock: Clock;
  private readonly schedule: Scheduler;
  private cancelTimer: (() => void) | undefined;

  constructor(cfg?: RateLimiterConfig, opts: RateLimiterOptions = {}) {
    this.clock = opts.clock ?? defaultClock;
    this.schedule = opts.schedule ?? defaultScheduler;
    this.bandwidth = TokenBucket.create(cfg?.bandwidth, this.clock);
    this.ops = TokenBucket.create(cfg?.ops, this.clock);
  }

  /** True while a request was refused and the refill timer has not fired yet. */
  get blocked(): boolean {
    return this.cancelTimer !== undefined;
  }

  /** True when neither bucket exists: every request passes. */
  get unlimited(): boolean {
    return !this.bandwidth && !this.ops;
  }

  /** Take `tokens` of one kind (Firecracker's consume). False: wait for onUnblocked. */
  consume(tokens: number, type: TokenType): boolean {
    if (this.blocked) return false;
    const bucket = type === "bandwidth" ? this.bandwidth : this.ops;
    if (!bucket) return true;
    const r = bucket.reduce(tokens);
    if (r.kind === "ok") return true;
    if (r.kind === "empty") {
      this.block(REFILL_TIMER_MS);
      return false;
    }
    // The request passes, but nothing more until the overdraft has refilled.
    this.block(r.ratio * bucket.refillTimeMs);
    return true;
  }

  /** Give back tokens taken by consume() (Firecracker's manual_replenish). */
  replenish(tokens: number, type: TokenType): void {
    (type === "bandwidth" ? this.bandwidth : this.ops)?.forceReplenish(tokens);
  }

  /**
   * One request of `bytes` bytes: one `ops` token and `bytes` bandwidth tokens, or neither (the ops
   * token is given back if the bytes do not fit), as Firecracker's devices do. False: leave the request
   * for later; onUnblocked will be called.
   */
  admit(bytes: number): boolean {
    if (this.unlimited) return true;
    if (!this.consume(1, "ops")) {
      this.counters.throttled++;
      return false;
    }
    if (!this.consume(bytes, "bandwidth")) {
      this.replenish(1, "ops");
      this.counters.throttled++;
      return false;
    }
    return true;
  }

  /** Give back what admit(bytes) took (the request could not be carried out after all). */
  refund(bytes: number): void {
    this.replenish(1, "ops");
    this.replenish(bytes, "bandwidth");
  }

  /**
   * PATCH: replace the buckets the update names (a bucket with size or refill_time 0 turns that limit
   * off); a bucket the update leaves out stays as it is. New buckets start full, as Firecracker's.
   */
  update(cfg: RateLimiterConfig | undefined): void {
    if (!cfg) return;
    if (cfg.bandwidth !== undefined) this.bandwidth = TokenBucket.create(cfg.bandwidth, this.clock);
    if (cfg.ops !== undefined) this.ops = TokenBucket.create(cfg.ops, this.clock);
    // A limiter waiting on a bucket that is now larger or gone should try again now.
    if (this.blocked) {
      this.cancelTimer!();
      this.cancelTimer = undefined;
      this.schedule(() => this.onUnblocked(), 0);
    }
  }

  /** The configuration, as Firecracker reports it (buckets that exist). */
  config(): RateLimiterConfig {
    const c: RateLimiterConfig = {};
    if (this.bandwidth) c.bandwidth = this.bandwidth.config();
    if (this.ops) c.ops = this.ops.config();
    return c;
  }

  /** Stop the timer (the device is reset or closed). */
  close(): void {
    this.cancelTimer?.();
    this.cancelTimer = undefined;
  }

  private block(ms: number): void {
    if (this.cancelTimer) return;
    this.cancelTimer = this.schedule(() => {
      this.cancelTimer = undefined;
      this.onUnblocked();
    }, Math.max(0, ms));
  }
}

// ---- use on a virtqueue ----

/** The parts of a virtqueue serveLimited needs (src/devices/virtio/queue.ts's Virtqueue). */
interface LimitedQueue<C> {
  readonly size: number;
  pop(): C | undefined;
  undoPop(count?: number): void;
  push(chain: C, written: number): void;
  hasAvailable(): boolean;
}

/**
 * Virtqueue.serve with a rate limiter: each chain is admitted with `cost(chain)` bytes before `handle`
 * runs; a chain over budget is put back on the queue (undoPop) and the round ends, to be taken up again
 * when the limiter calls onUnblocked. Returns true if more chains wait and the limiter is not blocked.
 */
export function serveLimited<C>(q: LimitedQueue<C>, limiter: RateLimiter, cost: (chain: C) => number, handle: (chain: C) => number): boolean {
  for (let n = 0; n < q.size; n++) {
    const chain = q.pop();
    if (!chain) return false;
    if (!limiter.admit(cost(chain))) {
      q.undoPop(1);
      return false;
    }
    q.push(chain, handle(chain));
  }
  return q.hasAvailable();
}

/**
 * What a device's limiter does when it unblocks: if the device is still running, process the queue
 * again and raise the used-buffer interrupt (the transport only does that after a notify), and keep going
 * on the next turn of the event loop while chains wait.
 */
export function resumeOnUnblock(
  ctx: () => { running(): boolean; signalUsed(): void; fail(message: string): void } | undefined,
  process: () => boolean,
): () => void {
  const resume = (): void => {
    const c = ctx();
    if (!c?.running()) return;
    let more = false;
    try {
      more = process();
    } catch (e) {
      c.fail(`processing after the rate limiter unblocked: ${e instanceof Error ? e.message : String(e)}`);
      return;
    }
    c.signalUsed();
    if (more) setImmediate(resume);
  };
  return resume;
}

/**
 * The serial console's `rate_limiter` (Firecracker's SerialOut): one bandwidth bucket on the bytes the
 * guest writes. A UART cannot make the guest wait, so a write over budget is dropped whole and counted,
 * as Firecracker does (its rate_limiter_dropped_bytes metric); an overdraft is dropped too.
 */
export function limitOutput(
  cfg: TokenBucketConfig | undefined,
  sink: (bytes: Uint8Array) => void,
  opts: { clock?: Clock; onDrop?: (bytes: number) => void } = {},
): (bytes: Uint8Array) => void {
  const bucket = TokenBucket.create(cfg, opts.clock);
  if (!bucket) return sink;
  return (bytes) => {
    if (bucket.reduce(bytes.byteLength).kind === "ok") sink(bytes);
    else opts.onDrop?.(bytes.byteLength);
  };
}
