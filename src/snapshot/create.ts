// Taking a snapshot of a paused VM: the vCPUs' and the VM's KVM state, the devices' state, and guest RAM.
//
//   1. every vCPU must be parked (out of KVM_RUN with no exit half-handled): the VM is Paused
//   2. vCPU state, each in Firecracker's save order (vcpu-state.ts); then the VM's PIT, clock and irqchips
//   3. the memory file (Full, or Diff: pages dirtied since the last snapshot), written atomically
//   4. the state file last, atomically: a state file never names a memory file that is not all there

import { KVM_CAP_STATE, kvm_regs } from "../kvm/uapi.ts";
import { PAGE_SIZE } from "../arch/x86_64/layout.ts";
import type { Vm } from "../vm.ts";
import { dirtyBitmap } from "../memory.ts";
import { saveVcpuState, type VcpuStateCaps } from "./vcpu-state.ts";
import { saveVmState } from "./vm-state.ts";
import { hostFacts } from "./compat.ts";
import { writeSnapshotFile, type SnapshotState } from "./format.ts";
import { orBitmaps, writeDiffMemory, writeFullMemory, type PageRun } from "./memory-file.ts";
import { SnapshotError } from "./errors.ts";
import pkg from "../../package.json" with { type: "json" };

export type SnapshotType = "Full" | "Diff";

export interface CreateSnapshotOptions {
  snapshotPath: string;
  memFilePath: string;
  snapshotType?: SnapshotType;
  /** What was booted, recorded for the restorer (a probe's name, "linux"). */
  kind: string;
  /** The machine description (the configuration the VM was built from), as plain data. */
  description?: Record<string, unknown>;
  /** Each device's state, by name. */
  devices?: Record<string, unknown>;
}

export interface SnapshotResult {
  stateBytes: number;
  /** Bytes of guest pages written to the memory file (a Diff: only the dirty pages). */
  memoryBytes: number;
  /** Diff: the runs of pages written. */
  pages?: PageRun[];
  /** Milliseconds: reading state, writing memory, writing the state file. */
  timings: { state: number; memory: number; stateFile: number };
}

export function vcpuStateCaps(vm: Vm): VcpuStateCaps {
  const has = (cap: number) => vm.kvm.checkExtension(cap) > 0;
  return { xsave: has(KVM_CAP_STATE.XSAVE), xcrs: has(KVM_CAP_STATE.XCRS), debugregs: has(KVM_CAP_STATE.DEBUGREGS), tscKhz: has(KVM_CAP_STATE.GET_TSC_KHZ) };
}

/** Resolves once every vCPU of a paused VM is parked; rejects if the VM is not paused. */
export async function whenParked(vm: Vm, timeoutMs = 2000): Promise<void> {
  const until = performance.now() + timeoutMs;
  for (;;) {
    if (vm.stopping) throw new SnapshotError("VM_RUNNING", "the VM has stopped");
    if (!vm.paused) throw new SnapshotError("VM_RUNNING", "the VM must be Paused to snapshot it (PATCH /vm {\"state\": \"Paused\"} first); it is running");
    if (vm.vcpus.every((v) => v.parked)) return;
    if (performance.now() > until) throw new SnapshotError("VM_RUNNING", `the vCPUs did not stop within ${timeoutMs} ms of the pause`);
    await Bun.sleep(1);
  }
}

export async function createSnapshot(vm: Vm, opts: CreateSnapshotOptions): Promise<SnapshotResult> {
  const type = opts.snapshotType ?? "Full";
  if (!vm.irqchip) throw new SnapshotError("INVALID", "only VMs with the in-kernel irqchip can be snapshotted");
  if (type === "Diff" && !vm.trackDirtyPages) {
    throw new SnapshotError("INVALID", "a Diff snapshot needs dirty-page tracking (track_dirty_pages) enabled when the VM was created or loaded");
  }
  await whenParked(vm);

  const t0 = performance.now();
  const caps = vcpuStateCaps(vm);
  const msrIndices = vm.kvm.msrIndexList();
  const vcpus = vm.vcpus.map((v) => saveVcpuState(v.fd, caps, msrIndices));
  const vmState = saveVmState(vm.fd);
  const t1 = performance.now();

  // Dirty pages since the last snapshot: KVM's log of guest writes (cleared as it is read), OR-ed with the
  // pages the VMM touched. A Full snapshot reads (and so clears) them too: the next Diff starts from it.
  const bitmaps = vm.trackDirtyPages
    ? vm.memory.regions.map((r, slot) => orBitmaps(vm.fd.getDirtyLog(slot, r.bytes.byteLength / PAGE_SIZE), vm.memory.takeVmmDirty(slot)))
    : vm.memory.regions.map((r) => dirtyBitmap(r.bytes.byteLength));
  const written = type === "Full" ? writeFullMemory(vm.memory, opts.memFilePath) : writeDiffMemory(vm.memory, opts.memFilePath, bitmaps);
  const t2 = performance.now();

  const state: SnapshotState = {
    kindling_version: pkg.version,
    created_at: new Date().toISOString(),
    host: hostFacts(vm.kvm, vcpus[0]!.tsc_khz),
    machine: {
      mem_size: vm.memory.size,
      regions: vm.memory.regions.map((r) => ({ gpa: r.gpa, size: r.bytes.byteLength })),
      vcpus: vm.vcpus.length,
      irqchip: vm.irqchip,
      syscall_assist: vm.vcpus.some((v) => v.syscallAssist !== undefined),
      kind: opts.kind,
      ...(opts.description ? { description: opts.description } : {}),
    },
    memory: { snapshot_type: type, size: vm.memory.size, ...(written.pages ? { pages: written.pages } : {}) },
    vm: vmState,
    vcpus,
    devices: opts.devices ?? {},
  };
  const stateBytes = writeSnapshotFile(opts.snapshotPath, state);
  const t3 = performance.now();
  return { stateBytes, memoryBytes: written.bytesWritten, pages: written.pages, timings: { state: t1 - t0, memory: t2 - t1, stateFile: t3 - t2 } };
}

/** kvm_regs of a vCPU as a plain record of hex strings, for comparing two machines' registers. */
export function regsRecord(bytes: Uint8Array): Record<string, string> {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return Object.fromEntries(kvm_regs.fields.map((f) => [f.name, `0x${dv.getBigUint64(f.offset, true).toString(16)}`]));
}
