// The devices in a snapshot. Each device model describes its guest-visible state as plain data and is put
// back from it (src/devices/state.ts): the legacy devices (the UART with its registers and the input not yet
// read, the i8042, the CMOS RTC), the boot timer, and every virtio device, transport (registers, queues, ring
// positions) and device type around it. What a device holds on the host (a disk file, a TAP, a socket) is
// wiring, not state: the restore builds the devices again from the machine description, with the recipe
// that built them at boot (src/boot/machine.ts), so each lands in the same MMIO window on the same IRQ.
//
// Firecracker's rules kept here:
//   - disks are reopened by path, and must still be the size they were (a disk that changed under a
//     snapshot would show the guest another disk than the one its page cache describes);
//   - `network_overrides` gives a network interface another TAP (clones cannot share one);
//   - vsock: host sockets cannot be carried over, so at snapshot time the guest driver is sent
//     VIRTIO_VSOCK_EVENT_TRANSPORT_RESET (it drops its connections), and `vsock_override` gives the device
//     another Unix socket path.

import { statSync } from "node:fs";
import type { Vm } from "../vm.ts";
import { BOOT_TIMER_SIZE, BOOT_TIMER_START } from "../arch/x86_64/layout.ts";
import { BootTimer, bootTimerStart, type BootCompleteInfo, type BootTimerState } from "../devices/boot-timer.ts";
import type { SerialState } from "../devices/serial.ts";
import type { I8042State } from "../devices/i8042.ts";
import type { CmosRtcState } from "../devices/rtc.ts";
import type { VirtioMmioState } from "../devices/virtio/mmio.ts";
import { VirtioVsock } from "../devices/virtio/vsock.ts";
import {
  attachVirtioDevices, createVirtioDevices, type BalloonConfig, type DeviceModels, type DriveConfig, type MachineConfig, type MachineDevices,
  type NetConfig, type VsockConfig,
} from "../boot/machine.ts";
import { SnapshotError } from "./errors.ts";

/** The machine's devices as the snapshot records them: the recipe's description, each drive with its size. */
export interface MachineRecord {
  drives: (Omit<DriveConfig, "path"> & { path: string; size: number })[];
  entropy: boolean;
  nets: NetConfig[];
  vsock?: VsockConfig;
  balloon?: BalloonConfig;
}

export interface DevicesState {
  legacy: { serial: SerialState; i8042: I8042State; rtc: CmosRtcState };
  bootTimer: BootTimerState | null;
  /** In window order: the recipe's name, the window and IRQ it had, its transport's description. */
  virtio: { name: string; addr: number; irq: number; state: VirtioMmioState }[];
}

/** The device part of a machine description, as plain data, with each drive's size now. */
export function machineRecord(m: Pick<MachineConfig, "drives" | "entropy" | "nets" | "vsock" | "balloon">): MachineRecord {
  return {
    drives: (m.drives ?? []).map((d) => ({ ...d, size: statSync(d.path).size })),
    entropy: m.entropy ?? false,
    nets: (m.nets ?? []).map((n) => ({ ...n })),
    ...(m.vsock ? { vsock: { ...m.vsock } } : {}),
    ...(m.balloon ? { balloon: { ...m.balloon } } : {}),
  };
}

function bootTimerOf(vm: Vm): BootTimer | undefined {
  const d = vm.mmio.find(BOOT_TIMER_START)?.device;
  return d instanceof BootTimer ? d : undefined;
}

/**
 * Describe every device of a paused VM. `names` are the recipe's names of its virtio devices, in window
 * order. A vsock device first sends the guest its transport reset (see the top of this file).
 */
export function describeDevices(vm: Vm, names: readonly string[]): DevicesState {
  if (names.length !== vm.virtio.length) throw new SnapshotError("INVALID", `${vm.virtio.length} virtio devices, ${names.length} names`);
  for (const a of vm.virtio) if (a.transport.device instanceof VirtioVsock) a.transport.device.sendTransportReset();
  return {
    legacy: { serial: vm.legacy.serial.describe(), i8042: vm.legacy.i8042.describe(), rtc: vm.legacy.rtc.describe() },
    bootTimer: bootTimerOf(vm)?.describe() ?? null,
    virtio: vm.virtio.map((a, i) => ({ name: names[i]!, addr: a.addr, irq: a.irq, state: a.transport.describe() })),
  };
}

export interface RebuildOptions {
  /** iface_id -> the TAP to use instead (Firecracker's network_overrides). */
  networkOverrides?: { iface_id: string; host_dev_name: string }[];
  /** The vsock's new Unix socket path (Firecracker's vsock_override). */
  vsockOverride?: { uds_path: string };
  models?: DeviceModels;
  log?: (line: string) => void;
  onBootComplete?: (info: BootCompleteInfo) => void;
}

/**
 * Build the recorded devices again on a restored VM and put each back in its state. Throws SnapshotError
 * naming the device (the caller takes the VM down: nothing is left half-restored).
 */
export function rebuildDevices(vm: Vm, machine: MachineRecord, state: DevicesState, o: RebuildOptions = {}): MachineDevices {
  // Overrides must name what the snapshot has (Firecracker refuses unknown ones too).
  const nets = machine.nets.map((n) => ({ ...n }));
  for (const ov of o.networkOverrides ?? []) {
    const net = nets.find((n) => n.id === ov.iface_id);
    if (!net) throw new SnapshotError("INVALID", `network_overrides: the snapshot has no network interface ${ov.iface_id} (it has: ${nets.map((n) => n.id).join(", ") || "none"})`);
    net.hostDevName = ov.host_dev_name;
  }
  if (o.vsockOverride && !machine.vsock) throw new SnapshotError("INVALID", "vsock_override: the snapshot has no vsock device");
  const vsock = machine.vsock && { ...machine.vsock, ...(o.vsockOverride ? { udsPath: o.vsockOverride.uds_path } : {}) };
  for (const d of machine.drives) {
    let size: number;
    try {
      size = statSync(d.path).size;
    } catch (e) {
      throw new SnapshotError("NOT_FOUND", `drive ${d.id ?? d.path}: ${d.path} cannot be opened: ${(e as Error).message}`);
    }
    if (size !== d.size) throw new SnapshotError("INCOMPATIBLE", `drive ${d.id ?? d.path}: ${d.path} is ${size} bytes, the snapshot's disk was ${d.size}`);
  }

  const legacy = vm.legacy;
  legacy.serial.restore(state.legacy.serial);
  legacy.i8042.restore(state.legacy.i8042);
  legacy.rtc.restore(state.legacy.rtc);
  // The boot timer, where the VM had one (a probe guest booted below the recipe has none).
  if (state.bootTimer) {
    const timer = new BootTimer(bootTimerStart(), (info) => o.onBootComplete?.(info));
    vm.mmio.register(BOOT_TIMER_START, BOOT_TIMER_SIZE, timer);
    timer.restore(state.bootTimer);
  }

  const devices = createVirtioDevices({ kernel: "", drives: machine.drives, entropy: machine.entropy, nets, vsock, balloon: machine.balloon }, { models: o.models, log: o.log });
  const attached = attachVirtioDevices(vm, devices);
  if (attached.length !== state.virtio.length) throw new SnapshotError("INVALID", `${state.virtio.length} virtio device states for ${attached.length} devices`);
  attached.forEach((a, i) => {
    const s = state.virtio[i]!;
    if (a.name !== s.name || a.addr !== s.addr || a.irq !== s.irq) {
      throw new SnapshotError("INVALID", `virtio device ${i}: rebuilt as ${a.name} at 0x${a.addr.toString(16)} IRQ ${a.irq}, recorded as ${s.name} at 0x${s.addr.toString(16)} IRQ ${s.irq}`);
    }
    a.transport.restore(s.state);
  });
  return devices;
}
