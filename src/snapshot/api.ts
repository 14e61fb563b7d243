// PUT /snapshot/create and PUT /snapshot/load as Firecracker defines them, for MicroVM (src/microvm.ts),
// which checks the bodies (params.ts) and its own state first, and turns a SnapshotError into the API's 400.
//
// create: the paused VM's devices described (devices.ts: a vsock sends its transport reset first), then a
//         Full or Diff snapshot, with the machine description (the recipe's devices, each disk's size) and
//         the configuration (for GET /vm/config after a load).
// load:   the `File` memory backend only (`Uffd` needs a page-fault handler process, which kindling does not
//         have); the devices rebuilt from the description with network_overrides and vsock_override. On any
//         failure nothing is left running (restore.ts takes down what it built).

import { Vm } from "../vm.ts";
import { createSnapshot, whenParked, type SnapshotResult } from "./create.ts";
import { restoreSnapshot, type Restored } from "./restore.ts";
import { SnapshotError } from "./errors.ts";
import { describeDevices, machineRecord, rebuildDevices, type DevicesState, type MachineRecord, type RebuildOptions } from "./devices.ts";
import type { SnapshotCreateParams, SnapshotLoadParams } from "./params.ts";
import type { MachineDevices } from "../boot/machine.ts";

/** What a microVM snapshot records besides the KVM state: the configuration and the machine's devices. */
export interface MicroVmDescription {
  config: Record<string, unknown>;
  machine: MachineRecord;
}

export async function snapshotMicroVm(
  vm: unknown,
  p: SnapshotCreateParams,
  ctx: { config: Record<string, unknown>; machine: Parameters<typeof machineRecord>[0]; names: readonly string[]; kind: string },
): Promise<SnapshotResult> {
  if (!(vm instanceof Vm)) throw new SnapshotError("INVALID", "this microVM was not booted by kindling's VM (a stand-in cannot be snapshotted)");
  await whenParked(vm);
  const description: MicroVmDescription = { config: ctx.config, machine: machineRecord(ctx.machine) };
  const devices = describeDevices(vm, ctx.names);
  return createSnapshot(vm, {
    snapshotPath: p.snapshot_path,
    memFilePath: p.mem_file_path,
    snapshotType: p.snapshot_type,
    kind: ctx.kind,
    description: description as unknown as Record<string, unknown>,
    devices: devices as unknown as Record<string, unknown>,
  });
}

export interface LoadContext extends Pick<RebuildOptions, "models" | "onBootComplete"> {
  consoleOutput: (bytes: Uint8Array) => void;
  log: (line: string) => void;
}

export interface Loaded extends Restored {
  resumed: boolean;
  /** The rebuilt devices by the recipe's names (virtio: in window order); none for a snapshot made below the API. */
  devices: MachineDevices;
  description?: MicroVmDescription;
}

export async function loadSnapshotBody(p: SnapshotLoadParams, ctx: LoadContext): Promise<Loaded> {
  if ((p.mem_file_path === undefined) === (p.mem_backend === undefined)) {
    throw new SnapshotError("INVALID", "mem_backend: exactly one of mem_file_path and mem_backend must be given");
  }
  if (p.mem_backend?.backend_type === "Uffd") {
    throw new SnapshotError("INVALID", "mem_backend.backend_type: Uffd is not supported by kindling (no userfaultfd page server); use File");
  }
  if (p.huge_pages !== undefined && p.huge_pages !== "None" && p.huge_pages !== "Snapshot") {
    throw new SnapshotError("INVALID", `huge_pages: ${p.huge_pages} is not supported by kindling (guest memory uses 4 KiB pages)`);
  }
  let devices: MachineDevices = { drives: new Map(), nets: new Map(), virtio: [] };
  let description: MicroVmDescription | undefined;
  const restored = await restoreSnapshot({
    snapshotPath: p.snapshot_path,
    memFilePath: p.mem_backend?.backend_path ?? p.mem_file_path!,
    resume: p.resume_vm ?? false,
    trackDirtyPages: p.track_dirty_pages ?? p.enable_diff_snapshots ?? false,
    clockRealtime: p.clock_realtime ?? false,
    consoleOutput: ctx.consoleOutput,
    log: ctx.log,
    restoreDevices: (vm, state) => {
      description = state.machine.description as MicroVmDescription | undefined;
      if (!description?.machine) {
        // A snapshot made below the API (a probe guest): only the VM's own state, no devices to rebuild.
        if (p.network_overrides?.length) throw new SnapshotError("INVALID", `network_overrides: ${p.snapshot_path} has no network interfaces`);
        if (p.vsock_override) throw new SnapshotError("INVALID", "vsock_override: the snapshot has no vsock device");
        return;
      }
      devices = rebuildDevices(vm, description.machine, state.devices as unknown as DevicesState, {
        networkOverrides: p.network_overrides, vsockOverride: p.vsock_override, models: ctx.models, log: ctx.log, onBootComplete: ctx.onBootComplete,
      });
    },
  });
  return { ...restored, resumed: p.resume_vm ?? false, devices, description };
}
