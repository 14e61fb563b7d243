// Device state as plain data: what every device model can describe, and be rebuilt from.
//
// Each device class has
//   describe(): XState       its guest-visible state (registers, queue indices, features, configuration)
//                            and the work it holds (bytes not yet delivered, requests pending), as plain
//                            data: numbers, strings, booleans, arrays and objects, nothing else, so it can
//                            be written as JSON as it is (64-bit values as "0x..." strings, bytes as base64);
//   restore(state: XState)   on a fresh instance built with the same host-side wiring (output sinks, IRQ
//                            lines, backing files, guest memory), puts it back in that state.
// `new X(wiring).restore(x.describe())` then describes exactly as `x` did; test/device-state.test.ts checks
// this for every device. What a device holds on the host side (a file descriptor, a TAP, a socket) is
// wiring, not state: the rebuilt device gets its own. Snapshots (later) serialize these descriptions.
//
// A state comes from outside the process once snapshots exist: restore() checks what it reads and throws
// DeviceStateError naming the field, never leaving a device half-restored with a guest-visible fault.

/** A JSON value. */
export type Plain = null | boolean | number | string | readonly Plain[] | { readonly [key: string]: Plain };

/**
 * A device that can describe its state as plain data and be rebuilt from it (see the top of this file).
 * `S` is declared with `type` (not `interface`) and holds only Plain values; the test checks that a JSON
 * round trip gives the same description back.
 */
export interface Stateful<S> {
  describe(): S;
  restore(state: S): void;
}

/** A state that cannot be restored: a field missing, of the wrong type or out of range. */
export class DeviceStateError extends Error {
  constructor(device: string, message: string) {
    super(`${device} state: ${message}`);
    this.name = "DeviceStateError";
  }
}

/** A 64-bit value (feature bits, guest addresses) as "0x..." text. */
export const hex64 = (v: bigint): string => `0x${v.toString(16)}`;

export function fromHex64(device: string, field: string, s: unknown): bigint {
  if (typeof s !== "string" || !/^0x[0-9a-f]{1,16}$/.test(s)) throw new DeviceStateError(device, `${field}: ${JSON.stringify(s)} is not a 64-bit "0x..." value`);
  return BigInt(s);
}

/** Bytes as base64. */
export const toBase64 = (bytes: Uint8Array): string => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("base64");

export function fromBase64(device: string, field: string, s: unknown, maxBytes: number): Uint8Array {
  if (typeof s !== "string" || !/^[A-Za-z0-9+/]*={0,2}$/.test(s)) throw new DeviceStateError(device, `${field}: not base64`);
  const bytes = new Uint8Array(Buffer.from(s, "base64"));
  if (bytes.byteLength > maxBytes) throw new DeviceStateError(device, `${field}: ${bytes.byteLength} bytes, at most ${maxBytes}`);
  return bytes;
}

/** An integer field in [min, max]. */
export function int(device: string, field: string, v: unknown, min: number, max: number): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) throw new DeviceStateError(device, `${field}: ${JSON.stringify(v)} is not an integer in ${min}..${max}`);
  return v;
}

export function bool(device: string, field: string, v: unknown): boolean {
  if (typeof v !== "boolean") throw new DeviceStateError(device, `${field}: ${JSON.stringify(v)} is not true or false`);
  return v;
}

/** The state's `kind` must name this device: a describe() of one kind never restores another. */
export function checkKind(device: string, state: { kind?: unknown }, kind: string): void {
  if (state?.kind !== kind) throw new DeviceStateError(device, `kind: ${JSON.stringify(state?.kind)}, expected ${JSON.stringify(kind)}`);
}
