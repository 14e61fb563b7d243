// Replay: feed a recorded trace's port and MMIO accesses to fresh device models, without /dev/kvm, and
// check that every read answers what it answered in the recorded run. A device change that alters what
// the guest sees shows up as the first read that differs, on any machine.
//
// The replay set is the devices a Vm creates: the legacy set from the same attachLegacyDevices (the 16550
// UART at COM1_PORT, the i8042, the CMOS RTC, the port-0x80 sink), the boot timer, and the trace header's
// virtio-mmio devices, on their own buses over a plain GuestMemory. Records are replayed in file order, which is the order kindling
// handled them; host input on the serial console (recorded by the trace writer) is fed between the same
// two exits it arrived between.
//
// What it can check, and what it cannot:
//   - 8250, i8042, boot timer, unclaimed addresses: every read. Their state depends only on the guest's
//     accesses and the recorded host input. The CMOS RTC: every read but those of its clock registers,
//     which answer the host's time at the moment of the read.
//   - virtio-mmio: the transport registers (MagicValue ... Status, QueueNumMax, QueueReady, feature pages,
//     ConfigGeneration) against a fresh VirtioMmioTransport. The device behind it is a stand-in built from the
//     identity the header recorded (device ID, features, queue sizes, configuration bytes): its backing (a
//     disk image, the host's entropy) is not in the trace. The rings live in guest memory, which the trace
//     does not hold either, so queues are never processed, and reads of InterruptStatus (set when the device
//     completes requests) are skipped.
//   - `rep ins`/`rep outs`: a trace record holds the first element only; such an exit replays as one access.
//   - Accesses to a device the replay set has no model for (a test's own device) are skipped and counted.

import { Bus, type BusDevice, type InterruptLine } from "../bus.ts";
import { GuestMemory } from "../memory.ts";
import type { Serial } from "../devices/serial.ts";
import { attachLegacyDevices } from "../devices/legacy.ts";
import type { CmosRtc } from "../devices/rtc.ts";
import { BootTimer, bootTimerStart } from "../devices/boot-timer.ts";
import { VirtioMmioTransport } from "../devices/virtio/mmio.ts";
import { readConfigBytes, type VirtioDevice } from "../devices/virtio/device.ts";
import { VIRTIO_MMIO_INTERRUPT_STATUS } from "../devices/virtio/uapi.ts";
import { BOOT_TIMER_SIZE, BOOT_TIMER_START, CMOS_DATA_PORT, COM1_IRQ, VIRTIO_MMIO_SIZE } from "../arch/x86_64/layout.ts";
import { dataOf, isExit, type Trace, type TraceExit, type VirtioIdentity } from "./format.ts";

const line = (gsi: number): InterruptLine => ({ gsi, trigger: () => {} });

export interface ReplayDevices {
  pio: Bus;
  mmio: Bus;
  rtc: CmosRtc;
  /** Where recorded host input goes, by device name. */
  input: Map<string, (bytes: Uint8Array) => void>;
}

export interface ReplayOptions {
  /** Build the UART (tests pass a modified model here to see a change caught). */
  serial?: (irq: InterruptLine) => Serial;
}

/** A virtio device type as the header recorded it: enough for the transport, no backing. */
function standIn(id: VirtioIdentity): VirtioDevice {
  const config = Buffer.from(id.config, "hex");
  return {
    name: id.name, deviceId: id.deviceId, deviceFeatures: BigInt(id.features), queueMaxSizes: id.queueMaxSizes,
    readConfig: (offset, data) => readConfigBytes(config, offset, data),
    writeConfig: () => {},
    activate: () => {},
    process: () => false,
    reset: () => {},
    describe: () => ({ kind: "stand-in" }),
    restore: () => {},
  };
}

/** The devices a Vm has, on buses of their own, for the trace's header. */
export function replayDevices(trace: Trace, opts: ReplayOptions = {}): ReplayDevices {
  const pio = new Bus("pio");
  const mmio = new Bus("mmio");
  const { serial, rtc } = attachLegacyDevices(pio, { serialIrq: line(COM1_IRQ), serial: opts.serial });
  mmio.register(BOOT_TIMER_START, BOOT_TIMER_SIZE, new BootTimer(bootTimerStart(), () => {}));
  const virtio = trace.header.virtio;
  const mem = GuestMemory.plain(virtio.length ? trace.header.ram : []);
  for (const id of virtio) {
    const t = new VirtioMmioTransport(standIn(id), { mem, irq: line(id.irq) });
    t.onQueueNotify = () => {}; // the rings are not in the trace
    mmio.register(id.addr, VIRTIO_MMIO_SIZE, t);
  }
  return { pio, mmio, rtc, input: new Map([[serial.name, (b) => void serial.queueInput(b)]]) };
}

export interface Mismatch {
  line: number;
  record: TraceExit;
  message: string;
}

export interface ReplayReport {
  /** Port and MMIO accesses replayed (reads and writes). */
  accesses: number;
  /** Reads whose value was compared. */
  compared: number;
  /** Records not replayed, by reason. */
  skipped: Record<string, number>;
  /** The first read (or device placement) that differs; replay stops there. */
  mismatch?: Mismatch;
}

const hex = (v: bigint) => `0x${v.toString(16)}`;

function toBytes(value: bigint, size: number): Uint8Array {
  const b = new Uint8Array(size);
  for (let i = 0; i < size; i++) b[i] = Number((value >> BigInt(8 * i)) & 0xffn);
  return b;
}

function fromBytes(b: Uint8Array): bigint {
  let v = 0n;
  for (let i = b.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]!);
  return v;
}

/** Why a read's value cannot be checked (it depends on guest memory or on the clock), if it cannot. */
function unreplayable(dev: ReplayDevices, bus: Bus, addr: number, device: BusDevice | undefined, offset: number): string | undefined {
  if (device instanceof VirtioMmioTransport && offset === VIRTIO_MMIO_INTERRUPT_STATUS) return "virtio InterruptStatus reads (depend on ring processing)";
  if (bus === dev.pio && addr === CMOS_DATA_PORT && dev.rtc.selectsClock) return "CMOS clock reads (the host's time)";
  return undefined;
}

export function replayTrace(trace: Trace, opts: ReplayOptions = {}): ReplayReport {
  const dev = replayDevices(trace, opts);
  const report: ReplayReport = { accesses: 0, compared: 0, skipped: {} };
  const skip = (why: string) => (report.skipped[why] = (report.skipped[why] ?? 0) + 1);
  for (const r of trace.records) {
    if (!isExit(r)) {
      const feed = dev.input.get(r.device);
      if (feed) feed(Buffer.from(r.bytes, "hex"));
      else skip(`input for ${r.device} (no model)`);
      continue;
    }
    const bus = r.reason === "KVM_EXIT_IO" ? dev.pio : r.reason === "KVM_EXIT_MMIO" ? dev.mmio : undefined;
    if (!bus || r.addr === undefined || !r.size || !r.dir) {
      skip(`${r.reason} (not a device access)`);
      continue;
    }
    const hit = bus.find(r.addr);
    if ((hit?.device.name ?? undefined) !== r.device) {
      if (r.device && !hit) {
        skip(`accesses to ${r.device} (no model)`);
        continue;
      }
      const where = `${bus.kind} ${hex(BigInt(r.addr))}`;
      return { ...report, mismatch: { line: r.line, record: r, message: `${where}: the trace has ${r.device ?? "nothing"} there, the replay set has ${hit?.device.name ?? "nothing"}` } };
    }
    const ring = r.dir === "in" || r.dir === "read" ? unreplayable(dev, bus, r.addr, hit?.device, hit?.offset ?? 0) : undefined;
    if (ring) {
      skip(ring);
      continue;
    }
    report.accesses++;
    if (r.dir === "out" || r.dir === "write") {
      bus.write(r.addr, toBytes(dataOf(r), r.size));
      continue;
    }
    const buf = new Uint8Array(r.size);
    bus.read(r.addr, buf);
    report.compared++;
    const got = fromBytes(buf);
    if (got !== dataOf(r)) {
      const reg = r.device ? `${r.device}${r.register ? `.${r.register}` : ""}` : "unclaimed";
      return { ...report, mismatch: { line: r.line, record: r, message: `${r.size}-byte ${r.dir} of ${reg} at ${hex(BigInt(r.addr))}: recorded ${hex(dataOf(r))}, the model answers ${hex(got)}` } };
    }
  }
  return report;
}
