// MMDS V2 session tokens (Firecracker's src/vmm/src/mmds/token.rs, same rules, different construction).
//
// `PUT /latest/api/token` with a time to live of 1 to 21600 seconds gets a token; a GET presents it, and it
// is valid until it expires. Like Firecracker's, a token carries its own expiry, sealed by a key that never
// leaves this process, so the VMM keeps no table of tokens a guest could grow. Firecracker encrypts the
// expiry with AES-256-GCM; kindling authenticates it with HMAC-SHA-256 (Bun.CryptoHasher, no node:crypto
// at start-up): the guest may read its token's expiry, it cannot forge or extend one. Firecracker's
// additional authenticated data, "microvmid=<instance id>", goes into the MAC the same way.
//
// A token is base64 of: expiry (8 bytes, little-endian milliseconds on the monotonic clock), 12 random
// bytes, and the first 16 bytes of HMAC-SHA-256(key, aad || expiry || random): 36 bytes, 48 characters.

export const MIN_TOKEN_TTL_SECONDS = 1;
export const MAX_TOKEN_TTL_SECONDS = 21600;
/** The path a token is asked for at. */
export const PATH_TO_TOKEN = "/latest/api/token";
/** Longer strings are refused without decoding (Firecracker's TOKEN_LENGTH_LIMIT). */
export const TOKEN_LENGTH_LIMIT = 70;

const EXPIRY_LEN = 8;
const NONCE_LEN = 12;
const TAG_LEN = 16;
const TOKEN_LEN = EXPIRY_LEN + NONCE_LEN + TAG_LEN;
const KEY_LEN = 32;

export class TokenTtlError extends Error {
  constructor(readonly ttl: number) {
    super(`Invalid time to live value provided for token: ${ttl}. Please provide a value between ${MIN_TOKEN_TTL_SECONDS} and ${MAX_TOKEN_TTL_SECONDS}.`);
  }
}

export class TokenAuthority {
  private readonly key = crypto.getRandomValues(new Uint8Array(KEY_LEN));
  private aad = new Uint8Array(0);

  /** `clock`: monotonic milliseconds (tests move it by hand). */
  constructor(private readonly clock: () => number = () => performance.now()) {}

  /** Tokens are bound to this microVM's id (Firecracker's set_aad). */
  setAad(instanceId: string): void {
    this.aad = new TextEncoder().encode(`microvmid=${instanceId}`);
  }

  /** A token valid for `ttlSeconds`; throws TokenTtlError outside 1..21600. */
  generate(ttlSeconds: number): string {
    if (!Number.isInteger(ttlSeconds) || ttlSeconds < MIN_TOKEN_TTL_SECONDS || ttlSeconds > MAX_TOKEN_TTL_SECONDS) throw new TokenTtlError(ttlSeconds);
    const t = new Uint8Array(TOKEN_LEN);
    new DataView(t.buffer).setBigUint64(0, BigInt(Math.ceil(this.clock() + ttlSeconds * 1000)), true);
    crypto.getRandomValues(t.subarray(EXPIRY_LEN, EXPIRY_LEN + NONCE_LEN));
    t.set(this.tag(t.subarray(0, EXPIRY_LEN + NONCE_LEN)), EXPIRY_LEN + NONCE_LEN);
    return Buffer.from(t).toString("base64");
  }

  /** True for a token this authority made that has not expired. */
  isValid(token: string): boolean {
    if (token.length > TOKEN_LENGTH_LIMIT || !/^[A-Za-z0-9+/]*={0,2}$/.test(token)) return false;
    const t = new Uint8Array(Buffer.from(token, "base64"));
    if (t.byteLength !== TOKEN_LEN) return false;
    const want = this.tag(t.subarray(0, EXPIRY_LEN + NONCE_LEN));
    // Compare every byte whatever the first difference (no early exit to time).
    let diff = 0;
    for (let i = 0; i < TAG_LEN; i++) diff |= want[i]! ^ t[EXPIRY_LEN + NONCE_LEN + i]!;
    if (diff !== 0) return false;
    const expiry = Number(new DataView(t.buffer).getBigUint64(0, true));
    return expiry > this.clock();
  }

  private tag(body: Uint8Array): Uint8Array {
    const h = new Bun.CryptoHasher("sha256", this.key);
    h.update(this.aad);
    h.update(body);
    return (h.digest() as Uint8Array).subarray(0, TAG_LEN);
  }
}
