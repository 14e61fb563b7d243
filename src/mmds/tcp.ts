// A minimal TCP server for MMDS, in the spirit of Firecracker's "dumbo" (src/vmm/src/dumbo/tcp): passive
// open only, one port, HTTP request in, response out. It can be this small because its only peer is the
// guest's own stack, over a virtio queue: segments arrive in order or not at all.
//
// One connection at a time. A SYN opens it (a SYN from another peer replaces it, and the old peer gets a
// RST); a segment for no connection, or for another port, gets a RST (RFC 9293 §3.10.7.1). The states:
//   SYN-RECEIVED  we answered SYN-ACK; the ACK of it (ack = ISS+1) makes the connection ESTABLISHED, any
//                 other ACK resets it, a repeated SYN gets the SYN-ACK again.
//   ESTABLISHED   in-order data goes into a receive buffer of RCV_BUF_MAX bytes (the window we advertise is
//                 what is left of it); when it holds a whole request (up to a blank line) the request is
//                 answered and the response sent in MSS-sized segments within the guest's window; the next
//                 request is taken once the whole response is acknowledged. A buffer full without a whole
//                 request resets the connection (requests are small: Firecracker's RCV_BUF_MAX_SIZE).
//   closing       after the guest's FIN, once the response is acknowledged, our FIN; when it is ACKed the
//                 connection is gone (no TIME-WAIT: a late segment just gets a RST).
// Out-of-order and duplicate data are not kept, only acknowledged. Lost segments: a duplicate ACK, a
// retransmitted request or the retransmission timer (RTO_MS, at most RTO_COUNT_MAX times, then a RST)
// sends everything unacknowledged again (go-back-N). No congestion control, no options but MSS, no
// window scaling (we do not offer it, so neither side uses it: RFC 7323 §2.2).

import { TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, type Ipv4, type TcpOut, type TcpSegment } from "./frames.ts";

/** One plus the largest request accepted, as Firecracker's RCV_BUF_MAX_SIZE. */
export const RCV_BUF_MAX = 2500;
/** RFC 9293 §3.7.1: the MSS assumed when the SYN has no MSS option. */
export const MSS_DEFAULT = 536;
/** The largest segment we send, whatever the guest's MSS (an Ethernet MTU of 1500). */
export const MSS_MAX = 1460;
/** Retransmission timeout, and how many in a row before giving up. */
export const RTO_MS = 300;
export const RTO_COUNT_MAX = 15;
/** At most this many MSS of response in flight: bounds what waits in the device's receive queue. */
const MAX_SEGMENTS_IN_FLIGHT = 16;

/** Run `fn` after `ms`; returns a cancel function (setTimeout by default; tests move time by hand). */
export type Scheduler = (fn: () => void, ms: number) => () => void;

/** a - b as a signed 32-bit distance in sequence space (RFC 9293 §3.4: arithmetic modulo 2^32). */
const seqDiff = (a: number, b: number) => (a - b) | 0;
const seqAdd = (a: number, n: number) => (a + n) >>> 0;

const defaultScheduler: Scheduler = (fn, ms) => {
  const t = setTimeout(fn, ms);
  return () => clearTimeout(t);
};

export interface TcpServerOptions {
  port: number;
  /** A whole request's bytes in, the response's bytes out. */
  answer: (request: Uint8Array) => Uint8Array;
  /** Send a segment to the guest at `ip`. */
  emit: (ip: Ipv4, seg: TcpOut) => void;
  schedule?: Scheduler;
  /** A connection opened (true) or ended (false), for metrics. */
  onConnection?: (opened: boolean) => void;
}

/** Where a request ends: after "\n\n" or "\n\r\n" (the test Firecracker's endpoint uses), or -1. */
export function requestEnd(b: Uint8Array, len: number): number {
  for (let i = 0; i + 1 < len; i++) {
    if (b[i] !== 0x0a) continue;
    if (b[i + 1] === 0x0a) return i + 2;
    if (i + 3 <= len && b[i + 1] === 0x0d && b[i + 2] === 0x0a) return i + 3;
  }
  return -1;
}

class Connection {
  state: "syn-received" | "established" = "syn-received";
  readonly iss: number;
  /** Oldest unacknowledged sequence number; next to send; highest sent. */
  sndUna: number;
  sndNxt: number;
  sndMax: number;
  /** Right edge of the guest's receive window (ack + window of its last acceptable segment). */
  sndEdge: number;
  rcvNxt: number;
  readonly mss: number;
  readonly rx = new Uint8Array(RCV_BUF_MAX);
  rxLen = 0;
  /** Response bytes not yet acknowledged; txBase is the sequence number of tx[0]. */
  tx: Uint8Array = new Uint8Array(0);
  txBase: number;
  finReceived = false;
  /** We are to send FIN once tx is sent; finSeq is its sequence number once it has been. */
  closing = false;
  finSeq: number | undefined;
  rtoCount = 0;
  cancelRto: (() => void) | undefined;

  constructor(
    readonly ip: Ipv4,
    readonly port: number,
    readonly irs: number,
    window: number,
    mss: number | undefined,
  ) {
    this.iss = crypto.getRandomValues(new Uint32Array(1))[0]!;
    this.sndUna = this.iss;
    this.sndNxt = seqAdd(this.iss, 1);
    this.sndMax = this.sndNxt;
    this.txBase = this.sndNxt;
    this.sndEdge = seqAdd(this.sndNxt, window);
    this.rcvNxt = seqAdd(irs, 1);
    this.mss = Math.max(64, Math.min(mss ?? MSS_DEFAULT, MSS_MAX));
  }

  get window(): number {
    return RCV_BUF_MAX - this.rxLen;
  }
}

export class TcpServer {
  /** The connection, if any (for tests and metrics). */
  conn: Connection | undefined;
  readonly counters = { connections: 0, resetsSent: 0, retransmits: 0, segmentsIgnored: 0 };
  private readonly schedule: Scheduler;

  constructor(private readonly opts: TcpServerOptions) {
    this.schedule = opts.schedule ?? defaultScheduler;
  }

  /** A segment from the guest at `ip`. */
  receive(ip: Ipv4, seg: TcpSegment): void {
    const c = this.conn;
    const mine = c !== undefined && c.ip === ip && c.port === seg.srcPort;
    if (seg.dstPort !== this.opts.port) return this.resetFor(ip, seg);
    if ((seg.flags & (TCP_SYN | TCP_ACK | TCP_RST)) === TCP_SYN) {
      if (mine && c.state === "syn-received" && seg.seq === c.irs) return this.sendSynAck(c);
      // The old connection ends; its peer hears of it unless it is the one opening again (a RST for its old
      // numbers would only confuse the new connection's handshake).
      if (c) this.abort(c, !mine);
      return this.open(ip, seg);
    }
    if (!mine) return this.resetFor(ip, seg);
    if (seg.flags & TCP_RST) {
      // Only a RST at the sequence number we expect ends the connection (RFC 5961 §3.2, simplified).
      if (seg.seq === c.rcvNxt) this.drop(c);
      else this.counters.segmentsIgnored++;
      return;
    }
    if (seg.flags & TCP_SYN) return this.abort(c, true);
    if (!(seg.flags & TCP_ACK)) {
      this.counters.segmentsIgnored++;
      return;
    }
    if (c.state === "syn-received") {
      if (seg.ack !== c.sndNxt) {
        this.resetFor(ip, seg);
        return this.drop(c);
      }
      c.state = "established";
    }
    this.established(c, seg);
  }

  /** Stop timers (the interface is going away). */
  close(): void {
    if (this.conn) this.drop(this.conn);
  }

  // ---- the states ----

  private open(ip: Ipv4, syn: TcpSegment): void {
    // A SYN carrying data is answered as a plain SYN; the data comes again after the handshake.
    const c = new Connection(ip, syn.srcPort, syn.seq, syn.window, syn.mss);
    this.conn = c;
    this.counters.connections++;
    this.opts.onConnection?.(true);
    this.sendSynAck(c);
  }

  private sendSynAck(c: Connection): void {
    this.emit(c, { seq: c.iss, ack: c.rcvNxt, flags: TCP_SYN | TCP_ACK, mss: MSS_MAX });
    this.armRto(c);
  }

  private established(c: Connection, seg: TcpSegment): void {
    let ackNeeded = false;
    // 1. The acknowledgement.
    const acked = seqDiff(seg.ack, c.sndUna);
    if (acked > 0 && seqDiff(seg.ack, c.sndMax) <= 0) {
      c.sndUna = seg.ack;
      if (seqDiff(c.sndNxt, seg.ack) < 0) c.sndNxt = seg.ack;
      const n = Math.min(Math.max(0, seqDiff(seg.ack, c.txBase)), c.tx.byteLength);
      c.tx = c.tx.subarray(n);
      c.txBase = seqAdd(c.txBase, n);
      c.rtoCount = 0;
      c.sndEdge = seqAdd(seg.ack, seg.window);
    } else if (acked === 0) {
      const outstanding = seqDiff(c.sndMax, c.sndUna) > 0;
      const newEdge = seqAdd(seg.ack, seg.window);
      const duplicate = outstanding && seg.payload.byteLength === 0 && !(seg.flags & TCP_FIN) && newEdge === c.sndEdge;
      c.sndEdge = newEdge;
      // Unlike full TCP, the first duplicate ACK retransmits (as dumbo does): the path never reorders.
      if (duplicate) this.goBack(c);
    } else if (seqDiff(seg.ack, c.sndMax) > 0) {
      // Acknowledges what we never sent: answer with an ACK and ignore the segment (RFC 9293 §3.10.7.4).
      this.sendAck(c);
      return;
    }

    // 2. Data, in order only.
    const p = seg.payload;
    if (p.byteLength > 0) {
      ackNeeded = true;
      const off = seqDiff(c.rcvNxt, seg.seq);
      if (off < 0) {
        // Ahead of a gap (a lost segment): not kept; our ACK tells the guest where we are.
      } else if (off >= p.byteLength) {
        // All old: the guest did not see our ACK, perhaps not our response either.
        if (seqDiff(c.sndMax, c.sndUna) > 0) this.goBack(c);
      } else {
        const fresh = p.subarray(off, off + Math.min(p.byteLength - off, c.window));
        c.rx.set(fresh, c.rxLen);
        c.rxLen += fresh.byteLength;
        c.rcvNxt = seqAdd(c.rcvNxt, fresh.byteLength);
      }
    }
    // 3. FIN, once everything before it has arrived.
    if (seg.flags & TCP_FIN) {
      ackNeeded = true;
      if (!c.finReceived && seqAdd(seg.seq, p.byteLength) === c.rcvNxt) {
        c.finReceived = true;
        c.rcvNxt = seqAdd(c.rcvNxt, 1);
      }
    }
    // 4. A whole request, when the previous response is all acknowledged.
    if (c.tx.byteLength === 0 && c.finSeq === undefined) {
      const end = requestEnd(c.rx, c.rxLen);
      if (end > 0) {
        c.tx = this.opts.answer(c.rx.slice(0, end));
        c.txBase = c.sndNxt;
        c.rx.copyWithin(0, end, c.rxLen);
        c.rxLen -= end;
      } else if (c.rxLen === RCV_BUF_MAX) {
        // Over the largest request: reset, as Firecracker does.
        return this.abort(c, true);
      }
    }
    // 5. Closing: the guest is done sending and has all of our response.
    if (c.finReceived && c.tx.byteLength === 0) c.closing = true;

    if (!this.flush(c) && ackNeeded) this.sendAck(c);
    // 6. Both FINs acknowledged: done.
    if (c.finReceived && c.finSeq !== undefined && seqDiff(c.sndUna, c.finSeq) > 0) this.drop(c);
  }

  /** Send what the window allows: response data, then FIN. True if anything was sent. */
  private flush(c: Connection): boolean {
    if (c.state !== "established") return false;
    let sent = false;
    const txEnd = seqAdd(c.txBase, c.tx.byteLength);
    while (seqDiff(txEnd, c.sndNxt) > 0) {
      const room = Math.min(seqDiff(c.sndEdge, c.sndNxt), MAX_SEGMENTS_IN_FLIGHT * c.mss - seqDiff(c.sndNxt, c.sndUna));
      if (room <= 0) break;
      const len = Math.min(c.mss, seqDiff(txEnd, c.sndNxt), room);
      const from = seqDiff(c.sndNxt, c.txBase);
      const last = seqAdd(c.sndNxt, len) === txEnd;
      this.emit(c, { seq: c.sndNxt, ack: c.rcvNxt, flags: TCP_ACK | (last ? TCP_PSH : 0), payload: c.tx.subarray(from, from + len) });
      c.sndNxt = seqAdd(c.sndNxt, len);
      sent = true;
    }
    if (c.closing && c.sndNxt === txEnd && (c.finSeq === undefined || c.sndNxt === c.finSeq)) {
      c.finSeq = c.sndNxt;
      this.emit(c, { seq: c.sndNxt, ack: c.rcvNxt, flags: TCP_FIN | TCP_ACK });
      c.sndNxt = seqAdd(c.sndNxt, 1);
      sent = true;
    }
    if (seqDiff(c.sndNxt, c.sndMax) > 0) c.sndMax = c.sndNxt;
    if (seqDiff(c.sndMax, c.sndUna) > 0) this.armRto(c);
    else this.stopRto(c);
    return sent;
  }

  /** Send everything unacknowledged again. */
  private goBack(c: Connection): void {
    this.counters.retransmits++;
    if (c.state === "syn-received") return this.sendSynAck(c);
    c.sndNxt = c.sndUna;
    this.flush(c);
  }

  private sendAck(c: Connection): void {
    this.emit(c, { seq: c.sndNxt, ack: c.rcvNxt, flags: TCP_ACK });
  }

  // ---- timers, resets ----

  private armRto(c: Connection): void {
    if (c.cancelRto) return;
    c.cancelRto = this.schedule(() => {
      c.cancelRto = undefined;
      if (this.conn !== c) return;
      if (++c.rtoCount > RTO_COUNT_MAX) return this.abort(c, true);
      this.goBack(c);
    }, RTO_MS);
  }

  private stopRto(c: Connection): void {
    c.cancelRto?.();
    c.cancelRto = undefined;
  }

  /** Forget the connection, telling the guest with a RST if `reset`. */
  private abort(c: Connection, reset: boolean): void {
    if (reset) {
      this.counters.resetsSent++;
      this.emit(c, { seq: c.sndNxt, ack: c.rcvNxt, flags: TCP_RST | TCP_ACK });
    }
    this.drop(c);
  }

  private drop(c: Connection): void {
    this.stopRto(c);
    if (this.conn !== c) return;
    this.conn = undefined;
    this.opts.onConnection?.(false);
  }

  /** The RST for a segment that belongs to no connection (RFC 9293 §3.10.7.1); never for a RST. */
  private resetFor(ip: Ipv4, seg: TcpSegment): void {
    if (seg.flags & TCP_RST) return;
    this.counters.resetsSent++;
    const base = { srcPort: seg.dstPort, dstPort: seg.srcPort, window: 0 };
    if (seg.flags & TCP_ACK) this.opts.emit(ip, { ...base, seq: seg.ack, ack: 0, flags: TCP_RST });
    else {
      const len = seg.payload.byteLength + (seg.flags & TCP_SYN ? 1 : 0) + (seg.flags & TCP_FIN ? 1 : 0);
      this.opts.emit(ip, { ...base, seq: 0, ack: seqAdd(seg.seq, len), flags: TCP_RST | TCP_ACK });
    }
  }

  private emit(c: Connection, t: Omit<TcpOut, "srcPort" | "dstPort" | "window">): void {
    this.opts.emit(c.ip, { srcPort: this.opts.port, dstPort: c.port, window: c.window, ...t });
  }
}
