// The snapshot files without KVM: the state file's checks (each corruption named), the memory file's
// Full (zero pages as holes) and Diff (only dirty pages) forms, merging a Diff onto its base, and the MSR
// order a restore uses.

import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { decodeSnapshot, encodeSnapshot, kindling_snapshot_header, SNAPSHOT_FORMAT_VERSION, writeSnapshotFile, type SnapshotState } from "../src/snapshot/format.ts";
import { mergeDiff, writeDiffMemory, writeFullMemory } from "../src/snapshot/memory-file.ts";
import { msrRestoreOrder, MSR_IA32_TSC_DEADLINE } from "../src/snapshot/vcpu-state.ts";
import { SnapshotError } from "../src/snapshot/errors.ts";
import { GuestMemory, dirtyBitmap } from "../src/memory.ts";
import { StructView } from "../src/kvm/struct.ts";
import { MSR_IA32_TSC } from "../src/arch/x86_64/msrs.ts";

const dir = mkdtempSync(join(tmpdir(), "kindling-snapshot-format-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const PAGE = 4096;

const b = (n: number) => Buffer.alloc(n).toString("base64");
const state: SnapshotState = {
  kindling_version: "0.1.0",
  created_at: "2026-11-29T00:00:00.000Z",
  host: { cpu_vendor: "GenuineIntel", cpu_signature: 0x50657, cpu_model_name: "test", msr_index_list: [0x10], tsc_khz: 2_000_000, xsave: true, kernel: "6.1" },
  machine: { mem_size: 16 * PAGE, regions: [{ gpa: 0, size: 16 * PAGE }], vcpus: 1, irqchip: true, kind: "test" },
  memory: { snapshot_type: "Full", size: 16 * PAGE },
  vm: { pit2: b(112), clock: b(48), irqchip: [b(520), b(520), b(520)] },
  vcpus: [{
    id: 0, mp_state: b(4), regs: b(144), sregs: b(312), xsave: b(4096), xcrs: b(392), debugregs: b(128), lapic: b(1024),
    tsc_khz: 2_000_000, cpuid: [], msrs: [[0x10, "0x1234"]], vcpu_events: b(64),
  }],
  devices: {},
};

function refused(bytes: Uint8Array): SnapshotError {
  try {
    decodeSnapshot(bytes, "s");
  } catch (e) {
    expect(e).toBeInstanceOf(SnapshotError);
    return e as SnapshotError;
  }
  throw new Error("not refused");
}

describe("the state file", () => {
  test("round trip, and the file on disk is the encoding", () => {
    const bytes = encodeSnapshot(state);
    expect(decodeSnapshot(bytes)).toEqual(state);
    const path = join(dir, "s.state");
    expect(writeSnapshotFile(path, state)).toBe(bytes.byteLength);
    expect(decodeSnapshot(new Uint8Array(readFileSync(path)))).toEqual(state);
  });

  test("every kind of damage is named", () => {
    const good = encodeSnapshot(state);
    expect(refused(good.subarray(0, 30)).code).toBe("TRUNCATED");
    expect(refused(good.subarray(0, good.byteLength - 1)).code).toBe("TRUNCATED");
    expect(refused(new TextEncoder().encode("{}")).code).toBe("NOT_A_SNAPSHOT");
    const version = good.slice();
    new StructView(kindling_snapshot_header, version).set("format_version", SNAPSHOT_FORMAT_VERSION + 1);
    expect(refused(version).code).toBe("WRONG_VERSION");
    // One flipped bit anywhere in the body.
    for (const at of [kindling_snapshot_header.size, Math.floor(good.byteLength / 2), good.byteLength - 1]) {
      const flipped = good.slice();
      flipped[at]! ^= 0x01;
      expect(refused(flipped).code).toBe("CORRUPTED");
    }
    const longer = new Uint8Array(good.byteLength + 1);
    longer.set(good);
    expect(refused(longer).code).toBe("CORRUPTED");
    // A body with a good checksum but a bad field.
    const bad = encodeSnapshot({ ...state, machine: { ...state.machine, vcpus: 0 } });
    const e = refused(bad);
    expect(e.code).toBe("INVALID");
    expect(e.message).toMatch(/machine\.vcpus/);
  });

  test("the CPUID, MSR and host MSR lists are checked element by element, and the bad one named", () => {
    const entry = { function: 1, index: 0, flags: 0, eax: 0x50657, ebx: 0, ecx: 0xffffffff, edx: 0 };
    const vcpu = state.vcpus[0]!;
    const withVcpu = (v: Record<string, unknown>) => encodeSnapshot({ ...state, vcpus: [{ ...vcpu, ...v }] } as SnapshotState);
    expect(decodeSnapshot(withVcpu({ cpuid: [entry, entry] })).vcpus[0]!.cpuid).toEqual([entry, entry]);
    const cases: [Uint8Array, RegExp][] = [
      [withVcpu({ cpuid: [entry, { ...entry, ecx: 2 ** 32 }] }), /vcpus\.0\.cpuid: entry 1: ecx is not a u32/],
      [withVcpu({ cpuid: [{ ...entry, edx: undefined }] }), /vcpus\.0\.cpuid: entry 0: edx is not a u32/],
      [withVcpu({ cpuid: [1] }), /vcpus\.0\.cpuid: entry 0: expected an object/],
      [withVcpu({ cpuid: "none" }), /vcpus\.0\.cpuid: expected an array/],
      [withVcpu({ cpuid: Array.from({ length: 4097 }, () => entry) }), /vcpus\.0\.cpuid: 4097 entries, at most 4096/],
      [withVcpu({ msrs: [[0x10, "0x1"], [0x11, "12"]] }), /vcpus\.0\.msrs: entry 1: the value is not a 64-bit hex string/],
      [withVcpu({ msrs: [[0x10, "0x12345678123456781"]] }), /vcpus\.0\.msrs: entry 0: the value is not a 64-bit hex string/],
      [withVcpu({ msrs: [[-1, "0x1"]] }), /vcpus\.0\.msrs: entry 0: the index is not a u32/],
      [withVcpu({ msrs: [[0x10, "0x1", 3]] }), /vcpus\.0\.msrs: entry 0: expected \[index, value\]/],
      [encodeSnapshot({ ...state, host: { ...state.host, msr_index_list: [0x10, 1.5] } }), /host\.msr_index_list: entry 1: not a u32/],
    ];
    for (const [bytes, message] of cases) {
      const e = refused(bytes);
      expect(e.code).toBe("INVALID");
      expect(e.message).toMatch(message);
    }
  });
});

describe("the memory file", () => {
  const mem = () => {
    const m = GuestMemory.plain([{ gpa: 0, size: 8 * PAGE }, { gpa: 0x100000, size: 8 * PAGE }]);
    m.fill(1 * PAGE, PAGE, 0xaa);
    m.fill(0x100000 + 3 * PAGE, 10, 0xbb);
    return m;
  };

  test("Full: every region back to back, zero pages left as holes", () => {
    const path = join(dir, "full.mem");
    const r = writeFullMemory(mem(), path);
    expect(r.bytesWritten).toBe(2 * PAGE);
    const bytes = readFileSync(path);
    expect(bytes.byteLength).toBe(16 * PAGE);
    expect(bytes[1 * PAGE]).toBe(0xaa);
    expect(bytes[(8 + 3) * PAGE]).toBe(0xbb);
    expect(bytes[0]).toBe(0);
  });

  test("Diff: only the pages the bitmaps mark; merged onto the base it gives the later memory", () => {
    const m = mem();
    const base = join(dir, "base.mem");
    writeFullMemory(m, base);
    m.fill(5 * PAGE, 4, 0xcc);
    m.fill(0x100000 + 7 * PAGE, 4, 0xdd);
    const bitmaps = [dirtyBitmap(8 * PAGE), dirtyBitmap(8 * PAGE)];
    bitmaps[0]![0] = 1 << 5;
    bitmaps[1]![0] = 1 << 7;
    const diff = join(dir, "diff.mem");
    const d = writeDiffMemory(m, diff, bitmaps);
    expect(d.pages).toEqual([[5, 1], [15, 1]]);
    expect(d.bytesWritten).toBe(2 * PAGE);
    expect(statSync(diff).size).toBe(16 * PAGE);
    expect(mergeDiff(base, diff, d.pages!)).toBe(2 * PAGE);
    const merged = readFileSync(base);
    expect([merged[1 * PAGE], merged[5 * PAGE], merged[11 * PAGE], merged[15 * PAGE]]).toEqual([0xaa, 0xcc, 0xbb, 0xdd]);
  });

  test("the VMM's own writes are tracked per page and cleared when taken", () => {
    const m = GuestMemory.plain([{ gpa: 0, size: 8 * PAGE }]);
    m.trackVmmWrites();
    m.writeU32(2 * PAGE + 4092, 1); // spans no page boundary
    m.write(6 * PAGE - 2, new Uint8Array(4)); // spans pages 5 and 6
    expect([...m.takeVmmDirty(0)!.subarray(0, 1)]).toEqual([0b0110_0100]);
    expect([...m.takeVmmDirty(0)!.subarray(0, 1)]).toEqual([0]);
  });
});

test("a restore sets IA32_TSC before IA32_TSC_DEADLINE, whatever order they were saved in", () => {
  const order = msrRestoreOrder([[MSR_IA32_TSC_DEADLINE, "0x5"], [0x174, "0x1"], [MSR_IA32_TSC, "0x9"]]).map((m) => m.index);
  expect(order.indexOf(MSR_IA32_TSC)).toBeLessThan(order.indexOf(MSR_IA32_TSC_DEADLINE));
});
