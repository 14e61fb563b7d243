// The virtio-mmio transport, version 2 (virtio 1.2 §4.2): a 4 KiB window of 32-bit registers through which
// the guest discovers a virtio device, negotiates features, sets up its virtqueues and notifies them, with
// the device-specific configuration space at offset 0x100.
//
// Linux finds these windows from `virtio_mmio.device=4K@0xd0001000:5` on the kernel command line, then
// (drivers/virtio/virtio_mmio.c and virtio.c) resets the device, sets ACKNOWLEDGE and DRIVER, reads the
// 64-bit feature word 32 bits at a time, writes back the subset it accepts, sets FEATURES_OK and reads the
// status back to see whether the device agreed, programs each queue, and sets DRIVER_OK (§3.1.1).
//
// The transport enforces that order. A write that breaks it is refused (ignored, and logged): DRIVER_OK
// without FEATURES_OK, features the device never offered, queue setup after DRIVER_OK, clearing status
// bits other than by writing 0. A guest error found while the device runs (a bad descriptor chain)
// sets DEVICE_NEEDS_RESET and raises a configuration-change interrupt (§2.1.2).
//
// Notifications: a QueueNotify write calls `onQueueNotify(queue)`, which by default processes the queue
// right away. A VM registers an ioeventfd for QueueNotify instead, so KVM signals an eventfd without an
// MMIO exit, and its event loop calls `notify(queue)` on the main thread.

import { bool, checkKind, DeviceStateError, fromHex64, hex64, int, type Stateful } from "../state.ts";
import type { BusDevice, InterruptLine } from "../../bus.ts";
import { rateLimitedLog } from "../../rate-limit.ts";
import type { GuestMemory } from "../../memory.ts";
import type { VirtioContext, VirtioDevice, VirtioDeviceState } from "./device.ts";
import { Virtqueue, type VirtqueueState } from "./queue.ts";
import * as V from "./uapi.ts";

/** The VendorID kindling reports: "KNDL" in memory order. Linux's virtio_mmio accepts any value. */
export const KINDLING_VIRTIO_VENDOR_ID = 0x4c444e4b;

/** Feature bits the transport and queue code implement for every device. */
export const TRANSPORT_FEATURES =
  V.bit(V.VIRTIO_F_VERSION_1) | V.bit(V.VIRTIO_RING_F_INDIRECT_DESC) | V.bit(V.VIRTIO_RING_F_EVENT_IDX);

/** Register names as the spec's MMIO table (§4.2.2) spells them, for traces. */
const REGISTER_NAMES: Record<number, string> = {
  [V.VIRTIO_MMIO_MAGIC_VALUE]: "MagicValue",
  [V.VIRTIO_MMIO_VERSION]: "Version",
  [V.VIRTIO_MMIO_DEVICE_ID]: "DeviceID",
  [V.VIRTIO_MMIO_VENDOR_ID]: "VendorID",
  [V.VIRTIO_MMIO_DEVICE_FEATURES]: "DeviceFeatures",
  [V.VIRTIO_MMIO_DEVICE_FEATURES_SEL]: "DeviceFeaturesSel",
  [V.VIRTIO_MMIO_DRIVER_FEATURES]: "DriverFeatures",
  [V.VIRTIO_MMIO_DRIVER_FEATURES_SEL]: "DriverFeaturesSel",
  [V.VIRTIO_MMIO_GUEST_PAGE_SIZE]: "GuestPageSize",
  [V.VIRTIO_MMIO_QUEUE_SEL]: "QueueSel",
  [V.VIRTIO_MMIO_QUEUE_NUM_MAX]: "QueueNumMax",
  [V.VIRTIO_MMIO_QUEUE_NUM]: "QueueNum",
  [V.VIRTIO_MMIO_QUEUE_ALIGN]: "QueueAlign",
  [V.VIRTIO_MMIO_QUEUE_PFN]: "QueuePFN",
  [V.VIRTIO_MMIO_QUEUE_READY]: "QueueReady",
  [V.VIRTIO_MMIO_QUEUE_NOTIFY]: "QueueNotify",
  [V.VIRTIO_MMIO_INTERRUPT_STATUS]: "InterruptStatus",
  [V.VIRTIO_MMIO_INTERRUPT_ACK]: "InterruptACK",
  [V.VIRTIO_MMIO_STATUS]: "Status",
  [V.VIRTIO_MMIO_QUEUE_DESC_LOW]: "QueueDescLow",
  [V.VIRTIO_MMIO_QUEUE_DESC_HIGH]: "QueueDescHigh",
  [V.VIRTIO_MMIO_QUEUE_AVAIL_LOW]: "QueueDriverLow",
  [V.VIRTIO_MMIO_QUEUE_AVAIL_HIGH]: "QueueDriverHigh",
  [V.VIRTIO_MMIO_QUEUE_USED_LOW]: "QueueDeviceLow",
  [V.VIRTIO_MMIO_QUEUE_USED_HIGH]: "QueueDeviceHigh",
  [V.VIRTIO_MMIO_SHM_SEL]: "SHMSel",
  [V.VIRTIO_MMIO_SHM_LEN_LOW]: "SHMLenLow",
  [V.VIRTIO_MMIO_SHM_LEN_HIGH]: "SHMLenHigh",
  [V.VIRTIO_MMIO_SHM_BASE_LOW]: "SHMBaseLow",
  [V.VIRTIO_MMIO_SHM_BASE_HIGH]: "SHMBaseHigh",
  [V.VIRTIO_MMIO_QUEUE_RESET]: "QueueReset",
  [V.VIRTIO_MMIO_CONFIG_GENERATION]: "ConfigGeneration",
};

const STATUS_NAMES: [number, string][] = [
  [V.VIRTIO_CONFIG_S_ACKNOWLEDGE, "ACKNOWLEDGE"],
  [V.VIRTIO_CONFIG_S_DRIVER, "DRIVER"],
  [V.VIRTIO_CONFIG_S_FEATURES_OK, "FEATURES_OK"],
  [V.VIRTIO_CONFIG_S_DRIVER_OK, "DRIVER_OK"],
  [V.VIRTIO_CONFIG_S_NEEDS_RESET, "DEVICE_NEEDS_RESET"],
  [V.VIRTIO_CONFIG_S_FAILED, "FAILED"],
];

/** "ACKNOWLEDGE|DRIVER" for a status value, for messages. */
export function statusString(status: number): string {
  const names = STATUS_NAMES.filter(([b]) => status & b).map(([, n]) => n);
  return names.length ? names.join("|") : "0";
}

/** The bits a driver may set; DEVICE_NEEDS_RESET is the device's. */
const DRIVER_STATUS_BITS =
  V.VIRTIO_CONFIG_S_ACKNOWLEDGE | V.VIRTIO_CONFIG_S_DRIVER | V.VIRTIO_CONFIG_S_FEATURES_OK |
  V.VIRTIO_CONFIG_S_DRIVER_OK | V.VIRTIO_CONFIG_S_FAILED;

/** §3.1.1: each status bit in order, with the bits that must already be set. */
const STATUS_STEPS: [bit: number, needs: number][] = [
  [V.VIRTIO_CONFIG_S_ACKNOWLEDGE, 0],
  [V.VIRTIO_CONFIG_S_DRIVER, V.VIRTIO_CONFIG_S_ACKNOWLEDGE],
  [V.VIRTIO_CONFIG_S_FEATURES_OK, V.VIRTIO_CONFIG_S_ACKNOWLEDGE | V.VIRTIO_CONFIG_S_DRIVER],
  [V.VIRTIO_CONFIG_S_DRIVER_OK, V.VIRTIO_CONFIG_S_ACKNOWLEDGE | V.VIRTIO_CONFIG_S_DRIVER | V.VIRTIO_CONFIG_S_FEATURES_OK],
];

/** What the driver programmed for one queue, before DRIVER_OK turns it into a Virtqueue. */
interface QueueRegisters {
  num: number;
  ready: boolean;
  desc: bigint;
  avail: bigint;
  used: bigint;
}

/**
 * The transport's registers, each queue's registers and (once running) its ring positions, and the
 * device type's own state. 64-bit values are "0x..." text.
 */
export type VirtioMmioState = {
  kind: "virtio-mmio";
  status: number;
  interruptStatus: number;
  configGeneration: number;
  lastError: string | null;
  deviceFeaturesSel: number;
  driverFeaturesSel: number;
  driverFeatures: string;
  driverFeaturesBeyond64: boolean;
  queueSel: number;
  queues: { num: number; ready: boolean; desc: string; avail: string; used: string; ring: VirtqueueState | null }[];
  /** DRIVER_OK was accepted and the device activated. */
  activated: boolean;
  device: VirtioDeviceState;
};

export interface VirtioMmioOptions {
  mem: GuestMemory;
  /** The device's interrupt line (an irqfd on a real VM). */
  irq: InterruptLine;
  /** Refused register accesses and other guest mistakes. */
  log?: (message: string) => void;
  /** Errors that set DEVICE_NEEDS_RESET (default: `log`). */
  onError?: (message: string) => void;
}

export class VirtioMmioTransport implements BusDevice, Stateful<VirtioMmioState> {
  readonly name: string;
  status = 0;
  interruptStatus = 0;
  configGeneration = 0;
  /** The message of the error that set DEVICE_NEEDS_RESET, until the next reset. */
  lastError: string | undefined;
  /** The features the driver accepted (final once FEATURES_OK is set). */
  driverFeatures = 0n;

  /** Called for a QueueNotify write. Default: process the queue now. A VM with ioeventfd never sees these. */
  onQueueNotify: (queueIndex: number) => void = (i) => this.notify(i);
  /** Called when a queue still has work after a round: run another one later, letting other events in. */
  scheduleNotify: (queueIndex: number) => void = (i) => void setImmediate(() => this.notify(i));

  private readonly mem: GuestMemory;
  private readonly irq: InterruptLine;
  private readonly log: (message: string) => void;
  private readonly onError: (message: string) => void;
  private deviceFeaturesSel = 0;
  private driverFeaturesSel = 0;
  /** The driver wrote a nonzero DriverFeatures page above bit 63 (no such features exist). */
  private driverFeaturesBeyond64 = false;
  private queueSel = 0;
  private queueRegs: QueueRegisters[] = [];
  private queues: (Virtqueue | undefined)[] = [];
  private activated = false;

  constructor(
    readonly device: VirtioDevice,
    opts: VirtioMmioOptions,
  ) {
    this.name = device.name;
    this.mem = opts.mem;
    this.irq = opts.irq;
    // The guest decides how often these happen: through a rate limit (a caller's own onError is its own).
    this.log = rateLimitedLog(opts.log ?? (() => {}));
    this.onError = opts.onError ?? this.log;
    for (const max of device.queueMaxSizes) {
      if (!Number.isInteger(max) || max < 1 || max > V.VIRTQUEUE_MAX_SIZE || (max & (max - 1)) !== 0) {
        throw new Error(`${device.name}: queue size ${max} is not a power of 2 between 1 and ${V.VIRTQUEUE_MAX_SIZE}`);
      }
    }
    this.resetState();
  }

  /** Everything offered in DeviceFeatures. */
  get offeredFeatures(): bigint {
    return this.device.deviceFeatures | TRANSPORT_FEATURES;
  }

  registerName(offset: number, _isWrite?: boolean): string | undefined {
    if (offset >= V.VIRTIO_MMIO_CONFIG) return `Config+0x${(offset - V.VIRTIO_MMIO_CONFIG).toString(16)}`;
    return REGISTER_NAMES[offset];
  }

  read(offset: number, data: Uint8Array): void {
    if (offset >= V.VIRTIO_MMIO_CONFIG) {
      this.device.readConfig(offset - V.VIRTIO_MMIO_CONFIG, data);
      return;
    }
    data.fill(0);
    if (!this.registerAccessOk(offset, data, "read")) return;
    new DataView(data.buffer, data.byteOffset, 4).setUint32(0, this.readRegister(offset), true);
  }

  write(offset: number, data: Uint8Array): void {
    if (offset >= V.VIRTIO_MMIO_CONFIG) {
      this.device.writeConfig(offset - V.VIRTIO_MMIO_CONFIG, data);
      return;
    }
    if (!this.registerAccessOk(offset, data, "write")) return;
    this.writeRegister(offset, new DataView(data.buffer, data.byteOffset, 4).getUint32(0, true));
  }

  /**
   * Process queue `queueIndex`: what a QueueNotify means. The VM calls this from its ioeventfd reader.
   * Ignored unless the device is running (DRIVER_OK, no DEVICE_NEEDS_RESET) and the queue is ready.
   */
  notify(queueIndex: number): void {
    if (!this.activated || this.status & V.VIRTIO_CONFIG_S_NEEDS_RESET) return;
    if (!this.queues[queueIndex]) return;
    let more = false;
    try {
      more = this.device.process(queueIndex);
    } catch (e) {
      this.fail(`processing queue ${queueIndex}: ${e instanceof Error ? e.message : String(e)}`);
    }
    this.signalUsed();
    if (more && !(this.status & V.VIRTIO_CONFIG_S_NEEDS_RESET)) this.scheduleNotify(queueIndex);
  }

  /** The device's configuration space changed (§2.5.1, §4.2.2 ConfigGeneration): tell the driver. */
  configChanged(): void {
    this.configGeneration = (this.configGeneration + 1) >>> 0;
    if (this.status & V.VIRTIO_CONFIG_S_DRIVER_OK) this.interrupt(V.VIRTIO_MMIO_INT_CONFIG);
  }

  // ---- state (src/devices/state.ts) ----

  describe(): VirtioMmioState {
    return {
      kind: "virtio-mmio", status: this.status, interruptStatus: this.interruptStatus, configGeneration: this.configGeneration,
      lastError: this.lastError ?? null, deviceFeaturesSel: this.deviceFeaturesSel, driverFeaturesSel: this.driverFeaturesSel,
      driverFeatures: hex64(this.driverFeatures), driverFeaturesBeyond64: this.driverFeaturesBeyond64, queueSel: this.queueSel,
      queues: this.queueRegs.map((r, i) => ({
        num: r.num, ready: r.ready, desc: hex64(r.desc), avail: hex64(r.avail), used: hex64(r.used), ring: this.queues[i]?.describe() ?? null,
      })),
      activated: this.activated,
      device: this.device.describe(),
    };
  }

  /**
   * On a fresh transport (status 0): the registers, then for a running device its queues (checked against
   * guest memory as at DRIVER_OK), the device's activation, its ring positions and the device's own state.
   */
  restore(s: VirtioMmioState): void {
    const D = this.name;
    checkKind(D, s, "virtio-mmio");
    if (this.status !== 0) throw new DeviceStateError(D, "restore() needs a fresh transport (status 0)");
    const u32 = (f: "status" | "interruptStatus" | "configGeneration" | "deviceFeaturesSel" | "driverFeaturesSel" | "queueSel") => int(D, f, s[f], 0, 0xffffffff);
    const regs = { status: u32("status"), interruptStatus: u32("interruptStatus"), configGeneration: u32("configGeneration"), deviceFeaturesSel: u32("deviceFeaturesSel"), driverFeaturesSel: u32("driverFeaturesSel"), queueSel: u32("queueSel") };
    const driverFeatures = fromHex64(D, "driverFeatures", s.driverFeatures);
    const driverFeaturesBeyond64 = bool(D, "driverFeaturesBeyond64", s.driverFeaturesBeyond64);
    const activated = bool(D, "activated", s.activated);
    if (s.lastError !== null && typeof s.lastError !== "string") throw new DeviceStateError(D, "lastError: not a string or null");
    if (!Array.isArray(s.queues) || s.queues.length !== this.queueRegs.length) throw new DeviceStateError(D, `queues: expected ${this.queueRegs.length}`);
    const queueRegs: QueueRegisters[] = s.queues.map((q, i) => ({
      num: int(D, `queues[${i}].num`, q?.num, 0, 0xffffffff), ready: bool(D, `queues[${i}].ready`, q.ready),
      desc: fromHex64(D, `queues[${i}].desc`, q.desc), avail: fromHex64(D, `queues[${i}].avail`, q.avail), used: fromHex64(D, `queues[${i}].used`, q.used),
    }));
    if (activated && !(regs.status & V.VIRTIO_CONFIG_S_DRIVER_OK)) throw new DeviceStateError(D, "activated without DRIVER_OK in status");
    Object.assign(this, regs, { driverFeatures, driverFeaturesBeyond64, queueRegs, lastError: s.lastError ?? undefined });
    if (activated) {
      this.activate();
      if (!this.activated) throw new DeviceStateError(D, `the queues do not activate: ${this.lastError}`);
      s.queues.forEach((q, i) => {
        const queue = this.queues[i];
        if ((q.ring === null) !== (queue === undefined)) throw new DeviceStateError(D, `queues[${i}].ring: ${q.ring === null ? "missing for a ready queue" : "given for a queue that is not ready"}`);
        if (queue && q.ring) queue.restore(q.ring, D);
      });
      // activate() may have set DEVICE_NEEDS_RESET's bookkeeping; the described status is what holds.
      this.status = regs.status;
      this.lastError = s.lastError ?? undefined;
    }
    this.device.restore(s.device);
  }

  // ---- registers ----

  /** §4.2.2.2: the driver uses only 32-bit aligned accesses below the configuration space. */
  private registerAccessOk(offset: number, data: Uint8Array, what: string): boolean {
    if (data.byteLength === 4 && offset % 4 === 0) return true;
    this.log(`${this.name}: ${data.byteLength}-byte ${what} at 0x${offset.toString(16)} ignored: registers take 32-bit aligned accesses (virtio 1.2 §4.2.2.2)`);
    return false;
  }

  private readRegister(offset: number): number {
    const q = this.queueRegs[this.queueSel];
    switch (offset) {
      case V.VIRTIO_MMIO_MAGIC_VALUE: return V.VIRTIO_MMIO_MAGIC;
      case V.VIRTIO_MMIO_VERSION: return V.VIRTIO_MMIO_VERSION_2;
      case V.VIRTIO_MMIO_DEVICE_ID: return this.device.deviceId;
      case V.VIRTIO_MMIO_VENDOR_ID: return KINDLING_VIRTIO_VENDOR_ID;
      case V.VIRTIO_MMIO_DEVICE_FEATURES: return featurePage(this.offeredFeatures, this.deviceFeaturesSel);
      // QueueNumMax reads 0 for a queue that does not exist: that is how the driver learns the count.
      case V.VIRTIO_MMIO_QUEUE_NUM_MAX: return q ? this.device.queueMaxSizes[this.queueSel]! : 0;
      case V.VIRTIO_MMIO_QUEUE_READY: return q?.ready ? 1 : 0;
      case V.VIRTIO_MMIO_INTERRUPT_STATUS: return this.interruptStatus;
      case V.VIRTIO_MMIO_STATUS: return this.status;
      case V.VIRTIO_MMIO_CONFIG_GENERATION: return this.configGeneration;
      // No shared memory regions: their length and base read as -1 (§4.2.2).
      case V.VIRTIO_MMIO_SHM_LEN_LOW: case V.VIRTIO_MMIO_SHM_LEN_HIGH:
      case V.VIRTIO_MMIO_SHM_BASE_LOW: case V.VIRTIO_MMIO_SHM_BASE_HIGH:
        return 0xffffffff;
      default:
        // Write-only, legacy or unknown registers read as zero.
        if (REGISTER_NAMES[offset] === undefined) this.log(`${this.name}: read of unknown register 0x${offset.toString(16)}`);
        return 0;
    }
  }

  private writeRegister(offset: number, value: number): void {
    switch (offset) {
      case V.VIRTIO_MMIO_DEVICE_FEATURES_SEL: this.deviceFeaturesSel = value; return;
      case V.VIRTIO_MMIO_DRIVER_FEATURES_SEL: this.driverFeaturesSel = value; return;
      case V.VIRTIO_MMIO_DRIVER_FEATURES: return this.writeDriverFeatures(value);
      case V.VIRTIO_MMIO_QUEUE_SEL: this.queueSel = value; return;
      case V.VIRTIO_MMIO_QUEUE_NUM:
      case V.VIRTIO_MMIO_QUEUE_READY:
      case V.VIRTIO_MMIO_QUEUE_DESC_LOW: case V.VIRTIO_MMIO_QUEUE_DESC_HIGH:
      case V.VIRTIO_MMIO_QUEUE_AVAIL_LOW: case V.VIRTIO_MMIO_QUEUE_AVAIL_HIGH:
      case V.VIRTIO_MMIO_QUEUE_USED_LOW: case V.VIRTIO_MMIO_QUEUE_USED_HIGH:
        return this.writeQueueRegister(offset, value);
      case V.VIRTIO_MMIO_QUEUE_NOTIFY: return this.writeQueueNotify(value);
      case V.VIRTIO_MMIO_INTERRUPT_ACK: this.interruptStatus &= ~value; return;
      case V.VIRTIO_MMIO_STATUS: return this.writeStatus(value);
      case V.VIRTIO_MMIO_SHM_SEL: return;
      default:
        this.refuse(offset, value, REGISTER_NAMES[offset] === undefined
          ? "no such register"
          : "not writable here (read-only, legacy-only, or a feature kindling does not offer)");
    }
  }

  private refuse(offset: number, value: number, why: string): void {
    const reg = REGISTER_NAMES[offset] ?? `register 0x${offset.toString(16)}`;
    this.log(`${this.name}: ${reg} = 0x${value.toString(16)} refused: ${why}`);
  }

  private writeDriverFeatures(value: number): void {
    const s = this.status;
    if (!(s & V.VIRTIO_CONFIG_S_DRIVER) || s & V.VIRTIO_CONFIG_S_FEATURES_OK) {
      return this.refuse(V.VIRTIO_MMIO_DRIVER_FEATURES, value,
        `features are written after DRIVER and before FEATURES_OK (§3.1.1); status is ${statusString(s)}`);
    }
    const page = this.driverFeaturesSel;
    if (page > 1) {
      if (value !== 0) this.driverFeaturesBeyond64 = true;
      return;
    }
    const shift = BigInt(32 * page);
    this.driverFeatures = (this.driverFeatures & ~(0xffffffffn << shift)) | (BigInt(value) << shift);
  }

  private writeQueueRegister(offset: number, value: number): void {
    const q = this.queueRegs[this.queueSel];
    if (!q) return this.refuse(offset, value, `QueueSel ${this.queueSel}: the device has ${this.queueRegs.length} queues`);
    // Writing 0 to a queue that is not ready changes nothing; Linux does it while tearing down after a reset.
    if (offset === V.VIRTIO_MMIO_QUEUE_READY && value === 0 && !q.ready) return;
    const s = this.status;
    if (!(s & V.VIRTIO_CONFIG_S_FEATURES_OK) || s & V.VIRTIO_CONFIG_S_DRIVER_OK) {
      return this.refuse(offset, value,
        `queues are set up after FEATURES_OK and before DRIVER_OK (§3.1.1); status is ${statusString(s)}`);
    }
    if (q.ready && offset !== V.VIRTIO_MMIO_QUEUE_READY) {
      return this.refuse(offset, value, `queue ${this.queueSel} is ready: write 0 to QueueReady before changing it`);
    }
    const v = BigInt(value);
    switch (offset) {
      case V.VIRTIO_MMIO_QUEUE_NUM: q.num = value; break;
      case V.VIRTIO_MMIO_QUEUE_READY: q.ready = value === 1; break;
      case V.VIRTIO_MMIO_QUEUE_DESC_LOW: q.desc = setLow(q.desc, v); break;
      case V.VIRTIO_MMIO_QUEUE_DESC_HIGH: q.desc = setHigh(q.desc, v); break;
      case V.VIRTIO_MMIO_QUEUE_AVAIL_LOW: q.avail = setLow(q.avail, v); break;
      case V.VIRTIO_MMIO_QUEUE_AVAIL_HIGH: q.avail = setHigh(q.avail, v); break;
      case V.VIRTIO_MMIO_QUEUE_USED_LOW: q.used = setLow(q.used, v); break;
      case V.VIRTIO_MMIO_QUEUE_USED_HIGH: q.used = setHigh(q.used, v); break;
    }
  }

  private writeQueueNotify(value: number): void {
    const s = this.status;
    if (!(s & V.VIRTIO_CONFIG_S_DRIVER_OK) || s & V.VIRTIO_CONFIG_S_NEEDS_RESET || !this.activated) {
      return this.refuse(V.VIRTIO_MMIO_QUEUE_NOTIFY, value, `the device is not running; status is ${statusString(s)}`);
    }
    // Without VIRTIO_F_NOTIFICATION_DATA the value is just the queue index (§4.2.3.3).
    if (!this.queues[value]) return this.refuse(V.VIRTIO_MMIO_QUEUE_NOTIFY, value, "no such ready queue");
    this.onQueueNotify(value);
  }

  // ---- status (§2.1, §3.1.1) ----

  private writeStatus(value: number): void {
    if (value === 0) {
      this.reset();
      return;
    }
    const refuse = (why: string) => this.refuse(V.VIRTIO_MMIO_STATUS, value, `${why}; status stays ${statusString(this.status)}`);
    // A driver that adds a bit to the status it read may echo DEVICE_NEEDS_RESET back: that bit is ours.
    const want = value & ~V.VIRTIO_CONFIG_S_NEEDS_RESET;
    const have = this.status & ~V.VIRTIO_CONFIG_S_NEEDS_RESET;
    if (want & ~DRIVER_STATUS_BITS) return refuse("unknown status bits");
    if (have & ~want) return refuse("status bits are only cleared by writing 0 (reset)");
    let added = want & ~have;
    if (added & V.VIRTIO_CONFIG_S_FAILED) {
      this.status |= V.VIRTIO_CONFIG_S_FAILED;
      this.log(`${this.name}: the driver set FAILED (it gave up on the device)`);
      added &= ~V.VIRTIO_CONFIG_S_FAILED;
    }
    if (added === 0) return;
    if (this.status & V.VIRTIO_CONFIG_S_FAILED) return refuse("the driver set FAILED; only a reset follows");
    for (const [bit, needs] of STATUS_STEPS) {
      if (!(added & bit)) continue;
      if ((this.status & needs) !== needs) {
        return refuse(`${statusString(bit)} needs ${statusString(needs & ~this.status)} first (§3.1.1)`);
      }
      if (bit === V.VIRTIO_CONFIG_S_FEATURES_OK) {
        const why = this.checkFeatures();
        // The driver reads the status back and finds FEATURES_OK clear: the features were refused (§2.2.2).
        if (why) return refuse(`features refused: ${why}`);
      }
      if (bit === V.VIRTIO_CONFIG_S_DRIVER_OK && this.status & V.VIRTIO_CONFIG_S_NEEDS_RESET) {
        return refuse("the device needs a reset");
      }
      this.status |= bit;
      if (bit === V.VIRTIO_CONFIG_S_DRIVER_OK) this.activate();
    }
  }

  private checkFeatures(): string | undefined {
    if (this.driverFeaturesBeyond64) return "the driver accepted feature bits above 63";
    const extra = this.driverFeatures & ~this.offeredFeatures;
    if (extra) return `the driver accepted bits the device did not offer: ${bitList(extra)}`;
    // §6.1: the device may refuse to operate without VERSION_1; virtio-mmio version 2 is 1.x only.
    if (!(this.driverFeatures & V.bit(V.VIRTIO_F_VERSION_1))) return "the driver did not accept VIRTIO_F_VERSION_1";
    return this.device.checkFeatures?.(this.driverFeatures);
  }

  /** DRIVER_OK: build the ready queues (checking what the driver programmed) and start the device. */
  private activate(): void {
    const features = this.driverFeatures;
    const queues: (Virtqueue | undefined)[] = [];
    for (const [index, r] of this.queueRegs.entries()) {
      if (!r.ready) {
        queues.push(undefined);
        continue;
      }
      const q = Virtqueue.create(this.mem, {
        index, size: r.num, maxSize: this.device.queueMaxSizes[index]!,
        descTable: r.desc, availRing: r.avail, usedRing: r.used,
        eventIdx: (features & V.bit(V.VIRTIO_RING_F_EVENT_IDX)) !== 0n,
        indirect: (features & V.bit(V.VIRTIO_RING_F_INDIRECT_DESC)) !== 0n,
      }, (message) => this.fail(message));
      if (typeof q === "string") return this.fail(q);
      queues.push(q);
    }
    this.queues = queues;
    const ctx: VirtioContext = {
      mem: this.mem,
      features,
      queues,
      signalUsed: () => this.signalUsed(),
      configChanged: () => this.configChanged(),
      fail: (message) => this.fail(message),
      running: () => this.activated && this.queues === queues && !(this.status & V.VIRTIO_CONFIG_S_NEEDS_RESET),
    };
    try {
      this.device.activate(ctx);
    } catch (e) {
      return this.fail(`activation: ${e instanceof Error ? e.message : String(e)}`);
    }
    this.activated = true;
  }

  private reset(): void {
    try {
      this.device.reset();
    } catch (e) {
      this.log(`${this.name}: reset: ${e instanceof Error ? e.message : String(e)}`);
    }
    this.resetState();
  }

  /** Registers back to their reset values (§2.4). ConfigGeneration keeps counting. */
  private resetState(): void {
    this.status = 0;
    this.interruptStatus = 0;
    this.lastError = undefined;
    this.deviceFeaturesSel = 0;
    this.driverFeaturesSel = 0;
    this.driverFeatures = 0n;
    this.driverFeaturesBeyond64 = false;
    this.queueSel = 0;
    this.queueRegs = this.device.queueMaxSizes.map((max) => ({ num: max, ready: false, desc: 0n, avail: 0n, used: 0n }));
    this.queues = [];
    this.activated = false;
  }

  // ---- interrupts and errors ----

  private signalUsed(): void {
    let raise = false;
    // Every queue: a device may complete work on one queue while processing another (net, vsock).
    for (const q of this.queues) if (q?.needsInterrupt()) raise = true;
    if (raise) this.interrupt(V.VIRTIO_MMIO_INT_VRING);
  }

  private interrupt(bits: number): void {
    this.interruptStatus |= bits;
    this.irq.trigger();
  }

  /** DEVICE_NEEDS_RESET (§2.1.2): stop, and tell a running driver with a configuration interrupt. */
  private fail(message: string): void {
    if (this.status & V.VIRTIO_CONFIG_S_NEEDS_RESET) return;
    this.lastError = message;
    this.onError(`${this.name}: ${message}; device needs reset`);
    this.status |= V.VIRTIO_CONFIG_S_NEEDS_RESET;
    if (this.status & V.VIRTIO_CONFIG_S_DRIVER_OK) this.interrupt(V.VIRTIO_MMIO_INT_CONFIG);
  }
}

/** 32 bits of a 64-bit feature word: page 0 is bits 0-31, page 1 bits 32-63, the rest are zero. */
function featurePage(features: bigint, page: number): number {
  if (page > 1) return 0;
  return Number((features >> BigInt(32 * page)) & 0xffffffffn);
}

const setLow = (reg: bigint, v: bigint) => (reg & 0xffffffff00000000n) | v;
const setHigh = (reg: bigint, v: bigint) => (reg & 0xffffffffn) | (v << 32n);

function bitList(mask: bigint): string {
  const bits: number[] = [];
  for (let i = 0; i < 64; i++) if (mask & (1n << BigInt(i))) bits.push(i);
  return bits.join(", ");
}
