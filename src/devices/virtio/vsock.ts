// virtio-vsock (virtio 1.2 §5.10): stream sockets between the guest and the host, with Firecracker's host
// side: Unix sockets (Firecracker docs/vsock.md).
//
// The guest has a context ID (guest_cid in configuration space, 3 or more); the host is CID 2. Three
// queues: rx (0) where the driver posts empty buffers for packets to the guest, tx (1) where it posts
// packets for the host, and event (2) for transport events (kindling sends none; the buffers wait there).
// Every packet starts with a 44-byte struct virtio_vsock_hdr: addresses, the payload length, the operation
// (REQUEST, RESPONSE, RST, SHUTDOWN, RW, CREDIT_UPDATE, CREDIT_REQUEST) and the sender's credit.
//
// The host side, as in Firecracker:
//   - host-initiated: a program connects to the Unix socket at `uds_path` and writes `CONNECT <port>\n`.
//     The device sends the guest a REQUEST from host port P (a local port it picks, 2^30 onwards) to
//     <port>; when the guest answers RESPONSE the program reads `OK <P>\n` and from then on the socket is
//     a byte stream with the guest's listening socket.
//   - guest-initiated: a guest connecting to CID 2 port P is connected to the Unix socket
//     `<uds_path>_<P>`, where a host program listens; if nothing is there the guest gets RST.
// The per-connection state, buffers and credit are in vsock-connection.ts.
//
// Everything in a packet is guest-controlled. A packet too short for its header, with a length beyond
// its buffers or beyond VSOCK_MAX_PKT_DATA, from another CID than the guest's, or of an unknown type or
// operation is refused: with RST where the protocol has one (Linux does the same), dropped otherwise. The
// guest can never make the device buffer more than its credit per connection, hold more than
// VSOCK_MAX_CONNECTIONS connections, or queue more than VSOCK_MAX_PENDING_RST answers.

import { checkKind, DeviceStateError, fromBase64, int, toBase64 } from "../state.ts";
import { unlinkSync } from "node:fs";
import { StructView } from "../../kvm/struct.ts";
import { rateLimitedLog } from "../../rate-limit.ts";
import { readConfigBytes, type VirtioContext, type VirtioDevice, type VirtioDeviceState } from "./device.ts";
import type { DescriptorChain, Virtqueue } from "./queue.ts";
import {
  virtio_vsock_config, virtio_vsock_hdr, VIRTIO_ID_VSOCK, VIRTIO_VSOCK_OP_CREDIT_REQUEST, VIRTIO_VSOCK_OP_CREDIT_UPDATE,
  VIRTIO_VSOCK_OP_REQUEST, VIRTIO_VSOCK_OP_RESPONSE, VIRTIO_VSOCK_OP_RST, VIRTIO_VSOCK_OP_RW, VIRTIO_VSOCK_OP_SHUTDOWN,
  VIRTIO_VSOCK_TYPE_STREAM, VMADDR_CID_HOST, virtio_vsock_event, VIRTIO_VSOCK_EVENT_TRANSPORT_RESET,
} from "./uapi.ts";
import {
  VSOCK_BUF_ALLOC, VSOCK_MAX_PKT_DATA, VsockConnection, type ConnectionOwner, type HostSocket, type HostSocketData,
  type OutPacket,
} from "./vsock-connection.ts";

export const VSOCK_RX_QUEUE = 0;
export const VSOCK_TX_QUEUE = 1;
export const VSOCK_EVENT_QUEUE = 2;
export const VSOCK_HDR_SIZE = virtio_vsock_hdr.size;
/** Connections at once; more are refused (RST to the guest, closed for the host). */
export const VSOCK_MAX_CONNECTIONS = 1024;
/** RSTs owed to the guest for packets that match no connection; more are dropped. */
export const VSOCK_MAX_PENDING_RST = 256;
/** Host-initiated connections get local ports from here up (Firecracker does the same). */
const FIRST_LOCAL_PORT = 1 << 30;
/** The longest `CONNECT <port>\n` line a host program may send. */
const CONNECT_LINE_MAX = 32;

export interface VirtioVsockOptions {
  /** The guest's context ID: 3 to 2^32 - 2 (0-2 are reserved, 2^32 - 1 is VMADDR_CID_ANY). */
  guestCid: number;
  /** The host-side Unix socket; created (it must not exist) and removed on close. */
  udsPath: string;
  queueSize?: number;
  log?: (message: string) => void;
}

export interface VsockCounters {
  connectionsOpened: number;
  /** Payload bytes guest -> host and host -> guest. */
  txBytes: number;
  rxBytes: number;
  rstSent: number;
  /** Packets from the guest that were malformed and dropped. */
  dropped: number;
}

/**
 * The guest's CID (configuration space), the next host-side port to hand out, the RST packets queued for
 * the guest (pending work: struct virtio_vsock_hdr each, base64) and the counters. Connections are host
 * sockets, which are wiring and cannot be carried across: the description lists none (`connections` counts
 * them), and a rebuilt device starts with none, as a restored Firecracker vsock does.
 */
export type VirtioVsockState = { kind: "virtio-vsock"; guestCid: number; nextLocalPort: number; pendingRst: string[]; connections: number; counters: VsockCounters };

export class VirtioVsock implements VirtioDevice, ConnectionOwner {
  readonly name = "virtio-vsock";
  readonly deviceId = VIRTIO_ID_VSOCK;
  /** No feature bits of its own: stream sockets only (no VIRTIO_VSOCK_F_SEQPACKET). */
  readonly deviceFeatures = 0n;
  readonly queueMaxSizes: readonly number[];
  readonly guestCid: number;
  readonly udsPath: string;
  readonly counters: VsockCounters = { connectionsOpened: 0, txBytes: 0, rxBytes: 0, rstSent: 0, dropped: 0 };
  private readonly config = new StructView(virtio_vsock_config);
  private readonly logFn: (message: string) => void;
  private readonly listener: ReturnType<typeof Bun.listen<HostSocketData>>;
  /** Connections by `${hostPort}/${guestPort}`. */
  readonly connections = new Map<string, VsockConnection>();
  /** Connections with something for the guest, in the order they asked (round robin). */
  private readonly rxReady = new Set<VsockConnection>();
  /** RST answers to packets that belong to no connection (headers ready to send). */
  private readonly pendingRst: StructView[] = [];
  private nextLocalPort = FIRST_LOCAL_PORT;
  private ctx: VirtioContext | undefined;
  private rx: Virtqueue | undefined;
  private tx: Virtqueue | undefined;
  private closed = false;
  private fillScheduled = false;
  private nextRoundScheduled = false;

  constructor(opts: VirtioVsockOptions) {
    const cid = opts.guestCid;
    if (!Number.isInteger(cid) || cid < 3 || cid > 0xfffffffe) {
      throw new Error(`vsock: guest_cid ${cid} must be an integer from 3 to ${0xfffffffe} (0-2 are reserved, ${0xffffffff} is VMADDR_CID_ANY)`);
    }
    if (!opts.udsPath) throw new Error("vsock: uds_path is empty");
    this.guestCid = cid;
    this.udsPath = opts.udsPath;
    this.logFn = rateLimitedLog(opts.log ?? (() => {}));
    const q = opts.queueSize ?? 256;
    this.queueMaxSizes = [q, q, q];
    this.config.set("guest_cid", cid);
    // umask 0177 while the socket is bound: it is born 0600 (only the VMM's user may connect to the guest),
    // whatever the process umask is, with no moment of wider access.
    const umask = process.umask(0o177);
    try {
      this.listener = Bun.listen<HostSocketData>({
        unix: opts.udsPath,
        allowHalfOpen: true,
        socket: {
          open: (s) => {
            s.data = { line: [] };
          },
          data: (s, d) => this.onHostData(s, d),
          drain: (s) => this.afterHostEvent(() => s.data.conn?.hostDrain()),
          end: (s) => this.afterHostEvent(() => s.data.conn?.hostEnd()),
          close: (s) => this.afterHostEvent(() => s.data.conn?.hostClosed()),
          error: (s, e) => this.log(`host socket error on ${s.data.conn?.key ?? "a new connection"}: ${e.message}`),
        },
      });
    } catch (e) {
      throw new Error(`vsock: cannot listen on ${opts.udsPath}: ${(e as Error).message} (remove a stale socket file first)`);
    } finally {
      process.umask(umask);
    }
    // Listening alone does not keep the VMM process alive; close() stops it.
    this.listener.unref();
  }

  // ---- VirtioDevice ----

  readConfig(offset: number, data: Uint8Array): void {
    readConfigBytes(this.config.bytes, offset, data);
  }

  writeConfig(offset: number, _data: Uint8Array): void {
    this.log(`write to read-only config offset ${offset} ignored`);
  }

  activate(ctx: VirtioContext): void {
    const rx = ctx.queues[VSOCK_RX_QUEUE];
    const tx = ctx.queues[VSOCK_TX_QUEUE];
    if (!rx || !tx) throw new Error(`queue ${!rx ? "0 (rx)" : "1 (tx)"} is not ready`);
    this.ctx = ctx;
    this.rx = rx;
    this.tx = tx;
    // Host programs may have connected before the driver was ready: their REQUESTs go out once it runs.
    if (this.connections.size > 0) this.scheduleFill();
  }

  describe(): VirtioVsockState {
    return {
      kind: "virtio-vsock", guestCid: this.guestCid, nextLocalPort: this.nextLocalPort, pendingRst: this.pendingRst.map((h) => toBase64(h.bytes)),
      connections: this.connections.size, counters: { ...this.counters },
    };
  }

  restore(s: VirtioDeviceState): void {
    const D = this.name;
    checkKind(D, s, "virtio-vsock");
    if (s.guestCid !== this.guestCid) throw new DeviceStateError(D, `guestCid: ${JSON.stringify(s.guestCid)}, but this device has CID ${this.guestCid}`);
    const nextLocalPort = int(D, "nextLocalPort", s.nextLocalPort, 0, 0xffffffff);
    if (!Array.isArray(s.pendingRst) || s.pendingRst.length > VSOCK_MAX_PENDING_RST) throw new DeviceStateError(D, `pendingRst: not a list of at most ${VSOCK_MAX_PENDING_RST}`);
    const rst = s.pendingRst.map((h, i) => {
      const bytes = fromBase64(D, `pendingRst[${i}]`, h, virtio_vsock_hdr.size);
      if (bytes.byteLength !== virtio_vsock_hdr.size) throw new DeviceStateError(D, `pendingRst[${i}]: ${bytes.byteLength} bytes, expected ${virtio_vsock_hdr.size}`);
      return new StructView(virtio_vsock_hdr, bytes);
    });
    int(D, "connections", s.connections, 0, Number.MAX_SAFE_INTEGER);
    const c = s.counters as Partial<VsockCounters> | undefined;
    const counters = Object.fromEntries(Object.keys(this.counters).map((k) => [k, int(D, `counters.${k}`, c?.[k as keyof VsockCounters], 0, Number.MAX_SAFE_INTEGER)]));
    this.nextLocalPort = nextLocalPort;
    this.pendingRst.splice(0, this.pendingRst.length, ...rst);
    Object.assign(this.counters, counters);
    if (rst.length > 0 && this.ctx) this.scheduleFill();
  }

  /**
   * VIRTIO_VSOCK_EVENT_TRANSPORT_RESET on the event queue (virtio 1.2 §5.10.6.6): the guest driver drops
   * every connection and re-reads its CID. Firecracker sends it when it takes a snapshot, since host
   * sockets cannot be carried into the restored VM; the host side of each connection is closed here too.
   * Returns false when the driver is not running or left no event buffer.
   */
  sendTransportReset(): boolean {
    const ctx = this.ctx;
    const eventq = ctx?.queues[VSOCK_EVENT_QUEUE];
    if (!ctx || !eventq || !ctx.running()) return false;
    const chain = eventq.pop();
    if (!chain) return false;
    const event = new StructView(virtio_vsock_event).set("id", VIRTIO_VSOCK_EVENT_TRANSPORT_RESET);
    let written = 0;
    try {
      chain.write(0, event.bytes);
      written = event.bytes.byteLength;
    } finally {
      eventq.push(chain, written);
    }
    for (const c of [...this.connections.values()]) c.close();
    ctx.signalUsed();
    return written > 0;
  }

  reset(): void {
    const wasRunning = this.ctx !== undefined;
    this.ctx = undefined;
    this.rx = undefined;
    this.tx = undefined;
    this.pendingRst.length = 0;
    // The guest's sockets are gone with its driver: close every host side. (Before the first activation
    // there were none; a host program that connected early keeps waiting for the driver, within its timeout.)
    if (!wasRunning && !this.closed) return;
    for (const c of [...this.connections.values()]) c.close();
    this.rxReady.clear();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.reset();
    this.listener.stop(true);
    try {
      unlinkSync(this.udsPath);
    } catch {
      // Already gone.
    }
  }

  process(queueIndex: number): boolean {
    let more = false;
    if (queueIndex === VSOCK_TX_QUEUE) more = this.processTx();
    // Whatever the notify, answers may be waiting: RESPONSE, RST, data, credit.
    this.fillRx();
    return more;
  }

  // ---- ConnectionOwner ----

  wake(conn: VsockConnection): void {
    this.rxReady.add(conn);
    this.scheduleFill();
  }

  remove(conn: VsockConnection): void {
    this.connections.delete(conn.key);
    this.rxReady.delete(conn);
  }

  /** Rate-limited (src/rate-limit.ts): a guest cannot flood the log. */
  log(message: string): void {
    this.logFn(`${this.name}: ${message}`);
  }

  // ---- guest -> host (tx queue) ----

  private processTx(): boolean {
    const q = this.tx;
    if (!q) return false;
    for (let n = 0; n < q.size; n++) {
      const chain = q.pop();
      if (!chain) return false;
      this.handleGuestPacket(chain);
      q.push(chain, 0);
    }
    return q.hasAvailable();
  }

  private handleGuestPacket(chain: DescriptorChain): void {
    if (chain.readableLength < VSOCK_HDR_SIZE) return this.drop(`packet ${chain.head}: ${chain.readableLength} bytes, shorter than the ${VSOCK_HDR_SIZE}-byte header`);
    // One copy of the header: the guest cannot change it after the checks.
    const hdr = new StructView(virtio_vsock_hdr, chain.read(0, VSOCK_HDR_SIZE));
    const srcCid = hdr.getBig("src_cid");
    const dstCid = hdr.getBig("dst_cid");
    const len = hdr.get("len");
    const op = hdr.get("op");
    if (srcCid !== BigInt(this.guestCid)) return this.drop(`packet from CID ${srcCid}, the guest is CID ${this.guestCid}`);
    if (len > VSOCK_MAX_PKT_DATA || len > chain.readableLength - VSOCK_HDR_SIZE) {
      this.drop(`packet with len ${len}: its buffers hold ${chain.readableLength - VSOCK_HDR_SIZE} bytes, the limit is ${VSOCK_MAX_PKT_DATA}`);
      // A stream missing bytes is worse than a reset one.
      this.connections.get(key(hdr))?.reset("malformed packet");
      return;
    }
    if (op === VIRTIO_VSOCK_OP_RST) {
      // Never answered, even when unknown (two sides answering RST with RST would never stop).
      this.connections.get(key(hdr))?.close();
      return;
    }
    if (dstCid !== BigInt(VMADDR_CID_HOST)) return this.answerRst(hdr, `packet for CID ${dstCid}: only the host (CID 2) is reachable`);
    if (hdr.get("type") !== VIRTIO_VSOCK_TYPE_STREAM) return this.answerRst(hdr, `socket type ${hdr.get("type")} is not a stream`);

    const conn = this.connections.get(key(hdr));
    if (op === VIRTIO_VSOCK_OP_REQUEST) {
      if (conn) return conn.reset("a second REQUEST for an open connection");
      return this.connectToHost(hdr);
    }
    if (!conn) return this.answerRst(hdr, `op ${op} for no connection (${key(hdr)})`);
    const abuse = conn.updatePeerCredit(hdr.get("buf_alloc"), hdr.get("fwd_cnt"));
    if (abuse) return conn.reset(abuse);
    switch (op) {
      case VIRTIO_VSOCK_OP_RESPONSE:
        if (!conn.guestResponse()) conn.reset(`RESPONSE in state ${conn.state}`);
        return;
      case VIRTIO_VSOCK_OP_RW: {
        if (conn.state === "closing") return;
        const why = conn.guestData(chain.read(VSOCK_HDR_SIZE, len));
        if (why) return conn.reset(why);
        this.counters.txBytes += len;
        return;
      }
      case VIRTIO_VSOCK_OP_SHUTDOWN:
        if (conn.state === "established") conn.guestShutdown(hdr.get("flags"));
        else if (conn.state !== "closing") conn.reset(`SHUTDOWN in state ${conn.state}`);
        return;
      case VIRTIO_VSOCK_OP_CREDIT_UPDATE:
        // The new credit is already in.
        return;
      case VIRTIO_VSOCK_OP_CREDIT_REQUEST:
        return conn.guestCreditRequest();
      default:
        return conn.reset(`unknown op ${op}`);
    }
  }

  /** A guest REQUEST to host port P: connect to `<uds_path>_<P>`; RESPONSE once connected, RST if not. */
  private connectToHost(hdr: StructView): void {
    const hostPort = hdr.get("dst_port");
    if (this.connections.size >= VSOCK_MAX_CONNECTIONS) return this.answerRst(hdr, `${VSOCK_MAX_CONNECTIONS} connections already`);
    const conn = new VsockConnection(hostPort, hdr.get("src_port"), "awaiting-host", this);
    // Nothing sent yet: our count starts where the guest's fwd_cnt does (0 from Linux).
    conn.peerBufAlloc = hdr.get("buf_alloc");
    conn.peerFwdCnt = conn.txCnt = hdr.get("fwd_cnt");
    this.connections.set(conn.key, conn);
    this.counters.connectionsOpened++;
    const path = `${this.udsPath}_${hostPort}`;
    Bun.connect<HostSocketData>({
      unix: path,
      allowHalfOpen: true,
      data: { conn },
      socket: {
        open: (s) => this.afterHostEvent(() => conn.hostConnected(s)),
        data: (s, d) => this.onHostData(s, d),
        drain: (s) => this.afterHostEvent(() => s.data.conn?.hostDrain()),
        end: (s) => this.afterHostEvent(() => s.data.conn?.hostEnd()),
        close: (s) => this.afterHostEvent(() => s.data.conn?.hostClosed()),
        error: (s, e) => this.log(`host socket error on ${s.data.conn?.key}: ${e.message}`),
        connectError: (_s, e) => this.afterHostEvent(() => conn.reset(`nothing accepts connections at ${path}: ${e.message}`)),
      },
    }).catch(() => {
      // Reported through connectError.
    });
  }

  // ---- host -> guest ----

  /** Bytes from a host socket: the CONNECT line of a new connection, or stream data. */
  private onHostData(s: HostSocket, d: Uint8Array): void {
    this.afterHostEvent(() => {
      const conn = s.data.conn;
      if (conn) return conn.hostData(d);
      const line = s.data.line;
      if (!line) return;
      for (let i = 0; i < d.byteLength; i++) {
        if (d[i] !== 0x0a) {
          line.push(d[i]!);
          if (line.length > CONNECT_LINE_MAX) return this.refuseHost(s, "no newline in the first 32 bytes");
          continue;
        }
        s.data.line = undefined;
        const text = new TextDecoder().decode(Uint8Array.from(line));
        const m = /^CONNECT (\d{1,10})$/.exec(text.trimEnd());
        const port = m ? Number(m[1]) : NaN;
        if (!(port <= 0xffffffff)) return this.refuseHost(s, `expected "CONNECT <port>", got ${JSON.stringify(text)}`);
        const c = this.connectToGuest(s, port);
        // Bytes after the line are the start of the stream.
        if (c && i + 1 < d.byteLength) c.hostData(d.subarray(i + 1));
        return;
      }
    });
  }

  /** A host program asked for guest port `port`: REQUEST it from a fresh local port. */
  private connectToGuest(s: HostSocket, port: number): VsockConnection | undefined {
    if (this.connections.size >= VSOCK_MAX_CONNECTIONS) {
      this.refuseHost(s, `${VSOCK_MAX_CONNECTIONS} connections already`);
      return undefined;
    }
    let hostPort = this.nextLocalPort;
    while (this.connections.has(`${hostPort}/${port}`)) hostPort = hostPort >= 0xfffffffe ? FIRST_LOCAL_PORT : hostPort + 1;
    this.nextLocalPort = hostPort >= 0xfffffffe ? FIRST_LOCAL_PORT : hostPort + 1;
    const conn = new VsockConnection(hostPort, port, "awaiting-guest", this);
    conn.socket = s;
    s.data.conn = conn;
    this.connections.set(conn.key, conn);
    this.counters.connectionsOpened++;
    this.wake(conn);
    return conn;
  }

  private refuseHost(s: HostSocket, why: string): void {
    this.log(`host connection refused: ${why}`);
    s.data.line = undefined;
    s.end();
  }

  /** Run a host socket event (never letting it throw into Bun); what it produced for the guest goes out through scheduleFill(). */
  private afterHostEvent(fn: () => void): void {
    try {
      fn();
    } catch (e) {
      this.log(`host event: ${(e as Error).message}`);
    }
  }

  /**
   * Fill the receive queue and interrupt the guest soon, after the current event (a host socket event, a
   * timer). Inside a queue notify, process() fills at once and the transport interrupts.
   */
  private scheduleFill(): void {
    if (this.fillScheduled) return;
    this.fillScheduled = true;
    queueMicrotask(() => {
      this.fillScheduled = false;
      if (this.fillRx() > 0) this.ctx?.signalUsed();
    });
  }

  private answerRst(to: StructView, why: string): void {
    this.log(`${why}; answered with RST`);
    if (this.pendingRst.length >= VSOCK_MAX_PENDING_RST) return;
    // From where the packet was going, back to where it came from.
    this.pendingRst.push(new StructView(virtio_vsock_hdr).assign({
      src_cid: to.getBig("dst_cid"), dst_cid: this.guestCid, src_port: to.get("dst_port"), dst_port: to.get("src_port"),
      len: 0, type: VIRTIO_VSOCK_TYPE_STREAM, op: VIRTIO_VSOCK_OP_RST, flags: 0, buf_alloc: 0, fwd_cnt: 0,
    }));
  }

  private drop(why: string): void {
    this.counters.dropped++;
    this.log(`${why}; dropped`);
  }

  /**
   * Fill receive buffers with waiting packets: RST answers first, then connections in turn. Returns how many.
   * At most the queue's size of chains per round, like Virtqueue.serve: a guest that keeps the ring full of
   * buffers too short for a header would otherwise keep this loop (and the main thread) going forever. When
   * the round ends with work left and buffers still posted, the next round runs on the next event-loop turn.
   */
  private fillRx(): number {
    const q = this.rx;
    if (!q || !this.ctx?.running()) return 0;
    let sent = 0;
    let popped = 0;
    while (this.pendingRst.length > 0 || this.rxReady.size > 0) {
      if (popped === q.size) {
        this.scheduleNextRound();
        break;
      }
      const chain = q.pop();
      if (!chain) break;
      popped++;
      if (chain.writableLength < VSOCK_HDR_SIZE) {
        // The driver cannot be sent anything in it; give it back empty.
        this.log(`receive buffer ${chain.head} has ${chain.writableLength} bytes, less than a header`);
        q.push(chain, 0);
        continue;
      }
      const packet = this.nextPacket(chain.writableLength - VSOCK_HDR_SIZE);
      if (!packet) {
        q.undoPop();
        break;
      }
      chain.write(0, packet.bytes);
      if (packet.data) chain.write(VSOCK_HDR_SIZE, packet.data);
      q.push(chain, VSOCK_HDR_SIZE + (packet.data?.byteLength ?? 0));
      sent++;
    }
    return sent;
  }

  /** Another fillRx round after the event loop has run (setImmediate, not a microtask: those run first). */
  private scheduleNextRound(): void {
    if (this.nextRoundScheduled) return;
    this.nextRoundScheduled = true;
    setImmediate(() => {
      this.nextRoundScheduled = false;
      if (this.fillRx() > 0) this.ctx?.signalUsed();
    });
  }

  private nextPacket(room: number): { bytes: Uint8Array; data?: Uint8Array } | undefined {
    const rst = this.pendingRst.shift();
    if (rst) {
      this.counters.rstSent++;
      return { bytes: rst.bytes };
    }
    // A copy: connections put themselves back at the end while we go.
    for (const conn of [...this.rxReady]) {
      this.rxReady.delete(conn);
      const p = conn.nextPacket(room);
      // Still something to send: to the back of the line, so connections take turns.
      if (conn.state !== "closed" && conn.wantsRx()) this.rxReady.add(conn);
      if (p) return { bytes: this.header(conn, p), data: p.data };
    }
    return undefined;
  }

  private header(conn: VsockConnection, p: OutPacket): Uint8Array {
    const len = p.data?.byteLength ?? 0;
    this.counters.rxBytes += len;
    if (p.op === VIRTIO_VSOCK_OP_RST) this.counters.rstSent++;
    return new StructView(virtio_vsock_hdr).assign({
      src_cid: VMADDR_CID_HOST, dst_cid: this.guestCid, src_port: conn.hostPort, dst_port: conn.guestPort,
      len, type: VIRTIO_VSOCK_TYPE_STREAM, op: p.op, flags: p.flags, buf_alloc: VSOCK_BUF_ALLOC, fwd_cnt: conn.fwdCnt,
    }).bytes;
  }
}

/** A guest packet's connection: our port is its dst_port, the guest's its src_port. */
function key(hdr: StructView): string {
  return `${hdr.get("dst_port")}/${hdr.get("src_port")}`;
}
