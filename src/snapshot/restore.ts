// Restoring a snapshot into a new VM. Every check that can refuse the snapshot comes before any vCPU runs,
// and a failure at any step takes down everything built so far: no half-restored VM is left behind.
//
//   1. the state file: magic, version, length, checksum, content (format.ts)
//   2. the memory file: present, and at least as large as the guest's RAM
//   3. a VM of the recorded shape (memory layout, vCPUs, irqchip) with its RAM mapped from the memory file,
//      MAP_PRIVATE: pages load on first touch and the guest's writes stay in this process
//   4. this host can stand in for the one that made the snapshot (compat.ts)
//   5. the VM's state (PIT, clock, irqchips), then each vCPU's, in Firecracker's restore order
//   6. the devices' state (the caller's `restoreDevices`)
//   7. the vCPUs start, Paused unless `resume`

import { statSync } from "node:fs";
import { Vm, type VmOptions } from "../vm.ts";
import { mapGuestMemoryFile, type GuestMemory } from "../memory.ts";
import { freeGuestMemory } from "../memory.ts";
import { readSnapshotFile, type SnapshotState } from "./format.ts";
import { checkCompatible } from "./compat.ts";
import { restoreVmState } from "./vm-state.ts";
import { restoreVcpuState } from "./vcpu-state.ts";
import { SnapshotError } from "./errors.ts";
import { DeviceStateError } from "../devices/state.ts";
import { ramRegions } from "../arch/x86_64/layout.ts";

export interface RestoreOptions extends Pick<VmOptions, "consoleOutput" | "log" | "queueNotify"> {
  snapshotPath: string;
  memFilePath: string;
  /** Start the vCPUs at once (Firecracker's resume_vm); otherwise the VM comes up Paused. */
  resume?: boolean;
  trackDirtyPages?: boolean;
  /** Advance the guest clock by the time since the snapshot (Firecracker's clock_realtime). */
  clockRealtime?: boolean;
  /** Rebuild and attach the devices from their saved state, before the vCPUs start. */
  restoreDevices?: (vm: Vm, state: SnapshotState) => void | Promise<void>;
}

/** Steps of a restore, in order (bench/metrics/snapshot.ts reports each). */
export type RestoreStep =
  | "readFile" | "checksum" | "parse" | "validate" | "checkFiles" | "mapMemory" | "createVm" | "compat" | "vmState" | "vcpuState" | "devices"
  | "start";

export interface Restored {
  vm: Vm;
  state: SnapshotState;
  /**
   * Milliseconds spent in each step, for the benchmark's breakdown: reading the state file, its checksum,
   * JSON.parse, the schema; the memory file's checks and the layout; mapping the memory file; the VM (KVM
   * objects, devices, the vCPU and its worker); the host check; KVM's VM state; the vCPUs' state; the
   * caller's devices; starting the vCPUs.
   */
  timings: Record<RestoreStep, number>;
}

/** Step 1 and 2: read and check the files; nothing is created. `timings` receives the steps' times. */
export function checkSnapshotFiles(snapshotPath: string, memFilePath: string, timings?: Partial<Record<RestoreStep, number>>): SnapshotState {
  const state = readSnapshotFile(snapshotPath, timings);
  const t0 = performance.now();
  const size = statSync(memFilePath, { throwIfNoEntry: false })?.size;
  if (size === undefined) throw new SnapshotError("NOT_FOUND", `memory file ${memFilePath} does not exist`);
  if (size < state.memory.size) {
    throw new SnapshotError("MEMORY_FILE_TOO_SHORT", `memory file ${memFilePath} is too short: ${size} bytes, the snapshot's guest has ${state.memory.size} bytes of RAM`);
  }
  const regionsTotal = state.machine.regions.reduce((n, r) => n + r.size, 0);
  if (regionsTotal !== state.memory.size || state.machine.mem_size !== state.memory.size) {
    throw new SnapshotError("INVALID", `${snapshotPath}: the memory regions add up to ${regionsTotal} bytes, the memory to ${state.memory.size}`);
  }
  // The layout must be the one kindling gives a guest of that size (layout.ts): a snapshot names no RAM
  // at addresses of its own choosing.
  const expected = ramRegions(state.machine.mem_size);
  const regions = state.machine.regions;
  if (regions.length !== expected.length || regions.some((r, i) => r.gpa !== expected[i]!.gpa || r.size !== expected[i]!.size)) {
    throw new SnapshotError("INVALID", `${snapshotPath}: memory regions ${JSON.stringify(state.machine.regions)} are not kindling's layout for ${state.machine.mem_size} bytes (${JSON.stringify(expected)})`);
  }
  if (timings) timings.checkFiles = performance.now() - t0;
  return state;
}

export async function restoreSnapshot(opts: RestoreOptions): Promise<Restored> {
  const files: Partial<Record<RestoreStep, number>> = {};
  const state = checkSnapshotFiles(opts.snapshotPath, opts.memFilePath, files);
  const t0 = performance.now();
  let memory: GuestMemory | undefined = mapGuestMemoryFile(state.machine.regions, opts.memFilePath);
  const t1 = performance.now();
  let vm: Vm | undefined;
  try {
    vm = new Vm({
      memSize: state.machine.mem_size,
      vcpus: state.machine.vcpus,
      irqchip: state.machine.irqchip,
      syscallAssist: state.machine.syscall_assist ?? false,
      memory,
      trackDirtyPages: opts.trackDirtyPages,
      consoleOutput: opts.consoleOutput,
      log: opts.log,
      queueNotify: opts.queueNotify,
    });
    memory = undefined; // the VM owns it now and frees it when it ends
    const t2 = performance.now();
    if (state.vcpus.length !== vm.vcpus.length) throw new SnapshotError("INVALID", `${opts.snapshotPath}: ${state.vcpus.length} vCPU states for ${vm.vcpus.length} vCPUs`);
    const hostTscKhz = vm.vcpus[0]!.fd.getTscKhz();
    checkCompatible(state, vm.kvm, hostTscKhz, opts.snapshotPath);
    const t3 = performance.now();
    restoreVmState(vm.fd, state.vm, { clockRealtime: opts.clockRealtime });
    const t4 = performance.now();
    state.vcpus.forEach((s, i) => restoreVcpuState(vm!.vcpus[i]!.fd, s, hostTscKhz));
    const t5 = performance.now();
    await opts.restoreDevices?.(vm, state);
    const t6 = performance.now();
    await vm.start({ paused: !opts.resume });
    const t7 = performance.now();
    const step = (k: RestoreStep) => files[k] ?? 0;
    return {
      vm, state,
      timings: {
        readFile: step("readFile"), checksum: step("checksum"), parse: step("parse"), validate: step("validate"), checkFiles: step("checkFiles"),
        mapMemory: t1 - t0, createVm: t2 - t1, compat: t3 - t2, vmState: t4 - t3, vcpuState: t5 - t4, devices: t6 - t5, start: t7 - t6,
      },
    };
  } catch (e) {
    if (memory) freeGuestMemory(memory);
    if (vm) await vm.stop(`restore failed: ${(e as Error).message}`);
    if (e instanceof SnapshotError) throw e;
    // A device state this build cannot read most often comes from another build of kindling.
    const hint = e instanceof DeviceStateError ? ` (the snapshot was made by kindling ${state.kindling_version} at ${state.created_at}; a device's state format may have changed since: make the snapshot again)` : "";
    throw new SnapshotError("INVALID", `restoring ${opts.snapshotPath} failed: ${(e as Error).message}${hint}`);
  }
}
