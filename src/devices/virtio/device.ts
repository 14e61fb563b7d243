// What a virtio device type (block, entropy, and later net and vsock) provides to the transport, and what
// the transport gives it back.
//
// The transport (mmio.ts) owns everything the spec defines for all devices: the status state machine,
// feature negotiation, queue registers, interrupts. A device type only knows its ID, its own feature
// bits, its configuration space and what to do with the buffers on its queues.

import type { GuestMemory } from "../../memory.ts";
import type { Virtqueue } from "./queue.ts";

export interface VirtioDevice {
  /** Short name for logs: "virtio-blk". */
  readonly name: string;
  /** Device ID (§5): VIRTIO_ID_BLOCK, VIRTIO_ID_RNG ... */
  readonly deviceId: number;
  /**
   * Device-type feature bits offered (§2.2). The transport adds the ones it implements itself:
   * VIRTIO_F_VERSION_1, VIRTIO_RING_F_INDIRECT_DESC and VIRTIO_RING_F_EVENT_IDX.
   */
  readonly deviceFeatures: bigint;
  /** One entry per virtqueue (net: [RX, TX]), its largest size (QueueNumMax): a power of 2. */
  readonly queueMaxSizes: readonly number[];

  /** Fill `data` from configuration space at `offset` (bytes past the end read as zero). */
  readConfig(offset: number, data: Uint8Array): void;
  /** The driver wrote configuration space (most fields are read-only: ignore those writes). */
  writeConfig(offset: number, data: Uint8Array): void;
  /** Optional extra check at FEATURES_OK: a message refuses the feature set, undefined accepts it. */
  checkFeatures?(features: bigint): string | undefined;

  /**
   * DRIVER_OK: start using the queues. `ctx.queues[i]` is undefined for a queue the driver did not make
   * ready. Throw (with a message naming the problem) to refuse: the device then needs a reset.
   */
  activate(ctx: VirtioContext): void;
  /**
   * The driver notified queue `queueIndex` (or the VM calls this for a device-side event). Use at most
   * `queue.size` chains; return true if more are waiting, so the transport schedules another round
   * instead of letting one busy queue hold the main thread.
   */
  process(queueIndex: number): boolean;
  /** Device reset (status 0 written): forget the queues and any request state. */
  reset(): void;
  /** The VM is going away: release host resources (a TAP, sockets, reader threads). */
  close?(): void | Promise<void>;

  /**
   * The device type's own state as plain data (src/devices/state.ts): its configuration space and the
   * work it holds. The transport describes the rest (status, features, queues) around it.
   */
  describe(): VirtioDeviceState;
  /** Put the state back, on a fresh device; the transport calls it after activate() for a running device. */
  restore(state: VirtioDeviceState): void;
}

/** A device type's state: plain data whose `kind` names the type ("virtio-blk" ...). */
export type VirtioDeviceState = { readonly kind: string } & Record<string, unknown>;

/** Given to a device at activation. */
export interface VirtioContext {
  readonly mem: GuestMemory;
  /** The negotiated feature bits. */
  readonly features: bigint;
  readonly queues: readonly (Virtqueue | undefined)[];
  /** Raise a used-buffer interrupt if a queue's suppression settings ask for one (after async work). */
  signalUsed(): void;
  /** The device changed its configuration space: bump ConfigGeneration, raise a configuration interrupt. */
  configChanged(): void;
  /** An error the device cannot recover from: set DEVICE_NEEDS_RESET and stop processing. */
  fail(message: string): void;
  /**
   * True while the device may use its queues: DRIVER_OK is set and DEVICE_NEEDS_RESET is not. A device
   * that does work on host events (a frame arrived, a socket has data) checks it first.
   */
  running(): boolean;
}

/** Copy configuration-space bytes at [offset, offset+data.length) into `data`, zero past the end. */
export function readConfigBytes(config: Uint8Array, offset: number, data: Uint8Array): void {
  data.fill(0);
  if (offset < 0 || offset >= config.byteLength) return;
  data.set(config.subarray(offset, Math.min(config.byteLength, offset + data.byteLength)));
}
