// Rate limits for what a guest can make the VMM do without bound: write log lines, fill the serial output.
//
// A token bucket (the shape Firecracker's rate limiters have, and its serial console output limiter in
// 1.16): it holds at most `capacity` tokens and gains `refillPerSecond` of them per second; an action that
// costs n tokens happens only when n are there. A burst up to the capacity passes at once, a sustained flow
// is held to the refill rate, and nothing is ever queued: what is over the limit is dropped and counted.
//
// rateLimitedLog() wraps a log function in one bucket: a guest that makes the same mistake a million times
// a second costs a few lines a second, and the first line after a quiet spell says how many were dropped.

export class TokenBucket {
  private tokens: number;
  private last: number;

  constructor(
    /** The most tokens it holds: the largest burst. */
    readonly capacity: number,
    /** Tokens gained per second. */
    readonly refillPerSecond: number,
    /** The clock, in milliseconds (tests pass their own). */
    private readonly now: () => number = () => performance.now(),
  ) {
    if (!(capacity > 0) || !(refillPerSecond >= 0)) throw new Error(`token bucket: capacity ${capacity} and refill ${refillPerSecond} must be positive`);
    this.tokens = capacity;
    this.last = now();
  }

  private refill(): void {
    const t = this.now();
    this.tokens = Math.min(this.capacity, this.tokens + ((t - this.last) / 1000) * this.refillPerSecond);
    this.last = t;
  }

  /** Take `n` tokens if there are that many (true), or none (false). */
  take(n = 1): boolean {
    this.refill();
    if (this.tokens < n) return false;
    this.tokens -= n;
    return true;
  }

  /** Take as many of `n` tokens as there are, whole ones; returns how many were taken. */
  takeUpTo(n: number): number {
    this.refill();
    const got = Math.min(n, Math.floor(this.tokens));
    this.tokens -= got;
    return got;
  }
}

/** Log lines a guest can cause, per source (a device, a bus): a burst of 20 lines, then 5 a second. */
export const GUEST_LOG_BURST = 20;
export const GUEST_LOG_PER_SECOND = 5;

/**
 * Guest console bytes written to serial_out_path: a burst of 1 MiB (a whole boot log), then 64 KiB a second,
 * over five times what a 115200-baud UART carries, so an interactive console never notices. A guest printing
 * without end costs the host's disk at most ~5.4 GiB a day instead of whatever the disk holds.
 */
export const SERIAL_OUT_BURST_BYTES = 1 << 20;
export const SERIAL_OUT_BYTES_PER_SECOND = 64 << 10;

/**
 * `log`, limited by a token bucket (default: GUEST_LOG_BURST lines, GUEST_LOG_PER_SECOND a second). Lines
 * over the limit are dropped and counted; the next line that passes says how many.
 */
export function rateLimitedLog(
  log: (message: string) => void,
  bucket = new TokenBucket(GUEST_LOG_BURST, GUEST_LOG_PER_SECOND),
): (message: string) => void {
  let dropped = 0;
  return (message) => {
    if (!bucket.take()) {
      dropped++;
      return;
    }
    log(dropped > 0 ? `${message} (${dropped} earlier lines dropped by the rate limit)` : message);
    dropped = 0;
  };
}
