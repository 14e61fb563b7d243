// The exit-trace file: JSON Lines, one object per line.
//
//   line 1      the header: what the VM looked like when tracing started (its buses, virtio devices, RAM)
//   then        one line per VM exit (an ExitRecord from src/vcpu/vcpu.ts), in the order kindling handled them,
//               and one line per host event a device model saw between exits (input typed on the serial
//               console), so that a replay can feed it at the same point (replay.ts)
//
//   {"kindling_trace":1,"started":"2025-...","vcpus":1,"ram":[...],"pio":[...],"mmio":[...],"virtio":[]}
//   {"t":0.412,"vcpu":0,"reason":"KVM_EXIT_IO","addr":1016,"size":1,"dir":"out","data":104,"device":"8250","register":"THR","handleUs":3.1}
//   {"t":9.870,"event":"input","device":"8250","bytes":"6b"}
//
// `t` is milliseconds since tracing started. `data` is a number, or a "0x..." string when it does not fit
// a double exactly (8-byte MMIO). A trace file is input like any other: readTrace() checks every line and
// names the first bad one.

import { readFileSync } from "node:fs";
import { z } from "../zod.ts";
import type { ExitRecord } from "../vcpu/vcpu.ts";

export const TRACE_VERSION = 1;

const range = z.object({ base: z.number().int().nonnegative(), size: z.number().int().positive(), name: z.string() });

/** A virtio device's identity: what replay needs to stand a transport up without the device's backing. */
const virtioIdentity = z.object({
  name: z.string(),
  addr: z.number().int().nonnegative(),
  irq: z.number().int().nonnegative(),
  deviceId: z.number().int().nonnegative(),
  /** DeviceFeatures, as "0x..." (64 bits). */
  features: z.string().regex(/^0x[0-9a-f]+$/),
  queueMaxSizes: z.array(z.number().int().positive()),
  /** The first CONFIG_SNAPSHOT_SIZE bytes of its configuration space, hex, when tracing started. */
  config: z.string().regex(/^([0-9a-f]{2})*$/),
});
export type VirtioIdentity = z.infer<typeof virtioIdentity>;
export const CONFIG_SNAPSHOT_SIZE = 256;

export const traceHeader = z.object({
  kindling_trace: z.literal(TRACE_VERSION),
  started: z.string(),
  vcpus: z.number().int().positive(),
  ram: z.array(z.object({ gpa: z.number().int().nonnegative(), size: z.number().int().positive() })),
  pio: z.array(range),
  mmio: z.array(range),
  virtio: z.array(virtioIdentity),
});
export type TraceHeader = z.infer<typeof traceHeader>;

const traceExit = z.object({
  t: z.number(),
  vcpu: z.number().int().nonnegative(),
  reason: z.string(),
  addr: z.number().int().nonnegative().optional(),
  size: z.number().int().min(1).max(8).optional(),
  dir: z.enum(["in", "out", "read", "write"]).optional(),
  data: z.union([z.number().int().nonnegative(), z.string().regex(/^0x[0-9a-f]+$/)]).optional(),
  device: z.string().optional(),
  register: z.string().optional(),
  handleUs: z.number(),
});
/** An ExitRecord as a trace line holds it. */
export type TraceExit = z.infer<typeof traceExit>;

const traceInput = z.object({ t: z.number(), event: z.literal("input"), device: z.string(), bytes: z.string().regex(/^([0-9a-f]{2})+$/) });
export type TraceInput = z.infer<typeof traceInput>;

export type TraceRecord = TraceExit | TraceInput;

export interface Trace {
  header: TraceHeader;
  /** Exits and host events in file order; `line` is the 1-based line number, for messages. */
  records: (TraceRecord & { line: number })[];
}

export class TraceFormatError extends Error {
  override name = "TraceFormatError";
}

export const isExit = <R extends TraceRecord>(r: R): r is R & TraceExit => "reason" in r;

// ---- writing ----

const round = (x: number, digits: number) => Math.round(x * 10 ** digits) / 10 ** digits;

/** JSON string literals of the few names traces repeat (exit reasons, devices, registers), made once each. */
const quoted = new Map<string, string>();
function q(s: string): string {
  let v = quoted.get(s);
  if (v === undefined) quoted.set(s, (v = JSON.stringify(s)));
  return v;
}

/**
 * One exit as its trace line (without the newline), the same as JSON.stringify with the fields in this order
 * would give. Built by hand because it runs once per exit: about twice as fast.
 */
export function exitLine(r: ExitRecord): string {
  let line = `{"t":${round(r.t, 3)},"vcpu":${r.vcpu},"reason":${q(r.reason)}`;
  if (r.addr !== undefined) line += `,"addr":${r.addr}`;
  if (r.size !== undefined) line += `,"size":${r.size}`;
  if (r.dir !== undefined) line += `,"dir":"${r.dir}"`;
  if (r.data !== undefined) line += typeof r.data === "bigint" ? `,"data":"0x${r.data.toString(16)}"` : `,"data":${r.data}`;
  if (r.device !== undefined) line += `,"device":${q(r.device)}`;
  if (r.register !== undefined) line += `,"register":${q(r.register)}`;
  return `${line},"handleUs":${round(r.handleUs, 1)}}`;
}

export function inputLine(t: number, device: string, bytes: Uint8Array): string {
  return JSON.stringify({ t: round(t, 3), event: "input", device, bytes: Buffer.from(bytes).toString("hex") });
}

// ---- reading ----

function issue(e: z.ZodError): string {
  const i = e.issues[0]!;
  return `${i.path.length ? `${i.path.join(".")}: ` : ""}${i.message}`;
}

/** Parse and check a trace's text. Throws TraceFormatError naming the first bad line. */
export function parseTrace(text: string, name = "trace"): Trace {
  const lines = text.split("\n");
  const json = (i: number): unknown => {
    try {
      return JSON.parse(lines[i]!);
    } catch {
      throw new TraceFormatError(`${name}:${i + 1}: not a JSON object`);
    }
  };
  if (!lines[0]?.trim()) throw new TraceFormatError(`${name}: empty; a trace starts with its header line`);
  const h = traceHeader.safeParse(json(0));
  if (!h.success) throw new TraceFormatError(`${name}:1: not a kindling trace header (${issue(h.error)})`);
  const records: Trace["records"] = [];
  for (let i = 1; i < lines.length; i++) {
    if (!lines[i]!.trim()) continue;
    const v = json(i);
    const r = v && typeof v === "object" && "event" in v ? traceInput.safeParse(v) : traceExit.safeParse(v);
    if (!r.success) throw new TraceFormatError(`${name}:${i + 1}: ${issue(r.error)}`);
    records.push({ ...r.data, line: i + 1 });
  }
  return { header: h.data, records };
}

export function readTrace(path: string): Trace {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    throw new TraceFormatError(`cannot read trace ${path}: ${(e as Error).message}`);
  }
  return parseTrace(text, path);
}

/** A record's data as an unsigned integer (0 when absent). */
export const dataOf = (r: TraceExit): bigint => (r.data === undefined ? 0n : BigInt(r.data));
