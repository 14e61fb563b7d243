// One vsock stream connection between a guest socket and a host Unix socket, as the vsock device
// (vsock.ts) keeps it: its state, its two byte buffers, and credit-based flow control (virtio 1.2 §5.10.6.3).
//
// Credit: each side tells the other, in every packet header, how much receive buffer it has for the
// connection (buf_alloc) and how many bytes it has consumed so far (fwd_cnt, a free-running 32-bit count).
// A sender may have at most buf_alloc - (bytes sent - peer's fwd_cnt) bytes outstanding. So:
//   - host -> guest: we never send more than the guest's credit; with data waiting and no credit, we ask
//     once (CREDIT_REQUEST) and wait for a packet that carries a larger fwd_cnt;
//   - guest -> host: we offer VSOCK_BUF_ALLOC bytes and count what we have written to the host socket as
//     forwarded (fwd_cnt). A guest that sends past its credit is reset. When the guest's idea of our free
//     space gets low and we have forwarded more, we send CREDIT_UPDATE so it can go on.
// Both buffers are bounded: the guest's by its credit, the host's by pausing the host socket.
//
// Closing: SHUTDOWN carries VIRTIO_VSOCK_SHUTDOWN_RCV (the sender will receive no more) and/or _SEND (will
// send no more). When both directions are shut, the connection ends with RST, which the side that
// receives the last SHUTDOWN sends (Linux does, and waits for it). A host that half-closes (EOF) becomes
// SHUTDOWN(SEND) to the guest after its last bytes; a host socket that closes becomes SHUTDOWN(RCV|SEND).
// A connection stuck in a handshake or in closing is reset after a timeout, as Firecracker does.

import type { Socket } from "bun";
import {
  VIRTIO_VSOCK_OP_CREDIT_REQUEST, VIRTIO_VSOCK_OP_CREDIT_UPDATE, VIRTIO_VSOCK_OP_REQUEST, VIRTIO_VSOCK_OP_RESPONSE,
  VIRTIO_VSOCK_OP_RST, VIRTIO_VSOCK_OP_RW, VIRTIO_VSOCK_OP_SHUTDOWN, VIRTIO_VSOCK_SHUTDOWN_RCV, VIRTIO_VSOCK_SHUTDOWN_SEND,
} from "./uapi.ts";

/** Receive buffer we offer the guest per connection (buf_alloc), as Firecracker's CONN_TX_BUF_SIZE. */
export const VSOCK_BUF_ALLOC = 256 * 1024;
/** Largest payload in one packet either way (Linux's VIRTIO_VSOCK_MAX_PKT_BUF_SIZE). */
export const VSOCK_MAX_PKT_DATA = 64 * 1024;
/** Host bytes buffered for the guest before the host socket is paused. */
export const VSOCK_HOST_BUF_LIMIT = 256 * 1024;
/** Send CREDIT_UPDATE once the guest believes we have less free space than this. */
export const VSOCK_CREDIT_UPDATE_THRESHOLD = 64 * 1024;
/** A handshake or a shutdown the other side does not finish in this time ends in RST (Firecracker: 2 s). */
export const VSOCK_TIMEOUT_MS = 2000;

export type ConnState =
  /** The host connected and sent CONNECT: we sent REQUEST and wait for the guest's RESPONSE. */
  | "awaiting-guest"
  /** The guest sent REQUEST: we are connecting to the host's `<uds_path>_<port>`. */
  | "awaiting-host"
  | "established"
  /** We sent SHUTDOWN(RCV|SEND) and wait for the guest's RST (or the timeout). */
  | "closing"
  | "closed";

/** What the connection wants to send to the guest; the device adds the addresses and credit fields. */
export interface OutPacket {
  op: number;
  flags: number;
  data?: Uint8Array;
}

/** The socket's per-connection data, for the Unix socket handlers. */
export interface HostSocketData {
  conn?: VsockConnection;
  /** Bytes of the `CONNECT <port>\n` line received so far (host-initiated connections). */
  line?: number[];
}
export type HostSocket = Socket<HostSocketData>;

/** What the connection needs from the device. */
export interface ConnectionOwner {
  /** The connection has something for the guest: put it on the receive queue's list. */
  wake(conn: VsockConnection): void;
  /** The connection is over: forget it. */
  remove(conn: VsockConnection): void;
  log(message: string): void;
}

const u32 = (n: number) => n >>> 0;

export class VsockConnection {
  state: ConnState;
  socket: HostSocket | undefined;

  // guest -> host
  /** Payload bytes received from the guest (free-running, 32 bits). */
  rxCnt = 0;
  /** Of those, bytes written to the host socket: our fwd_cnt. */
  fwdCnt = 0;
  /** The fwd_cnt the guest last heard from us. */
  private fwdCntSent = 0;
  /** Bytes for the host socket it has not taken yet; `counted` bytes are guest payload (fwd_cnt). */
  private toHost: { bytes: Uint8Array; counted: boolean }[] = [];

  // host -> guest
  /** Payload bytes sent to the guest (free-running, 32 bits). */
  txCnt = 0;
  peerBufAlloc = 0;
  peerFwdCnt = 0;
  private fromHost: Uint8Array[] = [];
  fromHostBytes = 0;
  private creditRequested = false;

  /** Control packets owed to the guest. */
  private want = { request: false, response: false, creditUpdate: false, shutdown: 0, rst: false };
  /** SHUTDOWN flags the guest sent us. */
  peerShutdown = 0;
  /** SHUTDOWN flags we sent the guest. */
  private shutdownSent = 0;
  /** The host will send no more (EOF, or the socket closed). */
  private hostDone = false;
  private timer: ReturnType<typeof setTimeout> | undefined;

  constructor(
    /** Our end: src_port in our packets. */
    readonly hostPort: number,
    /** The guest's end. */
    readonly guestPort: number,
    state: "awaiting-guest" | "awaiting-host",
    private readonly owner: ConnectionOwner,
  ) {
    this.state = state;
    if (state === "awaiting-guest") this.want.request = true;
    this.startTimer(state === "awaiting-guest"
      ? `the guest did not answer the connection request in ${VSOCK_TIMEOUT_MS} ms`
      : `the host socket did not connect in ${VSOCK_TIMEOUT_MS} ms`);
  }

  get key(): string {
    return `${this.hostPort}/${this.guestPort}`;
  }

  /** How much the guest can take now: buf_alloc - (sent - its fwd_cnt). */
  get peerCredit(): number {
    const inFlight = u32(this.txCnt - this.peerFwdCnt);
    return inFlight > this.peerBufAlloc ? 0 : this.peerBufAlloc - inFlight;
  }

  /**
   * The credit numbers every guest packet carries. Returns a message if they are impossible: fwd_cnt
   * only moves forward, and never past the bytes we sent (the device resets the connection).
   */
  updatePeerCredit(bufAlloc: number, fwdCnt: number): string | undefined {
    if (u32(fwdCnt - this.peerFwdCnt) > u32(this.txCnt - this.peerFwdCnt)) {
      return `the guest's fwd_cnt ${fwdCnt} is not between its last one (${this.peerFwdCnt}) and the ${this.txCnt} bytes sent`;
    }
    if (fwdCnt !== this.peerFwdCnt || bufAlloc !== this.peerBufAlloc) this.creditRequested = false;
    this.peerBufAlloc = bufAlloc;
    this.peerFwdCnt = fwdCnt;
    if (this.hasDataForGuest()) this.owner.wake(this);
    return undefined;
  }

  // ---- packets from the guest ----

  /** The guest accepted our REQUEST. Returns false if it was not expected (the device resets us). */
  guestResponse(): boolean {
    if (this.state !== "awaiting-guest") return false;
    this.state = "established";
    this.stopTimer();
    // Firecracker's handshake: the host program learns the connection is up, and our port.
    this.queueToHost(new TextEncoder().encode(`OK ${this.hostPort}\n`), false);
    if (this.hasDataForGuest()) this.owner.wake(this);
    return true;
  }

  /** Payload from the guest. Returns a message if the guest broke the protocol (the device resets us). */
  guestData(data: Uint8Array): string | undefined {
    if (this.state !== "established") return `data in state ${this.state}`;
    if (this.peerShutdown & VIRTIO_VSOCK_SHUTDOWN_SEND) return "data after the guest's SHUTDOWN(SEND)";
    const outstanding = u32(this.rxCnt + data.byteLength - this.fwdCnt);
    if (outstanding > VSOCK_BUF_ALLOC) {
      return `the guest sent ${outstanding} bytes not yet forwarded, past the ${VSOCK_BUF_ALLOC}-byte credit it was given`;
    }
    this.rxCnt = u32(this.rxCnt + data.byteLength);
    // `data` is already a copy out of guest memory: ours to keep.
    this.queueToHost(data, true);
    return undefined;
  }

  guestShutdown(flags: number): void {
    this.peerShutdown |= flags & (VIRTIO_VSOCK_SHUTDOWN_RCV | VIRTIO_VSOCK_SHUTDOWN_SEND);
    if (this.peerShutdown === (VIRTIO_VSOCK_SHUTDOWN_RCV | VIRTIO_VSOCK_SHUTDOWN_SEND)) {
      // The last bytes must reach a host that may not be reading: not forever.
      this.startTimer(`the host did not take the guest's last bytes in ${VSOCK_TIMEOUT_MS} ms`);
    }
    if (this.peerShutdown & VIRTIO_VSOCK_SHUTDOWN_RCV) {
      // The guest reads no more: what the host sends from now on is discarded.
      this.fromHost = [];
      this.fromHostBytes = 0;
      this.socket?.resume();
    }
    this.flushToHost();
  }

  guestCreditRequest(): void {
    this.want.creditUpdate = true;
    this.owner.wake(this);
  }

  // ---- the host socket ----

  /** The host socket is connected (guest-initiated: we can answer the REQUEST). */
  hostConnected(socket: HostSocket): void {
    if (this.state !== "awaiting-host") {
      // The guest gave up (RST) while we were connecting.
      socket.terminate();
      return;
    }
    this.socket = socket;
    socket.data.conn = this;
    this.state = "established";
    this.stopTimer();
    this.want.response = true;
    this.owner.wake(this);
  }

  hostData(data: Uint8Array): void {
    if (this.hostDone || this.state === "closing" || this.state === "closed") return;
    if (this.peerShutdown & VIRTIO_VSOCK_SHUTDOWN_RCV) return;
    this.fromHost.push(data.slice());
    this.fromHostBytes += data.byteLength;
    // Backpressure: the host waits (its writes block) until the guest has taken some.
    if (this.fromHostBytes >= VSOCK_HOST_BUF_LIMIT) this.socket?.pause();
    if (this.hasDataForGuest()) this.owner.wake(this);
  }

  /** The host socket can take more. */
  hostDrain(): void {
    this.flushToHost();
  }

  /** The host half-closed: it sends no more. The guest hears SHUTDOWN(SEND) after the last byte. */
  hostEnd(): void {
    if (this.hostDone || this.state === "closing" || this.state === "closed") return;
    this.hostDone = true;
    if (this.state === "awaiting-guest") return this.reset("the host closed before the guest accepted");
    this.want.shutdown |= VIRTIO_VSOCK_SHUTDOWN_SEND;
    this.owner.wake(this);
  }

  /** The host socket is gone: SHUTDOWN(RCV|SEND) to the guest after the last byte, then wait for its RST. */
  hostClosed(): void {
    this.socket = undefined;
    this.toHost = [];
    if (this.state === "closed" || this.state === "closing") return;
    if (this.state !== "established") return this.reset("the host socket closed during the handshake");
    this.hostDone = true;
    this.want.shutdown |= VIRTIO_VSOCK_SHUTDOWN_RCV | VIRTIO_VSOCK_SHUTDOWN_SEND;
    this.owner.wake(this);
  }

  // ---- packets to the guest ----

  hasDataForGuest(): boolean {
    return this.state === "established" && this.fromHostBytes > 0 && this.peerCredit > 0;
  }

  /** Something to send now? (The device keeps the connection on its receive list while this holds.) */
  wantsRx(): boolean {
    const w = this.want;
    if (w.rst || w.request || w.response || w.creditUpdate) return true;
    if (this.state !== "established") return false;
    if (this.fromHostBytes > 0) return this.peerCredit > 0 || !this.creditRequested;
    return (w.shutdown & ~this.shutdownSent) !== 0;
  }

  /** The next packet for the guest, with at most `room` payload bytes. Updates the credit bookkeeping. */
  nextPacket(room: number): OutPacket | undefined {
    const w = this.want;
    let p: OutPacket | undefined;
    if (w.rst) {
      w.rst = false;
      this.close();
      p = { op: VIRTIO_VSOCK_OP_RST, flags: 0 };
    } else if (w.request) {
      w.request = false;
      p = { op: VIRTIO_VSOCK_OP_REQUEST, flags: 0 };
    } else if (w.response) {
      w.response = false;
      p = { op: VIRTIO_VSOCK_OP_RESPONSE, flags: 0 };
    } else if (this.state === "established" && this.fromHostBytes > 0 && this.peerCredit > 0 && room > 0) {
      p = { op: VIRTIO_VSOCK_OP_RW, flags: 0, data: this.takeFromHost(Math.min(room, this.peerCredit, VSOCK_MAX_PKT_DATA)) };
    } else if (this.state === "established" && this.fromHostBytes > 0 && this.peerCredit === 0 && !this.creditRequested) {
      // Data waiting, no credit: ask once; any packet with a new fwd_cnt lets us go on.
      this.creditRequested = true;
      p = { op: VIRTIO_VSOCK_OP_CREDIT_REQUEST, flags: 0 };
    } else if (this.state === "established" && this.fromHostBytes === 0 && w.shutdown & ~this.shutdownSent) {
      // Only once every byte from the host has gone to the guest.
      this.shutdownSent |= w.shutdown;
      p = { op: VIRTIO_VSOCK_OP_SHUTDOWN, flags: this.shutdownSent };
      if (this.shutdownSent === (VIRTIO_VSOCK_SHUTDOWN_RCV | VIRTIO_VSOCK_SHUTDOWN_SEND)) {
        this.state = "closing";
        this.startTimer(`the guest did not finish closing in ${VSOCK_TIMEOUT_MS} ms`);
      }
    } else if (w.creditUpdate) {
      p = { op: VIRTIO_VSOCK_OP_CREDIT_UPDATE, flags: 0 };
    }
    // Every packet carries fwd_cnt: a separate CREDIT_UPDATE is no longer owed.
    if (p) {
      w.creditUpdate = false;
      this.fwdCntSent = this.fwdCnt;
    }
    return p;
  }

  private takeFromHost(max: number): Uint8Array {
    const n = Math.min(max, this.fromHostBytes);
    const out = new Uint8Array(n);
    let at = 0;
    while (at < n) {
      const chunk = this.fromHost[0]!;
      const take = Math.min(chunk.byteLength, n - at);
      out.set(chunk.subarray(0, take), at);
      at += take;
      if (take === chunk.byteLength) this.fromHost.shift();
      else this.fromHost[0] = chunk.subarray(take);
    }
    this.fromHostBytes -= n;
    this.txCnt = u32(this.txCnt + n);
    if (this.fromHostBytes < VSOCK_HOST_BUF_LIMIT / 2) this.socket?.resume();
    return out;
  }

  // ---- writing to the host ----

  private queueToHost(bytes: Uint8Array, counted: boolean): void {
    this.toHost.push({ bytes, counted });
    this.flushToHost();
  }

  /** Write what the host socket takes; count guest payload as forwarded; finish a pending shutdown. */
  private flushToHost(): void {
    const s = this.socket;
    if (s) {
      while (this.toHost.length > 0) {
        const head = this.toHost[0]!;
        const n = s.write(head.bytes);
        if (n < 0) return this.hostClosed();
        if (head.counted) this.fwdCnt = u32(this.fwdCnt + n);
        if (n < head.bytes.byteLength) {
          head.bytes = head.bytes.subarray(n);
          break;
        }
        this.toHost.shift();
      }
    }
    // The guest's view of our free space: its credit, from the fwd_cnt we last told it.
    const guestView = VSOCK_BUF_ALLOC - u32(this.rxCnt - this.fwdCntSent);
    if (guestView < VSOCK_CREDIT_UPDATE_THRESHOLD && this.fwdCnt !== this.fwdCntSent) {
      this.want.creditUpdate = true;
      this.owner.wake(this);
    }
    if (this.toHost.length > 0 || this.state !== "established") return;
    const shut = this.peerShutdown;
    if (shut & VIRTIO_VSOCK_SHUTDOWN_SEND) s?.shutdown();
    if (shut === (VIRTIO_VSOCK_SHUTDOWN_RCV | VIRTIO_VSOCK_SHUTDOWN_SEND)) {
      // Both ways shut by the guest, everything delivered: end with RST (what Linux waits for).
      s?.end();
      this.want.rst = true;
      this.owner.wake(this);
    }
  }

  // ---- ending ----

  /** Reset: tell the guest (RST) and close the host socket. */
  reset(why: string): void {
    if (this.state === "closed") return;
    this.owner.log(`connection ${this.key}: ${why}; reset`);
    this.want = { request: false, response: false, creditUpdate: false, shutdown: 0, rst: true };
    this.fromHost = [];
    this.fromHostBytes = 0;
    this.toHost = [];
    this.state = "closing";
    this.dropSocket();
    this.owner.wake(this);
  }

  /** The guest sent RST, or the connection is done: close the host socket and forget the connection. */
  close(): void {
    if (this.state === "closed") return;
    this.state = "closed";
    this.stopTimer();
    this.dropSocket();
    this.owner.remove(this);
  }

  private dropSocket(): void {
    const s = this.socket;
    this.socket = undefined;
    if (s) {
      s.data.conn = undefined;
      s.terminate();
    }
  }

  private startTimer(why: string): void {
    this.stopTimer();
    this.timer = setTimeout(() => this.reset(why), VSOCK_TIMEOUT_MS);
    this.timer.unref?.();
  }

  private stopTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }
}
