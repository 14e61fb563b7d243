// virtio-net (virtio 1.2 §5.1): an Ethernet interface whose other end is a TAP device on the host.
//
// Two queues: receiveq1 (RX, 0), where the driver posts empty device-writable buffers that the device
// fills with frames from the host, and transmitq1 (TX, 1), where the driver posts device-readable frames
// for the host. Every frame on either queue starts with a struct virtio_net_hdr_v1 (12 bytes with
// VIRTIO_F_VERSION_1): checksum and segmentation offload information.
//
// The TAP is opened with IFF_VNET_HDR and a 12-byte header size, so that header is exactly what the host
// kernel reads and writes before each frame: a transmitted chain goes to the TAP as one write() of header
// and frame, and a frame read from the TAP (header first) goes into the receive buffers as it is, after
// the device sets num_buffers. Offloads therefore cost nothing here:
//   - the driver's own transmit offloads (VIRTIO_NET_F_CSUM, HOST_TSO4/6): the host kernel finishes the
//     checksum or segments the 64 KiB frame itself;
//   - receive offloads (GUEST_CSUM, GUEST_TSO4/6): the kernel may hand us frames with a partial checksum or
//     GSO super-frames, but only those the driver accepted: TUNSETOFFLOAD tells it which.
// kindling offers CSUM, GUEST_CSUM, GUEST_TSO4/6, HOST_TSO4/6 and MRG_RXBUF. Not the UFO pair: Linux 4.14
// and later neither produce UFO frames nor honour TUN_F_UFO, so offering them would promise nothing. Not
// the ECN bits (they only qualify TSO). MRG_RXBUF lets the driver post page-sized buffers and receive a
// 64 KiB GSO frame across several of them (num_buffers says how many) instead of posting 64 KiB chains.
//
// Receiving is driven by the host: the TAP's reader thread (src/net/tap.ts) hands over each frame on the
// main thread. When the driver has no receive buffer free, frames wait in a bounded queue until it posts
// some (its notify on the RX queue); while that queue is full the reader stops reading and the host
// kernel keeps (or drops and counts) further frames. A frame that can never fit is dropped and counted.
//
// A transmit chain the driver gets wrong (no header, longer than TAP_MAX_FRAME, offloads it did not
// negotiate) is dropped and counted, and the chain returned: a bad frame is the guest's own loss.

import { checkKind, DeviceStateError, fromBase64, int, toBase64 } from "../state.ts";
import { StructView } from "../../kvm/struct.ts";
import type { MmdsNetworkStack } from "../../mmds/stack.ts";
import { RateLimiter, resumeOnUnblock, type RateLimiterConfig } from "../rate-limiter.ts";
import { Tap, TAP_MAX_FRAME } from "../../net/tap.ts";
import { TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6 } from "../../net/uapi.ts";
import { rateLimitedLog } from "../../rate-limit.ts";
import { readConfigBytes, type VirtioContext, type VirtioDevice, type VirtioDeviceState } from "./device.ts";
import type { DescriptorChain, Virtqueue } from "./queue.ts";
import {
  bit, virtio_net_config, virtio_net_hdr_v1, VIRTIO_ID_NET, VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM,
  VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6,
  VIRTIO_NET_F_MAC, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_F_MTU, VIRTIO_NET_F_STATUS, VIRTIO_NET_HDR_F_NEEDS_CSUM,
  VIRTIO_NET_HDR_GSO_ECN, VIRTIO_NET_HDR_GSO_NONE, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6, VIRTIO_NET_S_LINK_UP,
} from "./uapi.ts";

/** Queue indexes (§5.1.2). */
export const NET_RX_QUEUE = 0;
export const NET_TX_QUEUE = 1;

/** The header before each frame. */
export const NET_HDR_SIZE = virtio_net_hdr_v1.size;
/** The largest chain kindling transmits or frame it receives, header included (= TAP_MAX_FRAME). */
export const NET_MAX_FRAME = TAP_MAX_FRAME;

const HDR_FLAGS = virtio_net_hdr_v1.offsetOf("flags");
const HDR_GSO_TYPE = virtio_net_hdr_v1.offsetOf("gso_type");
const HDR_NUM_BUFFERS = virtio_net_hdr_v1.offsetOf("num_buffers");

/** Where frames go and come from: a TAP (src/net/tap.ts), or a stand-in in tests. */
export interface NetBackend {
  readonly name: string;
  /** Send one frame, virtio-net header first. Throws if the host refuses it. */
  write(frame: Uint8Array): void;
  /** TUNSETOFFLOAD: the TUN_F_* offloads the guest accepts on receive. */
  setOffload(flags: number): void;
  /** Hand each frame from the host (header first) to `onFrame`; each is given back with releaseFrame(). */
  startReading(onFrame: (frame: Uint8Array) => void, opts: { maxInFlight?: number; onError?: (message: string) => void }): void;
  releaseFrame(): void;
  close(): void | Promise<void>;
}

export interface VirtioNetOptions {
  /** The guest's MAC address ("06:00:ac:10:00:02"); without one the driver picks a random one. */
  mac?: string;
  /** Offer VIRTIO_NET_F_MTU with this MTU (68 to 65535); without it the driver uses 1500. */
  mtu?: number;
  /** QueueNumMax of each queue (default 256, as Firecracker). */
  queueSize?: number;
  /** Received frames kept while the driver has no buffer for them (default 64). */
  maxPendingFrames?: number;
  /** Firecracker's `rx_rate_limiter` and `tx_rate_limiter`: frames over budget wait. */
  rxRateLimiter?: RateLimiterConfig;
  txRateLimiter?: RateLimiterConfig;
  log?: (message: string) => void;
}

/** Firecracker's network-interfaces fields: the device opens the TAP `hostDevName` itself. */
export interface VirtioNetTapOptions extends Omit<VirtioNetOptions, "mac"> {
  /** `host_dev_name`: the TAP interface to attach to (created if it does not exist). */
  hostDevName: string;
  /** `guest_mac`. */
  guestMac?: string;
  /** `iface_id`, for log lines. */
  ifaceId?: string;
}

export interface NetCounters {
  rxFrames: number;
  rxBytes: number;
  /** Received frames not given to the guest: no room ever, device not running, bad offload flags. */
  rxDropped: number;
  txFrames: number;
  txBytes: number;
  /** Transmit chains not sent: malformed by the guest, or refused by the host. */
  txDropped: number;
}

/** Parse "aa:bb:cc:dd:ee:ff"; throws with a message naming the problem. */
export function parseMac(mac: string): Uint8Array {
  const parts = mac.split(":");
  if (parts.length !== 6 || !parts.every((p) => /^[0-9a-fA-F]{2}$/.test(p))) {
    throw new Error(`MAC address ${JSON.stringify(mac)} is not six hex bytes separated by ':'`);
  }
  const bytes = Uint8Array.from(parts.map((p) => parseInt(p, 16)));
  // Bit 0 of the first byte marks a group (multicast) address; a NIC's own address must not have it.
  if (bytes[0]! & 1) throw new Error(`MAC address ${mac} is a multicast address`);
  return bytes;
}

/** Check the MAC and MTU options; returns the MAC's bytes. */
function checkOptions(opts: VirtioNetOptions): Uint8Array | undefined {
  // 68: the smallest MTU IPv4 allows (RFC 791); the config field is 16 bits.
  if (opts.mtu !== undefined && (!Number.isInteger(opts.mtu) || opts.mtu < 68 || opts.mtu > 65535)) {
    throw new Error(`virtio-net: MTU ${opts.mtu} is not between 68 and 65535`);
  }
  return opts.mac === undefined ? undefined : parseMac(opts.mac);
}

/** §5.1.3.1: feature bits that need another one, with their names for the refusal message. */
const FEATURE_NEEDS: [feature: number, name: string, needs: number, needsName: string][] = [
  [VIRTIO_NET_F_GUEST_TSO4, "VIRTIO_NET_F_GUEST_TSO4", VIRTIO_NET_F_GUEST_CSUM, "VIRTIO_NET_F_GUEST_CSUM"],
  [VIRTIO_NET_F_GUEST_TSO6, "VIRTIO_NET_F_GUEST_TSO6", VIRTIO_NET_F_GUEST_CSUM, "VIRTIO_NET_F_GUEST_CSUM"],
  [VIRTIO_NET_F_HOST_TSO4, "VIRTIO_NET_F_HOST_TSO4", VIRTIO_NET_F_CSUM, "VIRTIO_NET_F_CSUM"],
  [VIRTIO_NET_F_HOST_TSO6, "VIRTIO_NET_F_HOST_TSO6", VIRTIO_NET_F_CSUM, "VIRTIO_NET_F_CSUM"],
];

/**
 * Configuration space (mac, status, mtu), the frames from the host waiting for receive buffers (the
 * device's pending work, virtio-net header first, base64) and the counters. The offloads follow from the
 * negotiated features, which the transport describes; the TAP is wiring.
 */
export type VirtioNetState = { kind: "virtio-net"; config: string; pending: string[]; counters: NetCounters };

export class VirtioNet implements VirtioDevice {
  readonly name: string;
  readonly deviceId = VIRTIO_ID_NET;
  readonly deviceFeatures: bigint;
  readonly queueMaxSizes: readonly number[];
  readonly counters: NetCounters = { rxFrames: 0, rxBytes: 0, rxDropped: 0, txFrames: 0, txBytes: 0, txDropped: 0 };
  private readonly config = new StructView(virtio_net_config);
  private readonly log: (message: string) => void;
  /** Guest mistakes on each queue, through the rate-limited log: a guest cannot flood it. */
  private readonly rxLog: { note: (message: string) => void };
  private readonly txLog: { note: (message: string) => void };
  private readonly maxPending: number;
  /** Frames from the host waiting for receive buffers, oldest first. */
  private readonly pending: Uint8Array[] = [];
  /** Where a transmitted chain is gathered before its one write(). */
  private readonly txBuffer = new Uint8Array(NET_MAX_FRAME);
  private ctx: VirtioContext | undefined;
  private rx: Virtqueue | undefined;
  private tx: Virtqueue | undefined;
  private mergeable = false;
  /** The gso_type values the driver accepts on receive. */
  private guestGso = new Set<number>([VIRTIO_NET_HDR_GSO_NONE]);
  private guestCsum = false;
  private hostGso = new Set<number>([VIRTIO_NET_HDR_GSO_NONE]);
  private hostCsum = false;
  private reading = false;
  /** Chains deliverPending may still pop this round. */
  private rxBudget = 0;
  private nextRoundScheduled = false;
  /** Receive and transmit limits (PATCH /network-interfaces updates them with update()). */
  readonly rxRateLimiter: RateLimiter;
  readonly txRateLimiter: RateLimiter;
  /** MMDS on this interface: frames for it are answered by the VMM and never reach the host. */
  private mmds: MmdsNetworkStack | undefined;
  /** Frames among `pending` that MMDS made (no host buffer to release), and how many. */
  private readonly local = new WeakSet<Uint8Array>();
  private localPending = 0;

  readonly backend: NetBackend;

  /** A device on `backend` (a Tap, or a stand-in in tests). */
  constructor(backend: NetBackend, opts?: VirtioNetOptions);
  /** A device on the TAP `hostDevName`, with Firecracker's field names. */
  constructor(opts: VirtioNetTapOptions);
  constructor(backendOrTap: NetBackend | VirtioNetTapOptions, netOpts: VirtioNetOptions = {}) {
    let opts = netOpts;
    let mac: Uint8Array | undefined;
    if ("hostDevName" in backendOrTap) {
      const { hostDevName, guestMac, ifaceId: _, ...rest } = backendOrTap;
      opts = { ...rest, mac: guestMac };
      // Options are checked before the TAP is opened, so a bad one leaves nothing open.
      mac = checkOptions(opts);
      this.backend = new Tap(hostDevName);
    } else {
      mac = checkOptions(opts);
      this.backend = backendOrTap;
    }
    const backend = this.backend;
    this.name = `virtio-net(${backend.name})`;
    this.log = rateLimitedLog(opts.log ?? (() => {}));
    this.rxLog = { note: (m) => this.log(`${this.name}: rx: ${m}`) };
    this.txLog = { note: (m) => this.log(`${this.name}: tx: ${m}`) };
    const queueSize = opts.queueSize ?? 256;
    this.queueMaxSizes = [queueSize, queueSize];
    this.maxPending = opts.maxPendingFrames ?? 64;
    this.rxRateLimiter = new RateLimiter(opts.rxRateLimiter);
    this.rxRateLimiter.onUnblocked = resumeOnUnblock(() => this.ctx, () => (this.deliverPending(), false));
    this.txRateLimiter = new RateLimiter(opts.txRateLimiter);
    this.txRateLimiter.onUnblocked = resumeOnUnblock(() => this.ctx, () => this.transmit());
    let features =
      bit(VIRTIO_NET_F_CSUM) | bit(VIRTIO_NET_F_GUEST_CSUM) | bit(VIRTIO_NET_F_GUEST_TSO4) |
      bit(VIRTIO_NET_F_GUEST_TSO6) | bit(VIRTIO_NET_F_HOST_TSO4) | bit(VIRTIO_NET_F_HOST_TSO6) |
      bit(VIRTIO_NET_F_MRG_RXBUF) | bit(VIRTIO_NET_F_STATUS);
    if (mac) {
      this.config.slice("mac").set(mac);
      features |= bit(VIRTIO_NET_F_MAC);
    }
    if (opts.mtu !== undefined) {
      this.config.set("mtu", opts.mtu);
      features |= bit(VIRTIO_NET_F_MTU);
    }
    this.deviceFeatures = features;
    // The TAP's carrier is up while kindling holds it open: the link is always up.
    this.config.set("status", VIRTIO_NET_S_LINK_UP);
  }

  /** Answer MMDS on this interface with `stack` (Firecracker's configure_mmds_network_stack), or stop. */
  setMmds(stack: MmdsNetworkStack | undefined): void {
    this.mmds?.close();
    this.mmds = stack;
    if (stack) stack.output = (frame) => this.receiveLocal(frame);
  }

  /** Frames waiting for receive buffers. */
  get pendingFrames(): number {
    return this.pending.length;
  }

  readConfig(offset: number, data: Uint8Array): void {
    readConfigBytes(this.config.bytes, offset, data);
  }

  writeConfig(offset: number, _data: Uint8Array): void {
    // `mac` is writable only in legacy devices (§5.1.4.2); the rest is read-only.
    this.log(`${this.name}: write to read-only config offset ${offset} ignored`);
  }

  checkFeatures(features: bigint): string | undefined {
    for (const [f, name, needs, needsName] of FEATURE_NEEDS) {
      if (features & bit(f) && !(features & bit(needs))) return `${name} needs ${needsName} (virtio 1.2 §5.1.3.1)`;
    }
    return undefined;
  }

  activate(ctx: VirtioContext): void {
    const rx = ctx.queues[NET_RX_QUEUE];
    const tx = ctx.queues[NET_TX_QUEUE];
    if (!rx || !tx) throw new Error(`queue ${!rx ? "0 (receiveq1)" : "1 (transmitq1)"} is not ready`);
    const has = (f: number) => (ctx.features & bit(f)) !== 0n;
    this.mergeable = has(VIRTIO_NET_F_MRG_RXBUF);
    this.guestCsum = has(VIRTIO_NET_F_GUEST_CSUM);
    this.hostCsum = has(VIRTIO_NET_F_CSUM);
    this.guestGso = new Set([VIRTIO_NET_HDR_GSO_NONE]);
    if (has(VIRTIO_NET_F_GUEST_TSO4)) this.guestGso.add(VIRTIO_NET_HDR_GSO_TCPV4);
    if (has(VIRTIO_NET_F_GUEST_TSO6)) this.guestGso.add(VIRTIO_NET_HDR_GSO_TCPV6);
    this.hostGso = new Set([VIRTIO_NET_HDR_GSO_NONE]);
    if (has(VIRTIO_NET_F_HOST_TSO4)) this.hostGso.add(VIRTIO_NET_HDR_GSO_TCPV4);
    if (has(VIRTIO_NET_F_HOST_TSO6)) this.hostGso.add(VIRTIO_NET_HDR_GSO_TCPV6);
    // Tell the host kernel which receive offloads the driver takes (a TSO flag needs TUN_F_CSUM: checked
    // by checkFeatures through the GUEST_TSO -> GUEST_CSUM dependency).
    let offload = 0;
    if (this.guestCsum) offload |= TUN_F_CSUM;
    if (has(VIRTIO_NET_F_GUEST_TSO4)) offload |= TUN_F_TSO4;
    if (has(VIRTIO_NET_F_GUEST_TSO6)) offload |= TUN_F_TSO6;
    this.backend.setOffload(offload);
    this.ctx = ctx;
    this.rx = rx;
    this.tx = tx;
    if (!this.reading) {
      this.reading = true;
      this.backend.startReading((frame) => this.onHostFrame(frame), {
        maxInFlight: this.maxPending,
        onError: (m) => this.log(`${this.name}: ${m}`),
      });
    }
  }

  reset(): void {
    this.ctx = undefined;
    this.rx = undefined;
    this.tx = undefined;
    // Frames for the old driver are dropped; the next one starts clean.
    this.dropPending();
    try {
      this.backend.setOffload(0);
    } catch (e) {
      this.log(`${this.name}: clearing offloads: ${(e as Error).message}`);
    }
  }

  close(): void | Promise<void> {
    this.reset();
    this.setMmds(undefined);
    this.rxRateLimiter.close();
    this.txRateLimiter.close();
    return this.backend.close();
  }

  describe(): VirtioNetState {
    // MMDS's own replies are not the host's frames and are not kept: TCP sends them again.
    const fromHost = this.pending.filter((f) => !this.local.has(f));
    return { kind: "virtio-net", config: toBase64(this.config.bytes), pending: fromHost.map(toBase64), counters: { ...this.counters } };
  }

  restore(s: VirtioDeviceState): void {
    const D = this.name;
    checkKind(D, s, "virtio-net");
    const config = fromBase64(D, "config", s.config, this.config.bytes.byteLength);
    if (config.byteLength !== this.config.bytes.byteLength) throw new DeviceStateError(D, `config: ${config.byteLength} bytes, expected ${this.config.bytes.byteLength}`);
    if (!Array.isArray(s.pending) || s.pending.length > this.maxPending) throw new DeviceStateError(D, `pending: not a list of at most ${this.maxPending} frames`);
    const pending = s.pending.map((f, i) => fromBase64(D, `pending[${i}]`, f, NET_HDR_SIZE + NET_MAX_FRAME));
    const c = s.counters as Partial<NetCounters> | undefined;
    const counters = Object.fromEntries(Object.keys(this.counters).map((k) => [k, int(D, `counters.${k}`, c?.[k as keyof NetCounters], 0, Number.MAX_SAFE_INTEGER)]));
    this.config.bytes.set(config);
    this.pending.splice(0, this.pending.length, ...pending);
    Object.assign(this.counters, counters);
  }

  process(queueIndex: number): boolean {
    if (queueIndex === NET_TX_QUEUE) return this.transmit();
    if (queueIndex === NET_RX_QUEUE) this.deliverPending();
    return false;
  }

  // ---- transmit: guest -> host ----

  private transmit(): boolean {
    const q = this.tx;
    if (!q) return false;
    for (let n = 0; n < q.size; n++) {
      const chain = q.pop();
      if (!chain) return false;
      if (!this.txRateLimiter.admit(chain.readableLength)) {
        // Over budget: the chain waits on the queue until the limiter unblocks.
        q.undoPop(1);
        return false;
      }
      this.sendChain(chain);
      // Transmit buffers are device-readable: nothing written (§5.1.6.2).
      q.push(chain, 0);
    }
    return q.hasAvailable();
  }

  private sendChain(chain: DescriptorChain): void {
    const len = chain.readableLength;
    if (len < NET_HDR_SIZE || len > NET_MAX_FRAME) {
      this.counters.txDropped++;
      this.txLog.note(`chain ${chain.head}: ${len} bytes; a frame is ${NET_HDR_SIZE} to ${NET_MAX_FRAME} bytes with its header`);
      return;
    }
    // Gather header and frame into one buffer: the TAP takes one frame per write().
    const buf = this.txBuffer.subarray(0, len);
    let at = 0;
    for (const s of chain.readableSlices(0, len)) {
      buf.set(s, at);
      at += s.byteLength;
    }
    // Checked on our copy: the guest cannot change it after the check.
    const flags = buf[HDR_FLAGS]!;
    const gso = buf[HDR_GSO_TYPE]! & ~VIRTIO_NET_HDR_GSO_ECN;
    const why =
      flags & VIRTIO_NET_HDR_F_NEEDS_CSUM && !this.hostCsum ? "NEEDS_CSUM without VIRTIO_NET_F_CSUM"
      : !this.hostGso.has(gso) ? `gso_type ${buf[HDR_GSO_TYPE]} was not negotiated`
      : buf[HDR_GSO_TYPE]! & VIRTIO_NET_HDR_GSO_ECN ? "GSO_ECN without VIRTIO_NET_F_HOST_ECN"
      : undefined;
    if (why) {
      this.counters.txDropped++;
      this.txLog.note(`chain ${chain.head}: ${why} (§5.1.6.2); dropped`);
      return;
    }
    // num_buffers means nothing on transmit (§5.1.6.2): zero it rather than pass the guest's value on.
    buf[HDR_NUM_BUFFERS] = 0;
    buf[HDR_NUM_BUFFERS + 1] = 0;
    // A frame for MMDS is answered by the VMM (src/mmds/stack.ts) and goes no further.
    if (this.mmds?.handleFrame(buf.subarray(NET_HDR_SIZE))) {
      this.counters.txFrames++;
      this.counters.txBytes += len - NET_HDR_SIZE;
      return;
    }
    try {
      this.backend.write(buf);
    } catch (e) {
      // The host refused the frame (EINVAL for a header the kernel finds inconsistent, EIO when down).
      this.counters.txDropped++;
      this.txLog.note(`chain ${chain.head}: ${(e as Error).message}`);
      return;
    }
    this.counters.txFrames++;
    this.counters.txBytes += len - NET_HDR_SIZE;
  }

  // ---- receive: host -> guest ----

  /** A frame from MMDS for the guest: queued like a frame from the host, with an all-zero header. */
  private receiveLocal(frame: Uint8Array): void {
    if (!this.ctx?.running() || this.localPending >= this.maxPending) {
      // TCP retransmits what is lost here.
      this.counters.rxDropped++;
      return;
    }
    const f = new Uint8Array(NET_HDR_SIZE + frame.byteLength);
    f.set(frame, NET_HDR_SIZE);
    this.local.add(f);
    this.localPending++;
    this.pending.push(f);
    this.deliverPending();
    this.ctx.signalUsed();
  }

  /** A frame leaves `pending`: a host frame's buffer goes back to the reader. */
  private release(frame: Uint8Array): void {
    if (this.local.delete(frame)) this.localPending--;
    else this.backend.releaseFrame();
  }

  private onHostFrame(frame: Uint8Array): void {
    if (!this.ctx?.running()) {
      this.counters.rxDropped++;
      this.backend.releaseFrame();
      return;
    }
    this.pending.push(frame);
    this.deliverPending();
    // After async work the device raises the interrupt itself (the transport does it after a notify).
    this.ctx.signalUsed();
  }

  /**
   * Place waiting frames into receive buffers, oldest first, until one does not fit yet. Returns how many.
   * A round pops at most the queue's size of chains (like Virtqueue.serve): a guest that keeps the ring full
   * of chains too short for a header would otherwise keep this loop, and the main thread, going forever.
   * When the budget runs out the next round runs on the next event-loop turn.
   */
  private deliverPending(): number {
    const q = this.rx;
    let delivered = 0;
    if (q) this.rxBudget = q.size;
    while (q && this.pending.length > 0 && this.ctx?.running()) {
      const frame = this.pending[0]!;
      if (!this.rxRateLimiter.admit(frame.byteLength)) break;
      const r = this.place(q, frame);
      if (r === "wait" || r === "yield") {
        this.rxRateLimiter.refund(frame.byteLength);
        if (r === "yield") this.scheduleNextRound();
        break;
      }
      this.pending.shift();
      this.release(frame);
      if (r === "placed") {
        delivered++;
        this.counters.rxFrames++;
        this.counters.rxBytes += frame.byteLength - NET_HDR_SIZE;
      } else {
        this.counters.rxDropped++;
      }
    }
    return delivered;
  }

  /** Another deliverPending round after the event loop has run (setImmediate: after I/O and timers). */
  private scheduleNextRound(): void {
    if (this.nextRoundScheduled) return;
    this.nextRoundScheduled = true;
    setImmediate(() => {
      this.nextRoundScheduled = false;
      if (!this.ctx?.running()) return;
      this.deliverPending();
      this.ctx.signalUsed();
    });
  }

  /**
   * Put one frame into receive buffers: one chain, or with MRG_RXBUF as many as it needs (§5.1.6.3.2).
   * "wait": not enough buffers yet (none taken). "dropped": the frame can never be delivered. "yield": this
   * round's budget of pops (rxBudget) is spent (none taken); try again next round.
   */
  private place(q: Virtqueue, frame: Uint8Array): "placed" | "wait" | "dropped" | "yield" {
    const why = this.unacceptable(frame);
    if (why) {
      this.rxLog.note(`${why}; dropped`);
      return "dropped";
    }
    const chains: DescriptorChain[] = [];
    let room = 0;
    while (room < frame.byteLength) {
      if (chains.length === q.size || (!this.mergeable && chains.length === 1)) {
        // The whole ring, or (without MRG_RXBUF) one chain, is too small: it never will be large enough.
        q.undoPop(chains.length);
        this.rxLog.note(`a ${frame.byteLength}-byte frame does not fit ${this.mergeable ? "the whole receive ring" : `receive chain ${chains[0]!.head}`} (${room} bytes); dropped`);
        return "dropped";
      }
      if (this.rxBudget <= 0) {
        q.undoPop(chains.length);
        return "yield";
      }
      const chain = q.pop();
      if (!chain) {
        q.undoPop(chains.length);
        return "wait";
      }
      this.rxBudget--;
      // A chain with fewer bytes than the header cannot start a frame; as a later part it adds its room.
      chains.push(chain);
      room += chain.writableLength;
      if (chains.length === 1 && chain.writableLength < NET_HDR_SIZE) {
        // Hand it back empty (the driver sees a short packet and recycles it) and look for the next.
        chains.pop();
        room = 0;
        q.push(chain, 0);
        this.rxLog.note(`receive chain ${chain.head} has ${chain.writableLength} writable bytes, less than the ${NET_HDR_SIZE}-byte header; returned empty`);
      }
    }
    // num_buffers: how many chains hold this frame (always 1 without MRG_RXBUF).
    new DataView(frame.buffer, frame.byteOffset).setUint16(HDR_NUM_BUFFERS, chains.length, true);
    // Without GUEST_CSUM the device sets flags to zero (§5.1.6.4.1); the kernel may have set DATA_VALID.
    if (!this.guestCsum) frame[HDR_FLAGS] = 0;
    let at = 0;
    for (const chain of chains) {
      const n = Math.min(chain.writableLength, frame.byteLength - at);
      chain.write(0, frame.subarray(at, at + n));
      at += n;
      q.push(chain, n);
    }
    return "placed";
  }

  /** A frame from the host the driver did not agree to receive (offloads it did not negotiate). */
  private unacceptable(frame: Uint8Array): string | undefined {
    if (frame.byteLength < NET_HDR_SIZE) return `a ${frame.byteLength}-byte frame from the host is shorter than its header`;
    if (frame.byteLength > NET_MAX_FRAME) return `a ${frame.byteLength}-byte frame from the host is over ${NET_MAX_FRAME} bytes`;
    const flags = frame[HDR_FLAGS]!;
    if (flags & VIRTIO_NET_HDR_F_NEEDS_CSUM && !this.guestCsum) return "a frame with a partial checksum, but GUEST_CSUM was not negotiated";
    const gso = frame[HDR_GSO_TYPE]!;
    if (!this.guestGso.has(gso)) return `a frame with gso_type ${gso}, not negotiated`;
    return undefined;
  }

  private dropPending(): void {
    for (const frame of this.pending) {
      this.counters.rxDropped++;
      this.release(frame);
    }
    this.pending.length = 0;
  }
}
