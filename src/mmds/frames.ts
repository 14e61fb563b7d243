// The wire formats MMDS speaks with the guest: Ethernet II (IEEE 802.3), ARP for IPv4 (RFC 826), IPv4
// (RFC 791) and TCP (RFC 9293), parsed from and built into plain byte arrays, big-endian as on the wire.
//
// Parsing is for hostile input: every length is checked against the bytes actually there before a field
// is read, and a frame that does not hold together returns undefined (the caller drops it). Checksums of
// frames from the guest are not verified: a guest using checksum offload (VIRTIO_NET_F_CSUM) leaves them
// partial, and the frames never leave the VMM (Firecracker's dumbo does the same). Checksums of frames
// built here are complete, so the guest may check them.

export const ETH_HLEN = 14;
export const ETH_P_IP = 0x0800;
export const ETH_P_ARP = 0x0806;
/** ARP for IPv4 over Ethernet: 28 bytes (RFC 826 with hlen 6, plen 4). */
export const ARP_LEN = 28;
export const ARPHRD_ETHER = 1;
export const ARPOP_REQUEST = 1;
export const ARPOP_REPLY = 2;
export const IPPROTO_TCP = 6;
export const IPV4_MIN_HLEN = 20;
export const TCP_MIN_HLEN = 20;
/** IPv4 flags/fragment-offset field: MF and the 13-bit offset (RFC 791 §3.1). */
const IP_MF = 0x2000;
const IP_DF = 0x4000;
const IP_OFFMASK = 0x1fff;

export const TCP_FIN = 0x01;
export const TCP_SYN = 0x02;
export const TCP_RST = 0x04;
export const TCP_PSH = 0x08;
export const TCP_ACK = 0x10;
/** TCP option kinds (RFC 9293 §3.1). */
const TCPOPT_EOL = 0;
const TCPOPT_NOP = 1;
const TCPOPT_MSS = 2;

const rd16 = (b: Uint8Array, at: number) => (b[at]! << 8) | b[at + 1]!;
const rd32 = (b: Uint8Array, at: number) => ((b[at]! << 24) | (b[at + 1]! << 16) | (b[at + 2]! << 8) | b[at + 3]!) >>> 0;
function wr16(b: Uint8Array, at: number, v: number): void {
  b[at] = (v >> 8) & 0xff;
  b[at + 1] = v & 0xff;
}
function wr32(b: Uint8Array, at: number, v: number): void {
  b[at] = (v >>> 24) & 0xff;
  b[at + 1] = (v >>> 16) & 0xff;
  b[at + 2] = (v >>> 8) & 0xff;
  b[at + 3] = v & 0xff;
}

/** An IPv4 address as a 32-bit unsigned number. */
export type Ipv4 = number;

export function parseIpv4(s: string): Ipv4 | undefined {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s);
  if (!m) return undefined;
  const parts = m.slice(1).map(Number);
  if (parts.some((p) => p > 255)) return undefined;
  return ((parts[0]! << 24) | (parts[1]! << 16) | (parts[2]! << 8) | parts[3]!) >>> 0;
}

export function formatIpv4(a: Ipv4): string {
  return [a >>> 24, (a >>> 16) & 0xff, (a >>> 8) & 0xff, a & 0xff].join(".");
}

/** The Internet checksum (RFC 1071) over `parts`, inverted, ready for the header. */
export function internetChecksum(...parts: Uint8Array[]): number {
  let sum = 0;
  for (const p of parts) {
    for (let i = 0; i + 1 < p.byteLength; i += 2) sum += (p[i]! << 8) | p[i + 1]!;
    if (p.byteLength & 1) sum += p[p.byteLength - 1]! << 8;
    // Fold often enough that the sum stays an exact integer.
    sum = (sum & 0xffff) + (sum >>> 16);
  }
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

// ---- Ethernet ----

export interface EthernetFrame {
  dst: Uint8Array;
  src: Uint8Array;
  ethertype: number;
  payload: Uint8Array;
}

export function parseEthernet(f: Uint8Array): EthernetFrame | undefined {
  if (f.byteLength < ETH_HLEN) return undefined;
  return { dst: f.subarray(0, 6), src: f.subarray(6, 12), ethertype: rd16(f, 12), payload: f.subarray(ETH_HLEN) };
}

export function buildEthernet(dst: Uint8Array, src: Uint8Array, ethertype: number, payload: Uint8Array): Uint8Array {
  const f = new Uint8Array(ETH_HLEN + payload.byteLength);
  f.set(dst.subarray(0, 6), 0);
  f.set(src.subarray(0, 6), 6);
  wr16(f, 12, ethertype);
  f.set(payload, ETH_HLEN);
  return f;
}

// ---- ARP ----

export interface ArpPacket {
  op: number;
  sha: Uint8Array;
  spa: Ipv4;
  tha: Uint8Array;
  tpa: Ipv4;
}

/** An ARP packet for IPv4 over Ethernet; anything else (other hardware, other lengths) is undefined. */
export function parseArp(p: Uint8Array): ArpPacket | undefined {
  if (p.byteLength < ARP_LEN) return undefined;
  if (rd16(p, 0) !== ARPHRD_ETHER || rd16(p, 2) !== ETH_P_IP || p[4] !== 6 || p[5] !== 4) return undefined;
  return { op: rd16(p, 6), sha: p.slice(8, 14), spa: rd32(p, 14), tha: p.slice(18, 24), tpa: rd32(p, 24) };
}

export function buildArp(a: ArpPacket): Uint8Array {
  const p = new Uint8Array(ARP_LEN);
  wr16(p, 0, ARPHRD_ETHER);
  wr16(p, 2, ETH_P_IP);
  p[4] = 6;
  p[5] = 4;
  wr16(p, 6, a.op);
  p.set(a.sha, 8);
  wr32(p, 14, a.spa);
  p.set(a.tha, 18);
  wr32(p, 24, a.tpa);
  return p;
}

// ---- IPv4 ----

export interface Ipv4Packet {
  src: Ipv4;
  dst: Ipv4;
  protocol: number;
  /** True for a fragment (MF set or a fragment offset): MMDS does not reassemble. */
  fragment: boolean;
  payload: Uint8Array;
}

/** Only the destination, for deciding whether a frame is for MMDS before parsing the rest. */
export function ipv4Destination(p: Uint8Array): Ipv4 | undefined {
  return p.byteLength >= IPV4_MIN_HLEN && p[0]! >> 4 === 4 ? rd32(p, 16) : undefined;
}

export function parseIpv4Packet(p: Uint8Array): Ipv4Packet | undefined {
  if (p.byteLength < IPV4_MIN_HLEN || p[0]! >> 4 !== 4) return undefined;
  const hlen = (p[0]! & 0x0f) * 4;
  const total = rd16(p, 2);
  // The total length covers the header and may be less than the frame (Ethernet padding), never more.
  if (hlen < IPV4_MIN_HLEN || total < hlen || total > p.byteLength) return undefined;
  const frag = rd16(p, 6);
  return {
    src: rd32(p, 12),
    dst: rd32(p, 16),
    protocol: p[9]!,
    fragment: (frag & IP_MF) !== 0 || (frag & IP_OFFMASK) !== 0,
    payload: p.subarray(hlen, total),
  };
}

export function buildIpv4(src: Ipv4, dst: Ipv4, protocol: number, id: number, payload: Uint8Array): Uint8Array {
  const p = new Uint8Array(IPV4_MIN_HLEN + payload.byteLength);
  p[0] = 0x45; // version 4, 5 words of header
  wr16(p, 2, p.byteLength);
  wr16(p, 4, id & 0xffff);
  wr16(p, 6, IP_DF);
  p[8] = 64; // TTL
  p[9] = protocol;
  wr32(p, 12, src);
  wr32(p, 16, dst);
  wr16(p, 10, internetChecksum(p.subarray(0, IPV4_MIN_HLEN)));
  p.set(payload, IPV4_MIN_HLEN);
  return p;
}

// ---- TCP ----

export interface TcpSegment {
  srcPort: number;
  dstPort: number;
  seq: number;
  ack: number;
  flags: number;
  window: number;
  /** The MSS option, when the segment carries a well-formed one. */
  mss?: number;
  payload: Uint8Array;
}

export function parseTcp(s: Uint8Array): TcpSegment | undefined {
  if (s.byteLength < TCP_MIN_HLEN) return undefined;
  const hlen = (s[12]! >> 4) * 4;
  if (hlen < TCP_MIN_HLEN || hlen > s.byteLength) return undefined;
  const seg: TcpSegment = {
    srcPort: rd16(s, 0),
    dstPort: rd16(s, 2),
    seq: rd32(s, 4),
    ack: rd32(s, 8),
    flags: s[13]! & 0x3f,
    window: rd16(s, 14),
    payload: s.subarray(hlen),
  };
  // Options: walk kind/length pairs inside the header; a malformed list ends the walk, nothing more.
  for (let at = TCP_MIN_HLEN; at < hlen;) {
    const kind = s[at]!;
    if (kind === TCPOPT_EOL) break;
    if (kind === TCPOPT_NOP) {
      at++;
      continue;
    }
    if (at + 1 >= hlen) break;
    const len = s[at + 1]!;
    if (len < 2 || at + len > hlen) break;
    if (kind === TCPOPT_MSS && len === 4) seg.mss = rd16(s, at + 2);
    at += len;
  }
  return seg;
}

export interface TcpOut {
  srcPort: number;
  dstPort: number;
  seq: number;
  ack: number;
  flags: number;
  window: number;
  mss?: number;
  payload?: Uint8Array;
}

/** A TCP segment with its checksum over the IPv4 pseudo-header (RFC 9293 §3.1). */
export function buildTcp(src: Ipv4, dst: Ipv4, t: TcpOut): Uint8Array {
  const optLen = t.mss !== undefined ? 4 : 0;
  const hlen = TCP_MIN_HLEN + optLen;
  const payload = t.payload ?? new Uint8Array(0);
  const s = new Uint8Array(hlen + payload.byteLength);
  wr16(s, 0, t.srcPort);
  wr16(s, 2, t.dstPort);
  wr32(s, 4, t.seq);
  wr32(s, 8, t.ack);
  s[12] = (hlen / 4) << 4;
  s[13] = t.flags;
  wr16(s, 14, Math.min(t.window, 0xffff));
  if (t.mss !== undefined) {
    s[20] = TCPOPT_MSS;
    s[21] = 4;
    wr16(s, 22, t.mss);
  }
  s.set(payload, hlen);
  const pseudo = new Uint8Array(12);
  wr32(pseudo, 0, src);
  wr32(pseudo, 4, dst);
  pseudo[9] = IPPROTO_TCP;
  wr16(pseudo, 10, s.byteLength);
  wr16(s, 16, internetChecksum(pseudo, s));
  return s;
}
