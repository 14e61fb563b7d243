// The microVM recipe's description and its devices: what a machine is made of (kernel, initrd, command
// line, memory, vCPUs, drives, network interfaces, vsock, entropy, boot timer), and the one place its
// virtio devices are built and attached. bootLinux (linux.ts) follows this recipe; MicroVM (src/microvm.ts),
// `kindling boot`, `kindling run` and `kindling api` all describe a machine and hand it to bootLinux.
//
// Order, as Firecracker's builder attaches them: drives (in the order given, the root drive first when the
// caller sorts it so: /dev/vda is window 0), then the entropy device, the network interfaces, the vsock;
// the balloon last.
// Each gets the next MMIO window and IRQ from Vm.addVirtioDevice and one `virtio_mmio.device=` argument
// (cmdline.ts); callers find devices by name (drive id, interface id), never by position.

import type { BootCompleteInfo } from "../devices/boot-timer.ts";
import type { BootTimer } from "../devices/boot-timer.ts";
import { FileBlockBackend, VirtioBlock } from "../devices/virtio/block.ts";
import type { VirtioDevice } from "../devices/virtio/device.ts";
import { VirtioNet } from "../devices/virtio/net.ts";
import { VirtioRng } from "../devices/virtio/rng.ts";
import { VirtioBalloon } from "../devices/virtio/balloon.ts";
import { VIRTIO_BLK_ID_BYTES } from "../devices/virtio/uapi.ts";
import { VirtioVsock } from "../devices/virtio/vsock.ts";
import type { RateLimiterConfig } from "../devices/rate-limiter.ts";
import { MmdsNetworkStack } from "../mmds/stack.ts";
import type { MmdsStore } from "../mmds/store.ts";
import type { CpuidProfile } from "../arch/x86_64/cpuid.ts";
import type { CpuTemplateDefinition, StaticCpuTemplate } from "../arch/x86_64/cpu-templates.ts";
import type { RootDriveInfo } from "../arch/x86_64/cmdline.ts";
import type { AttachedVirtio, Vm } from "../vm.ts";
import { VIRTIO_DEVICES_MAX } from "../arch/x86_64/layout.ts";

export interface DriveConfig extends RootDriveInfo {
  /** The drive's name among the machine's devices (Firecracker's drive_id); default vda, vdb ... */
  id?: string;
  /** The backing file. */
  path: string;
  /** What VIRTIO_BLK_T_GET_ID answers (the guest's /sys/block/vdX/serial): the id cut to 20 bytes, or "kindling". */
  serial?: string;
  /** Firecracker's drive `rate_limiter` (src/devices/rate-limiter.ts). */
  rateLimiter?: RateLimiterConfig;
}

export interface NetConfig {
  /** The interface's name among the machine's devices (Firecracker's iface_id). */
  id: string;
  /** The TAP device on the host. */
  hostDevName: string;
  guestMac?: string;
  mtu?: number;
  /** Firecracker's `rx_rate_limiter` and `tx_rate_limiter`. */
  rxRateLimiter?: RateLimiterConfig;
  txRateLimiter?: RateLimiterConfig;
  /** MMDS answers on this interface, from `store`, at `ipv4` (src/mmds/stack.ts). */
  mmds?: { store: MmdsStore; ipv4: string };
}

export interface BalloonConfig {
  /** The target in MiB (Firecracker's amount_mib). */
  amountMib: number;
  deflateOnOom: boolean;
  /** Seconds between statistics requests; 0 (default) means no statistics queue. */
  statsPollingIntervalS?: number;
  freePageReporting?: boolean;
}

export interface VsockConfig {
  guestCid: number;
  /** The host side: Firecracker's Unix-socket vsock protocol on this path. */
  udsPath: string;
}

/** The machine, as plain data. */
export interface MachineConfig {
  /** A path, or the image's bytes. */
  kernel: string | Uint8Array;
  initrd?: string | Uint8Array;
  /** The kernel command line; DEFAULT_CMDLINE when absent. kindling appends root=, the cpuid profile's additions and the devices. */
  cmdline?: string;
  /** Guest RAM in bytes (default 128 MiB). */
  memSize?: number;
  vcpus?: number;
  /** "auto" (default) picks emulated-host where the host emulates guest kernel code, default elsewhere. */
  cpuidProfile?: CpuidProfile | "auto";
  /** Two hardware threads per core (Firecracker's smt); the vCPU count is then 1 or even. */
  smt?: boolean;
  /**
   * A Firecracker CPU template applied on top of the cpuid profile: a static one by name (checked against
   * the host's CPU at boot) or a custom one (PUT /cpu-config). src/arch/x86_64/cpu-templates.ts.
   */
  cpuTemplate?: StaticCpuTemplate | { custom: CpuTemplateDefinition };
  /** virtio-blk disks, /dev/vda onwards in this order; one may be the root (cmdline.ts's rootArgs). */
  drives?: DriveConfig[];
  /** A virtio-rng device fed from the host's CSPRNG. */
  entropy?: boolean;
  /** The entropy device's `rate_limiter`. */
  entropyRateLimiter?: RateLimiterConfig;
  /** virtio-net devices, each on a TAP. */
  nets?: NetConfig[];
  vsock?: VsockConfig;
  /** A virtio-balloon device (devices/virtio/balloon.ts). */
  balloon?: BalloonConfig;
  /** Firecracker's boot-timer device (default true). */
  bootTimer?: boolean;
}

/**
 * A net or vsock device model's constructor, for callers that substitute their own (tests). kindling calls
 *   new VirtioNet({ ifaceId, hostDevName, guestMac?, mtu?, log, rxRateLimiter?, txRateLimiter? })
 *   new VirtioVsock({ guestCid, udsPath, log })
 * and, after the VM ends, the device's close() if it has one.
 */
export type DeviceClass = new (opts: Record<string, unknown>) => VirtioDevice;
export interface DeviceModels {
  VirtioNet?: DeviceClass;
  VirtioVsock?: DeviceClass;
}

/** The machine's devices by name. `virtio` lists them in window order with the names metrics use. */
export interface MachineDevices {
  drives: Map<string, VirtioDevice>;
  nets: Map<string, VirtioDevice>;
  vsock?: VirtioDevice;
  entropy?: VirtioDevice;
  balloon?: VirtioBalloon;
  bootTimer?: BootTimer;
  /** Every virtio device in window order: block_<id>, entropy, net_<id>, vsock, balloon. */
  virtio: { name: string; device: VirtioDevice }[];
}

export type { BootCompleteInfo };

/** The handle name of drive `i`: its id, or vda, vdb ... */
export const driveName = (d: DriveConfig, i: number): string => d.id ?? `vd${String.fromCharCode(97 + (i % 26))}${i >= 26 ? i : ""}`;

/**
 * Throw unless the machine's virtio devices all fit (VIRTIO_DEVICES_MAX: one IRQ each). Checked before
 * anything is opened, so a machine with one drive too many fails without opening (or locking) any.
 */
export function checkDeviceCount(m: MachineConfig): void {
  const count = (m.drives?.length ?? 0) + (m.entropy ? 1 : 0) + (m.nets?.length ?? 0) + (m.vsock ? 1 : 0);
  if (count > VIRTIO_DEVICES_MAX) {
    throw new Error(`${count} virtio devices are configured (drives, network interfaces, vsock, entropy); at most ${VIRTIO_DEVICES_MAX} fit`);
  }
}

/**
 * Build the virtio devices a machine describes, in window order. If one cannot be built (a file or TAP
 * that does not open), those already built are closed and the error is thrown.
 */
export function createVirtioDevices(m: MachineConfig, opts: { models?: DeviceModels; log?: (line: string) => void } = {}): MachineDevices {
  const log = opts.log ?? (() => {});
  const out: MachineDevices = { drives: new Map(), nets: new Map(), virtio: [] };
  const add = (name: string, device: VirtioDevice) => (out.virtio.push({ name, device }), device);
  try {
    (m.drives ?? []).forEach((d, i) => {
      const id = driveName(d, i);
      if (out.drives.has(id)) throw new Error(`drive id ${id} is used twice`);
      const serial = d.serial ?? (d.id === undefined ? undefined : d.id.slice(0, VIRTIO_BLK_ID_BYTES));
      out.drives.set(id, add(`block_${id}`, new VirtioBlock(new FileBlockBackend(d.path, d.readOnly ?? false), { id: serial, log, rateLimiter: d.rateLimiter })));
    });
    if (m.entropy) out.entropy = add("entropy", new VirtioRng({ rateLimiter: m.entropyRateLimiter }));
    const Net = opts.models?.VirtioNet ?? (VirtioNet as unknown as DeviceClass);
    for (const n of m.nets ?? []) {
      if (out.nets.has(n.id)) throw new Error(`network interface id ${n.id} is used twice`);
      const net = new Net({
        ifaceId: n.id, hostDevName: n.hostDevName, guestMac: n.guestMac, mtu: n.mtu, log, rxRateLimiter: n.rxRateLimiter, txRateLimiter: n.txRateLimiter,
      });
      out.nets.set(n.id, add(`net_${n.id}`, net));
      // A substitute model (tests) that is a VirtioNet gets MMDS too; other substitutes have no TX path to hook.
      if (n.mmds && net instanceof VirtioNet) net.setMmds(new MmdsNetworkStack(n.mmds.store, { ipv4: n.mmds.ipv4 }));
    }
    if (m.vsock) {
      const Vsock = opts.models?.VirtioVsock ?? (VirtioVsock as unknown as DeviceClass);
      out.vsock = add("vsock", new Vsock({ guestCid: m.vsock.guestCid, udsPath: m.vsock.udsPath, log }));
    }
    if (m.balloon) {
      const b = m.balloon;
      out.balloon = new VirtioBalloon({
        amountMib: b.amountMib, deflateOnOom: b.deflateOnOom, statsPollingIntervalS: b.statsPollingIntervalS, freePageReporting: b.freePageReporting,
        log: (line) => log(`virtio-balloon: ${line}`),
      });
      add("balloon", out.balloon);
    }
  } catch (e) {
    closeDevices(out.virtio.map((v) => v.device));
    throw e;
  }
  return out;
}

/** Put each device on the VM's MMIO bus: the next window, the next IRQ. In window order. */
export function attachVirtioDevices(vm: Vm, devices: MachineDevices): (AttachedVirtio & { name: string })[] {
  const attached: (AttachedVirtio & { name: string })[] = [];
  try {
    for (const { name, device } of devices.virtio) attached.push({ ...vm.addVirtioDevice(device), name });
  } catch (e) {
    // The attached ones are closed with the VM; the rest are not on it.
    closeDevices(devices.virtio.slice(attached.length).map((v) => v.device));
    throw e;
  }
  return attached;
}

/** Release what devices that never reached a VM hold (a file, a TAP and its reader, a socket). */
export function closeDevices(devices: readonly VirtioDevice[]): void {
  for (const d of devices) {
    try {
      void Promise.resolve(d.close?.()).catch(() => {});
    } catch {
      // a device that fails to close holds nothing more we can release
    }
  }
}
