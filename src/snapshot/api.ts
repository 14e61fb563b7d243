// PUT /snapshot/create and PUT /snapshot/load as Firecracker defines them, for MicroVM (src/microvm.ts),
// which checks the bodies (params.ts) and its own state first, and turns a SnapshotError into the API's 400.
//
// create: a Full or Diff snapshot of the paused VM, the configuration recorded as the machine description.
// load:   the `File` memory backend only (`Uffd` needs a page-fault handler process, which kindling does not
//         have); network_overrides and vsock_override must name devices the snapshot has. On any failure
//         nothing is left running (restore.ts takes down what it built).
//
// Device state: the probe guests kindling snapshots have no devices beyond the legacy ones. Snapshots of
// microVMs with virtio devices (drives, network interfaces, vsock, entropy) need each device's state saved
// and rebuilt, which comes with the per-device describe/restore of the architecture work; until then they
// are refused by name at create time, so no snapshot is made that could not be loaded correctly.

import { Vm } from "../vm.ts";
import { createSnapshot, type SnapshotResult } from "./create.ts";
import { restoreSnapshot, type Restored } from "./restore.ts";
import { SnapshotError } from "./errors.ts";
import type { SnapshotCreateParams, SnapshotLoadParams } from "./params.ts";

/** The parts of a microVM's configuration (FullVmConfiguration) a snapshot looks at. */
export interface ConfiguredDevices {
  drives?: { drive_id: string }[];
  "network-interfaces"?: { iface_id: string }[];
  vsock?: unknown;
  entropy?: unknown;
}

/** The configured devices a snapshot cannot hold yet (see the top of this file). */
function virtioDevicesIn(config: ConfiguredDevices): string[] {
  return [
    ...(config.drives ?? []).map((d) => `drive ${d.drive_id}`),
    ...(config["network-interfaces"] ?? []).map((n) => `network interface ${n.iface_id}`),
    ...(config.vsock ? ["vsock"] : []),
    ...(config.entropy ? ["entropy device"] : []),
  ];
}

export async function snapshotMicroVm(vm: unknown, p: SnapshotCreateParams, ctx: { config: ConfiguredDevices; kind: string }): Promise<SnapshotResult> {
  if (!(vm instanceof Vm)) throw new SnapshotError("INVALID", "this microVM was not booted by kindling's VM (a stand-in cannot be snapshotted)");
  const devices = virtioDevicesIn(ctx.config);
  if (devices.length > 0 || vm.virtio.length > 0) {
    throw new SnapshotError("INVALID", `kindling cannot save virtio device state yet (this microVM has: ${devices.join(", ") || `${vm.virtio.length} virtio devices`})`);
  }
  return createSnapshot(vm, {
    snapshotPath: p.snapshot_path,
    memFilePath: p.mem_file_path,
    snapshotType: p.snapshot_type,
    kind: ctx.kind,
    description: ctx.config as Record<string, unknown>,
  });
}

export interface LoadContext {
  consoleOutput: (bytes: Uint8Array) => void;
  log: (line: string) => void;
}

export interface Loaded extends Restored {
  resumed: boolean;
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
  const restored = await restoreSnapshot({
    snapshotPath: p.snapshot_path,
    memFilePath: p.mem_backend?.backend_path ?? p.mem_file_path!,
    resume: p.resume_vm ?? false,
    trackDirtyPages: p.track_dirty_pages ?? p.enable_diff_snapshots ?? false,
    clockRealtime: p.clock_realtime ?? false,
    consoleOutput: ctx.consoleOutput,
    log: ctx.log,
    restoreDevices: (_vm, state) => {
      const config = state.machine.description as ConfiguredDevices | undefined;
      const devices = config ? virtioDevicesIn(config) : [];
      if (devices.length > 0) throw new SnapshotError("INVALID", `${p.snapshot_path} has virtio devices (${devices.join(", ")}), whose state kindling cannot restore yet`);
      // Overrides must name what the snapshot has (Firecracker refuses unknown ones too).
      for (const o of p.network_overrides ?? []) throw new SnapshotError("INVALID", `network_overrides: the snapshot has no network interface ${o.iface_id}`);
      if (p.vsock_override) throw new SnapshotError("INVALID", "vsock_override: the snapshot has no vsock device");
    },
  });
  return { ...restored, resumed: p.resume_vm ?? false };
}
