// MMDS on one network interface (Firecracker's src/vmm/src/mmds/ns.rs, MmdsNetworkStack): the guest
// reaches the metadata service at an IPv4 address (169.254.169.254 unless `ipv4_address` says otherwise)
// through its virtio-net interface, and the VMM answers for that address itself. The device's transmit path
// offers every frame to handleFrame() first; a frame for MMDS is consumed here and never reaches the TAP:
//   - an ARP request for the MMDS address (RFC 826): answered with MMDS's own MAC, 06:01:23:45:67:01;
//   - an IPv4 packet to the MMDS address: TCP to port 80 goes to the TCP server (tcp.ts), whose requests
//     are answered by http.ts from the store; anything else (UDP, ICMP, fragments, a malformed packet) is
//     dropped and counted.
// Replies are Ethernet frames handed to `output`, which the device puts in its receive queue. An ARP
// request that is not for MMDS, or a malformed one, is not MMDS's business and goes on to the TAP.
//
// Several interfaces may each have a stack; they share the one store (the document, the version, the
// token key), as Firecracker's do.

import {
  ARPOP_REPLY, ARPOP_REQUEST, buildArp, buildEthernet, buildIpv4, buildTcp, ETH_P_ARP, ETH_P_IP, ipv4Destination,
  IPPROTO_TCP, parseArp, parseEthernet, parseIpv4, parseIpv4Packet, parseTcp, type Ipv4,
} from "./frames.ts";
import { answer } from "./http.ts";
import type { MmdsStore } from "./store.ts";
import { TcpServer, type Scheduler } from "./tcp.ts";

/** Firecracker's DEFAULT_MAC_ADDR for the MMDS end of the link. */
export const MMDS_MAC = Uint8Array.of(0x06, 0x01, 0x23, 0x45, 0x67, 0x01);
export const MMDS_DEFAULT_IPV4 = "169.254.169.254";
export const MMDS_TCP_PORT = 80;

/**
 * Firecracker's rule for `ipv4_address` (is_link_local_valid): in 169.254.0.0/16 but not in its first or
 * last /24, which RFC 3927 §2.1 reserves.
 */
export function isLinkLocalValid(addr: string): boolean {
  const a = parseIpv4(addr);
  if (a === undefined) return false;
  const third = (a >>> 8) & 0xff;
  return a >>> 16 === 0xa9fe && third !== 0 && third !== 255;
}

export interface MmdsStackOptions {
  /** `ipv4_address` (default 169.254.169.254). */
  ipv4?: string;
  schedule?: Scheduler;
}

export class MmdsNetworkStack {
  readonly ipv4: Ipv4;
  /** Where reply frames go (Ethernet, no virtio-net header); the device sets it. */
  output: (frame: Uint8Array) => void = () => {};
  /** This interface's own counts; the store's `counters` add up every interface's, by Firecracker's names. */
  readonly counters = { rxFrames: 0, rxDropped: 0, txFrames: 0 };
  readonly tcp: TcpServer;
  /** The guest interface's MAC, learned from its frames. */
  private remoteMac: Uint8Array = new Uint8Array(6);
  private ipId = 0;

  constructor(
    readonly store: MmdsStore,
    opts: MmdsStackOptions = {},
  ) {
    const ip = parseIpv4(opts.ipv4 ?? MMDS_DEFAULT_IPV4);
    if (ip === undefined) throw new Error(`MMDS address ${JSON.stringify(opts.ipv4)} is not an IPv4 address`);
    this.ipv4 = ip;
    this.tcp = new TcpServer({
      port: MMDS_TCP_PORT,
      answer: (req) => answer(this.store, req),
      emit: (dst, seg) => this.send(ETH_P_IP, buildIpv4(this.ipv4, dst, IPPROTO_TCP, this.ipId++, buildTcp(this.ipv4, dst, seg))),
      schedule: opts.schedule,
      onConnection: (opened) => void (opened ? this.store.counters.connections_created++ : this.store.counters.connections_destroyed++),
    });
  }

  /** A frame the guest transmitted (Ethernet, no virtio-net header). True if it was for MMDS and is consumed. */
  handleFrame(frame: Uint8Array): boolean {
    const eth = parseEthernet(frame);
    if (!eth) return false;
    if (eth.ethertype === ETH_P_ARP) {
      const arp = parseArp(eth.payload);
      if (!arp || arp.tpa !== this.ipv4 || arp.op !== ARPOP_REQUEST) return false;
      this.counters.rxFrames++;
      this.store.counters.rx_accepted++;
      this.remoteMac = arp.sha;
      this.send(ETH_P_ARP, buildArp({ op: ARPOP_REPLY, sha: MMDS_MAC, spa: this.ipv4, tha: arp.sha, tpa: arp.spa }));
      return true;
    }
    if (eth.ethertype !== ETH_P_IP || ipv4Destination(eth.payload) !== this.ipv4) return false;
    // From here on the frame is MMDS's, whatever state it is in.
    this.counters.rxFrames++;
    this.store.counters.rx_accepted++;
    try {
      const ip = parseIpv4Packet(eth.payload);
      const seg = ip && !ip.fragment && ip.protocol === IPPROTO_TCP ? parseTcp(ip.payload) : undefined;
      if (!ip || !seg) {
        this.counters.rxDropped++;
        this.store.counters.rx_accepted_unusual++;
        return true;
      }
      this.remoteMac = eth.src.slice();
      this.tcp.receive(ip.src, seg);
    } catch {
      // A bug here must cost the guest a frame, not the VMM its life.
      this.counters.rxDropped++;
      this.store.counters.rx_accepted_unusual++;
    }
    return true;
  }

  close(): void {
    this.tcp.close();
  }

  private send(ethertype: number, payload: Uint8Array): void {
    const frame = buildEthernet(this.remoteMac, MMDS_MAC, ethertype, payload);
    this.counters.txFrames++;
    this.store.counters.tx_frames++;
    this.store.counters.tx_bytes += frame.byteLength;
    this.output(frame);
  }
}
