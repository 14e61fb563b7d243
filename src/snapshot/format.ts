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

import { closeSync, existsSync, fsyncSync, openSync, readFileSync, renameSync, rmSync, writeSync } from "node:fs";
import { dirname, basename, join } from "node:path";
import { z } from "../zod.ts";
import { StructView, array, struct } from "../kvm/struct.ts";
import { SnapshotError } from "./errors.ts";

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

const cpuidEntry = z.object({ function: u32, index: u32, flags: u32, eax: u32, ebx: u32, ecx: u32, edx: u32 });

export const vcpuStateSchema = z.object({
  id: z.number().int().min(0).max(254),
  mp_state: b64, regs: b64, sregs: b64,
  xsave: b64.optional(), fpu: b64.optional(), xcrs: b64.optional(), debugregs: b64.optional(),
  lapic: b64,
  tsc_khz: z.number().int().positive().nullable(),
  cpuid: z.array(cpuidEntry).max(4096),
  msrs: z.array(z.tuple([u32, z.string().regex(/^0x[0-9a-f]{1,16}$/)])).max(4096),
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
    msr_index_list: z.array(u32),
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

/** Check and decode a state file's bytes; throws SnapshotError naming the first problem found. */
export function decodeSnapshot(bytes: Uint8Array, path = "snapshot"): SnapshotState {
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
  const sum = new Bun.CryptoHasher("sha256").update(body).digest();
  if (!Buffer.from(sum).equals(Buffer.from(h.slice("body_sha256")))) {
    throw new SnapshotError("CORRUPTED", `${path} is corrupted: the SHA-256 of its body does not match the one in its header`);
  }
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder().decode(body));
  } catch (e) {
    throw new SnapshotError("INVALID", `${path}: the body is not JSON (${(e as Error).message})`);
  }
  const r = snapshotStateSchema.safeParse(json);
  if (!r.success) {
    const issue = r.error.issues[0]!;
    throw new SnapshotError("INVALID", `${path}: ${issue.path.join(".") || "body"}: ${issue.message}`);
  }
  return r.data;
}

export function readSnapshotFile(path: string): SnapshotState {
  if (!existsSync(path)) throw new SnapshotError("NOT_FOUND", `snapshot file ${path} does not exist`);
  return decodeSnapshot(new Uint8Array(readFileSync(path)), path);
}
