// The snapshot state file: kindling's own format, a fixed header and a JSON body.
//
//   kindling_snapshot_header   magic "KINDLSNP", format version, header size, body size, SHA-256 of the body
//   body                       UTF-8 JSON: SnapshotState (below)
//
// A reader checks, in this order and before anything runs: the file is at least a header long and has the
// magic (NOT_A_SNAPSHOT, TRUNCATED), the format version is one it reads (WRONG_VERSION), the file holds the
// whole body (TRUNCATED), the body's SHA-256 matches (CORRUPTED: one flipped byte anywhere is caught), and
// the JSON has every field with sane values (INVALID). Firecracker uses a CRC64 over its state file for the
// same job; SHA-256 comes with Bun (Bun.CryptoHasher) and catches more.
//
// Files are written atomically: to a temporary file in the same directory, fsync'd, renamed over the target,
// and the directory fsync'd, so a crash leaves the old file or the new one, never half of one.

import { closeSync, fsyncSync, openSync, readFileSync, renameSync, rmSync, writeSync } from "node:fs";
import { dirname, basename, join } from "node:path";
import { z } from "../zod.ts";
import { StructView, array, struct } from "../kvm/struct.ts";
import { SnapshotError } from "./errors.ts";
import type { CpuidEntry } from "../kvm/cpuid.ts";

export const SNAPSHOT_MAGIC = "KINDLSNP";
/** Bumped whenever the body changes in a way an older reader would misread. */
export const SNAPSHOT_FORMAT_VERSION = 1;

export const kindling_snapshot_header = struct("kindling_snapshot_header", [
  ["magic", array("u8", 8)],
  ["format_version", "u32"],
  ["header_size", "u32"],
  ["body_size", "u64"],
  ["body_sha256", array("u8", 32)],
]);

// ---- the body ----

const b64 = z.string().regex(/^[A-Za-z0-9+/]*={0,2}$/, "base64");
const u32 = z.number().int().min(0).max(0xffffffff);

// The long, regular arrays (a vCPU's ~80 CPUID entries and ~40 MSRs, the host's MSR list) are checked by one
// loop each inside the schema rather than by a zod schema per element: the restore runs this once per load,
// as cold code, and element schemas made zod ~0.3 ms of a ~3 ms restore (bench/README.md, snapshot). The
// rules are the same: every number a u32, every MSR value a hex string of at most 64 bits, at most 4096.
const isU32 = (x: unknown): x is number => typeof x === "number" && Number.isInteger(x) && x >= 0 && x <= 0xffffffff;
const MAX_ENTRIES = 4096;
const HEX_U64 = /^0x[0-9a-f]{1,16}$/;

/** A zod schema for an array whose elements `bad(element)` checks (it returns why one is wrong). */
function arrayOf<T>(what: string, bad: (e: unknown) => string | undefined) {
  return z.custom<T[]>().superRefine((v, ctx) => {
    if (!Array.isArray(v)) return void ctx.addIssue({ code: "custom", message: `expected an array of ${what}` });
    if (v.length > MAX_ENTRIES) return void ctx.addIssue({ code: "custom", message: `${v.length} entries, at most ${MAX_ENTRIES}` });
    for (let i = 0; i < v.length; i++) {
      const why = bad(v[i]);
      if (why !== undefined) return void ctx.addIssue({ code: "custom", message: `entry ${i}: ${why}` });
    }
  });
}

const CPUID_KEYS = ["function", "index", "flags", "eax", "ebx", "ecx", "edx"] as const;
const cpuidEntries = arrayOf<CpuidEntry>("CPUID entries", (e) => {
  if (typeof e !== "object" || e === null || Array.isArray(e)) return "expected an object";
  const o = e as Record<string, unknown>;
  for (const k of CPUID_KEYS) if (!isU32(o[k])) return `${k} is not a u32`;
  return undefined;
});
const msrEntries = arrayOf<[number, string]>("[index, value] pairs", (e) => {
  if (!Array.isArray(e) || e.length !== 2) return "expected [index, value]";
  if (!isU32(e[0])) return "the index is not a u32";
  return typeof e[1] === "string" && HEX_U64.test(e[1]) ? undefined : "the value is not a 64-bit hex string (0x...)";
});
const u32Entries = arrayOf<number>("u32", (e) => (isU32(e) ? undefined : "not a u32"));

export const vcpuStateSchema = z.object({
  id: z.number().int().min(0).max(254),
  mp_state: b64, regs: b64, sregs: b64,
  xsave: b64.optional(), fpu: b64.optional(), xcrs: b64.optional(), debugregs: b64.optional(),
  lapic: b64,
  tsc_khz: z.number().int().positive().nullable(),
  cpuid: cpuidEntries,
  msrs: msrEntries,
  vcpu_events: b64,
});

export const vmStateSchema = z.object({ pit2: b64, clock: b64, irqchip: z.array(b64).length(3) });

const region = z.object({ gpa: z.number().int().min(0), size: z.number().int().positive() });

export const snapshotStateSchema = z.object({
  kindling_version: z.string(),
  created_at: z.string(),
  /** Facts about the host the snapshot was made on; see compat.ts for what a restoring host must match. */
  host: z.object({
    cpu_vendor: z.string(),
    cpu_signature: u32,
    cpu_model_name: z.string(),
    msr_index_list: u32Entries,
    tsc_khz: z.number().int().positive().nullable(),
    xsave: z.boolean(),
    kernel: z.string(),
  }),
  /** The machine to rebuild: memory layout and vCPUs, and what was booted (`kind`, e.g. a probe's name). */
  machine: z.object({
    mem_size: z.number().int().positive(),
    regions: z.array(region).min(1),
    vcpus: z.number().int().min(1).max(254),
    irqchip: z.boolean(),
    /** The VMM completes guest system calls this host cannot (src/arch/x86_64/syscall-assist.ts): re-armed on restore. */
    syscall_assist: z.boolean().optional(),
    kind: z.string(),
    description: z.record(z.string(), z.unknown()).optional(),
  }),
  memory: z.object({
    snapshot_type: z.enum(["Full", "Diff"]),
    /** Bytes the memory file must hold: every region, back to back. */
    size: z.number().int().positive(),
    /** Diff: the runs of pages it holds, [first page, count]; the rest comes from the base. */
    pages: z.array(z.tuple([z.number().int().min(0), z.number().int().positive()])).optional(),
  }),
  vm: vmStateSchema,
  vcpus: z.array(vcpuStateSchema).min(1),
  /** Each device's state, by device name (see the device models' describe/rebuild). */
  devices: z.record(z.string(), z.unknown()),
});

export type SnapshotState = z.infer<typeof snapshotStateSchema>;

// ---- writing ----

/** Encode a state as the bytes of a state file. */
export function encodeSnapshot(state: SnapshotState): Uint8Array {
  const body = new TextEncoder().encode(JSON.stringify(state));
  const h = new StructView(kindling_snapshot_header);
  h.slice("magic").set(new TextEncoder().encode(SNAPSHOT_MAGIC));
  h.assign({ format_version: SNAPSHOT_FORMAT_VERSION, header_size: kindling_snapshot_header.size, body_size: body.byteLength });
  h.slice("body_sha256").set(new Bun.CryptoHasher("sha256").update(body).digest());
  const out = new Uint8Array(h.bytes.byteLength + body.byteLength);
  out.set(h.bytes, 0);
  out.set(body, h.bytes.byteLength);
  return out;
}

/**
 * Write a file atomically: `fill(fd)` writes the content into a temporary file beside `path`, which is then
 * fsync'd and renamed over `path`; the directory is fsync'd so the rename itself survives a crash.
 */
export function writeFileAtomically(path: string, fill: (fd: number) => void): void {
  const tmp = join(dirname(path), `.${basename(path)}.tmp-${process.pid}`);
  let fd: number | undefined;
  try {
    fd = openSync(tmp, "w", 0o600);
    fill(fd);
    fsyncSync(fd);
    closeSync(fd);
    fd = undefined;
    renameSync(tmp, path);
    const dir = openSync(dirname(path), "r");
    try {
      fsyncSync(dir);
    } finally {
      closeSync(dir);
    }
  } catch (e) {
    if (fd !== undefined) closeSync(fd);
    rmSync(tmp, { force: true });
    throw new SnapshotError("WRITE_FAILED", `writing ${path} failed: ${(e as Error).message}`);
  }
}

export function writeSnapshotFile(path: string, state: SnapshotState): number {
  const bytes = encodeSnapshot(state);
  writeFileAtomically(path, (fd) => {
    for (let at = 0; at < bytes.byteLength; ) at += writeSync(fd, bytes, at, bytes.byteLength - at);
  });
  return bytes.byteLength;
}

// ---- reading ----

const utf8 = new TextDecoder();

/** Milliseconds spent reading and checking a state file, by step (the restore benchmark's breakdown). */
export interface StateFileTimings {
  readFile?: number;
  checksum?: number;
  parse?: number;
  validate?: number;
}

/**
 * Check and decode a state file's bytes; throws SnapshotError naming the first problem found. `timings`, when
 * given, receives the time of each step.
 */
export function decodeSnapshot(bytes: Uint8Array, path = "snapshot", timings?: StateFileTimings): SnapshotState {
  const t0 = performance.now();
  const H = kindling_snapshot_header;
  if (bytes.byteLength < 8 || new TextDecoder().decode(bytes.subarray(0, 8)) !== SNAPSHOT_MAGIC) {
    throw new SnapshotError("NOT_A_SNAPSHOT", `${path} is not a kindling snapshot (no "${SNAPSHOT_MAGIC}" magic at its start)`);
  }
  if (bytes.byteLength < H.size) {
    throw new SnapshotError("TRUNCATED", `${path} is truncated: ${bytes.byteLength} bytes, shorter than its ${H.size}-byte header`);
  }
  const h = new StructView(H, bytes);
  const version = h.get("format_version");
  if (version !== SNAPSHOT_FORMAT_VERSION) {
    throw new SnapshotError("WRONG_VERSION", `${path} has snapshot format version ${version}; this kindling reads version ${SNAPSHOT_FORMAT_VERSION} (make the snapshot again with this kindling)`);
  }
  const headerSize = h.get("header_size");
  const bodySize = h.get("body_size");
  if (headerSize !== H.size) throw new SnapshotError("CORRUPTED", `${path} is corrupted: header size ${headerSize}, expected ${H.size}`);
  if (bytes.byteLength < headerSize + bodySize) {
    throw new SnapshotError("TRUNCATED", `${path} is truncated: ${bytes.byteLength} bytes, its header says ${headerSize + bodySize}`);
  }
  if (bytes.byteLength > headerSize + bodySize) {
    throw new SnapshotError("CORRUPTED", `${path} is corrupted: ${bytes.byteLength - headerSize - bodySize} bytes past the end its header gives`);
  }
  const body = bytes.subarray(headerSize, headerSize + bodySize);
  const sum = Bun.SHA256.hash(body) as Uint8Array;
  const saved = h.slice("body_sha256");
  let differ = 0;
  for (let i = 0; i < sum.byteLength; i++) differ |= sum[i]! ^ saved[i]!;
  if (differ !== 0 || saved.byteLength !== sum.byteLength) {
    throw new SnapshotError("CORRUPTED", `${path} is corrupted: the SHA-256 of its body does not match the one in its header`);
  }
  const t1 = performance.now();
  let json: unknown;
  try {
    json = JSON.parse(utf8.decode(body));
  } catch (e) {
    throw new SnapshotError("INVALID", `${path}: the body is not JSON (${(e as Error).message})`);
  }
  const t2 = performance.now();
  const r = snapshotStateSchema.safeParse(json);
  if (!r.success) {
    const issue = r.error.issues[0]!;
    throw new SnapshotError("INVALID", `${path}: ${issue.path.join(".") || "body"}: ${issue.message}`);
  }
  if (timings) Object.assign(timings, { checksum: t1 - t0, parse: t2 - t1, validate: performance.now() - t2 });
  return r.data;
}

export function readSnapshotFile(path: string, timings?: StateFileTimings): SnapshotState {
  const t0 = performance.now();
  let bytes: Uint8Array;
  try {
    bytes = readFileSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") throw new SnapshotError("NOT_FOUND", `snapshot file ${path} does not exist`);
    throw new SnapshotError("INVALID", `snapshot file ${path} cannot be read: ${(e as Error).message}`);
  }
  if (timings) timings.readFile = performance.now() - t0;
  return decodeSnapshot(bytes, path, timings);
}
