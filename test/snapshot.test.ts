// Snapshot and restore through real KVM, with the counter probe (guest/probes/counter.S): it adds 1 to a
// counter in its memory and writes the count to SCRATCH_PORT, forever. A snapshot restored in a new process
// must go on from the count it was taken at, with the same registers; bad snapshots must be refused, by
// name, before anything runs.

import { afterAll, describe, expect, test } from "bun:test";
import { copyFileSync, mkdtempSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { bootProbe } from "../src/boot/probe.ts";
import { createSnapshot, regsRecord } from "../src/snapshot/create.ts";
import { restoreSnapshot } from "../src/snapshot/restore.ts";
import { decodeSnapshot, encodeSnapshot, kindling_snapshot_header, readSnapshotFile } from "../src/snapshot/format.ts";
import { mergeDiff } from "../src/snapshot/memory-file.ts";
import { SnapshotError } from "../src/snapshot/errors.ts";
import { SCRATCH_PORT, PAGE_SIZE } from "../src/arch/x86_64/layout.ts";
import { StructView } from "../src/kvm/struct.ts";
import type { Vm } from "../src/vm.ts";
import { prewarmVcpuWorkers } from "../src/vcpu/thread.ts";
import { kvmTest } from "./support/kvm.ts";

const dir = mkdtempSync(join(tmpdir(), "kindling-snapshot-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const CHILD = join(import.meta.dir, "support", "snapshot-child.ts");

/** A scratch-port device that records the counts and resolves once one reaches `until`. */
function counterPort(until: number) {
  const seen = { last: 0, reached: Promise.withResolvers<void>() };
  const device = {
    name: "count",
    read: () => {},
    write: (_o: number, d: Uint8Array) => {
      seen.last = new DataView(d.buffer, d.byteOffset, d.byteLength).getUint32(0, true);
      if (seen.last >= until) seen.reached.resolve();
    },
  };
  return { seen, device };
}

/** Boot the counter probe, let it count to at least `until`, pause it. */
async function countingVm(until: number, opts: { trackDirtyPages?: boolean } = {}) {
  const { seen, device } = counterPort(until);
  const vm = await bootProbe("counter", { ...opts, beforeStart: (v) => v.pio.register(SCRATCH_PORT, 4, device) });
  const timer = setTimeout(() => seen.reached.reject(new Error("the counter did not reach its target in 10 s")), 10_000);
  await seen.reached.promise;
  clearTimeout(timer);
  vm.pause();
  return { vm, seen };
}

function spawnRestore(state: string, mem: string) {
  const p = Bun.spawnSync(["bun", CHILD, state, mem], { stderr: "pipe", timeout: 20_000 });
  const out = p.stdout.toString().trim().split("\n").at(-1) ?? "";
  try {
    return JSON.parse(out) as { ok: boolean; code?: string; message?: string; pid: number; paused: boolean; regs: Record<string, string>; counts: number[] };
  } catch {
    throw new Error(`restore child printed no JSON (exit ${p.exitCode}): ${out}\n${p.stderr.toString()}`);
  }
}

const paths = (name: string) => ({ snapshotPath: join(dir, `${name}.state`), memFilePath: join(dir, `${name}.mem`) });

/** One good snapshot shared by the refusal tests, made once. */
let good: { snapshotPath: string; memFilePath: string } | undefined;
async function goodSnapshot() {
  if (good) return good;
  const { vm } = await countingVm(100);
  const p = paths("good");
  await createSnapshot(vm, { ...p, kind: "counter" });
  await vm.stop();
  good = p;
  return p;
}

describe("snapshot and restore: the counter probe", () => {
  kvmTest("pause, snapshot, restore in a new process: the count continues where it was, registers equal", async () => {
    const { vm, seen } = await countingVm(2000);
    const p = paths("counter");
    const result = await createSnapshot(vm, { ...p, kind: "counter" });
    const before = regsRecord(vm.vcpus[0]!.fd.getRegs().bytes);
    const inMemory = vm.memory.readU32(Number(BigInt(before.rbx!))); // rbx holds &counter
    const lastOnPort = seen.last;
    await vm.stop();
    expect(result.memoryBytes).toBeGreaterThan(0);
    // The pause may land between the store and the port write: memory is then one ahead of the port.
    expect([lastOnPort, lastOnPort + 1]).toContain(inMemory);

    const child = spawnRestore(p.snapshotPath, p.memFilePath);
    expect(child.ok).toBe(true);
    expect(child.pid).not.toBe(process.pid);
    expect(child.paused).toBe(true); // without resume, a restored VM comes up Paused
    expect(child.regs).toEqual(before);
    expect(child.counts).toEqual([1, 2, 3, 4, 5].map((i) => lastOnPort + i));
  }, 30_000);

  kvmTest("Diff: only the pages dirtied since the last snapshot are written; base + diff restores the later guest", async () => {
    const { vm, seen } = await countingVm(500, { trackDirtyPages: true });
    const base = paths("base");
    const full = await createSnapshot(vm, { ...base, kind: "counter" });
    vm.resume();
    const target = seen.last + 1000;
    const more = Promise.withResolvers<void>();
    const poll = setInterval(() => seen.last >= target && more.resolve(), 1);
    await more.promise;
    clearInterval(poll);
    vm.pause();
    const diff = paths("diff");
    const d = await createSnapshot(vm, { ...diff, kind: "counter", snapshotType: "Diff" });
    const lastOnPort = seen.last;
    const regs = regsRecord(vm.vcpus[0]!.fd.getRegs().bytes);
    await vm.stop();

    // The counter's page (and the stack page the entry code used, if any): a few pages, not the guest's 16 MiB.
    expect(d.memoryBytes).toBeGreaterThan(0);
    expect(d.memoryBytes).toBeLessThanOrEqual(4 * PAGE_SIZE);
    expect(d.memoryBytes).toBeLessThan(full.memoryBytes);
    expect(d.pages!.reduce((n, [, c]) => n + c, 0) * PAGE_SIZE).toBe(d.memoryBytes);
    // Only the dirty pages hold data on disk: the diff file is sparse.
    expect(statSync(diff.memFilePath).blocks * 512).toBeLessThanOrEqual(d.memoryBytes + 4 * PAGE_SIZE);

    // Merge the diff onto a copy of the base's memory, then restore with the diff's state.
    const merged = join(dir, "merged.mem");
    copyFileSync(base.memFilePath, merged);
    expect(mergeDiff(merged, diff.memFilePath, readSnapshotFile(diff.snapshotPath).memory.pages!)).toBe(d.memoryBytes);
    const child = spawnRestore(diff.snapshotPath, merged);
    expect(child.ok).toBe(true);
    expect(child.regs).toEqual(regs);
    expect(child.counts[0]).toBe(lastOnPort + 1);
    // And the base alone still restores the earlier guest.
    const early = spawnRestore(base.snapshotPath, base.memFilePath);
    expect(early.ok).toBe(true);
    expect(early.counts[0]).toBeLessThan(lastOnPort);
  }, 30_000);

  kvmTest("a restored VM is an independent copy: two restores in one process count on their own", async () => {
    const p = await goodSnapshot();
    const start = readSnapshotFile(p.snapshotPath);
    // The first takes a spare worker (loaded beforehand, its thread known), the second a new one.
    await prewarmVcpuWorkers(1);
    const vms: Vm[] = [];
    const lasts = [0, 0];
    for (const i of [0, 1]) {
      const { vm } = await restoreSnapshot({
        ...p, resume: i === 0,
        restoreDevices: (v) => v.pio.register(SCRATCH_PORT, 4, { name: "count", read: () => {}, write: (_o, d) => (lasts[i] = new DataView(d.buffer, d.byteOffset).getUint32(0, true)) }),
      });
      vms.push(vm);
    }
    await Bun.sleep(200);
    expect(lasts[0]).toBeGreaterThan(100);
    expect(lasts[1]).toBe(0); // not resumed: paused, nothing ran
    vms[1]!.resume();
    await Bun.sleep(100);
    expect(lasts[1]).toBeGreaterThan(100);
    // A pause reaches the spare worker's thread too: its count stops while the other goes on.
    vms[0]!.pause();
    await Bun.sleep(50);
    const held = lasts[0];
    const other = lasts[1]!;
    await Bun.sleep(100);
    expect(lasts[0]).toBe(held);
    expect(lasts[1]).toBeGreaterThan(other);
    for (const vm of vms) await vm.stop();
    expect(start.machine.kind).toBe("counter");
  }, 30_000);
});

describe("bad snapshots are refused by name, before anything runs", () => {
  /** Restore `state` + `mem` in a child; it must fail with `code` and must not have run the guest. */
  function expectRefused(state: string, mem: string, code: string, message: RegExp) {
    const child = spawnRestore(state, mem);
    expect({ ok: child.ok, code: child.code }).toEqual({ ok: false, code });
    expect(child.message).toMatch(message);
    // The guest wrote nothing: no vCPU ran.
    expect(child.counts).toEqual([]);
  }

  kvmTest("truncated state file", async () => {
    const p = await goodSnapshot();
    const bytes = readFileSync(p.snapshotPath);
    const cut = join(dir, "truncated.state");
    writeFileSync(cut, bytes.subarray(0, bytes.byteLength - 100));
    expectRefused(cut, p.memFilePath, "TRUNCATED", /truncated/);
    writeFileSync(cut, bytes.subarray(0, 20));
    expectRefused(cut, p.memFilePath, "TRUNCATED", /header/);
  }, 30_000);

  kvmTest("one flipped byte in the state file", async () => {
    const p = await goodSnapshot();
    const bytes = new Uint8Array(readFileSync(p.snapshotPath));
    bytes[Math.floor(bytes.byteLength / 2)]! ^= 0x01;
    const bad = join(dir, "flipped.state");
    writeFileSync(bad, bytes);
    expectRefused(bad, p.memFilePath, "CORRUPTED", /SHA-256/);
  }, 30_000);

  kvmTest("a snapshot format version this kindling does not read", async () => {
    const p = await goodSnapshot();
    const bytes = new Uint8Array(readFileSync(p.snapshotPath));
    new StructView(kindling_snapshot_header, bytes).set("format_version", 99);
    const bad = join(dir, "version.state");
    writeFileSync(bad, bytes);
    expectRefused(bad, p.memFilePath, "WRONG_VERSION", /version 99/);
  }, 30_000);

  kvmTest("a memory file too short for the guest's RAM", async () => {
    const p = await goodSnapshot();
    const short = join(dir, "short.mem");
    copyFileSync(p.memFilePath, short);
    truncateSync(short, statSync(short).size - PAGE_SIZE);
    expectRefused(p.snapshotPath, short, "MEMORY_FILE_TOO_SHORT", /too short/);
  }, 30_000);

  kvmTest("a snapshot from a host this one cannot stand in for (another CPU vendor)", async () => {
    const p = await goodSnapshot();
    const state = readSnapshotFile(p.snapshotPath);
    state.host.cpu_vendor = state.host.cpu_vendor === "GenuineIntel" ? "AuthenticAMD" : "GenuineIntel";
    const bad = join(dir, "vendor.state");
    writeFileSync(bad, encodeSnapshot(state));
    expectRefused(bad, p.memFilePath, "INCOMPATIBLE", /CPU/);
  }, 30_000);

  kvmTest("a snapshot that puts guest RAM where kindling's layout does not", async () => {
    const p = await goodSnapshot();
    const state = readSnapshotFile(p.snapshotPath);
    state.machine.regions = [{ gpa: 0x1000, size: state.memory.size }];
    const bad = join(dir, "regions.state");
    writeFileSync(bad, encodeSnapshot(state));
    expectRefused(bad, p.memFilePath, "INVALID", /not kindling's layout/);
  }, 30_000);

  kvmTest("create while running is refused; the VM keeps running", async () => {
    const { seen, device } = counterPort(50);
    const vm = await bootProbe("counter", { beforeStart: (v) => v.pio.register(SCRATCH_PORT, 4, device) });
    await seen.reached.promise;
    const p = paths("running");
    const err = await createSnapshot(vm, { ...p, kind: "counter" }).catch((e) => e);
    expect(err).toBeInstanceOf(SnapshotError);
    expect((err as SnapshotError).code).toBe("VM_RUNNING");
    expect(() => statSync(p.snapshotPath)).toThrow(); // nothing written
    const at = seen.last;
    await Bun.sleep(50);
    expect(seen.last).toBeGreaterThan(at);
    await vm.stop();
  }, 30_000);

  test("state file checks without KVM: good round trip, bad magic", () => {
    expect(() => decodeSnapshot(new TextEncoder().encode("{\"hello\": 1}"), "x.json")).toThrow(/not a kindling snapshot/);
  });
});
