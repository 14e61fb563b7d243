// virtio-net: the device model against a stand-in backend (features, receive buffers, merged buffers,
// waiting frames, malformed transmit chains), then against a real TAP inside a network namespace the test
// creates, where the host kernel's own network stack answers what the test driver sends: ARP, UDP with
// checksum offload both ways, and a TCP stream whose GSO frames span several merged receive buffers.

import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { NET_HDR_SIZE, NET_MAX_FRAME, parseMac, VirtioNet, type NetBackend } from "../src/devices/virtio/net.ts";
import * as V from "../src/devices/virtio/uapi.ts";
import { ioctlName } from "../src/kvm/ioctl.ts";
import { StructView } from "../src/kvm/struct.ts";
import { invalidInterfaceName, Tap, TAP_MAX_FRAME } from "../src/net/tap.ts";
import * as T from "../src/net/uapi.ts";
import { NetNs, netnsTest, NETNS_MISSING, uniqueName } from "./support/netns.ts";
import { virtioSetup, waitFor, type TestQueue } from "./support/virtio-driver.ts";

// ---- frames, built and parsed the way a guest's network stack would ----

const GUEST_MAC = "06:00:0a:00:02:02";
const HOST_IP = [10, 0, 2, 1];
const GUEST_IP = [10, 0, 2, 2];
const ETH_P_IP = 0x0800;
const ETH_P_ARP = 0x0806;
const IPPROTO_TCP = 6;
const IPPROTO_UDP = 17;
const ETH_HLEN = 14;
const IP_HLEN = 20;

const macBytes = (m: string) => parseMac(m);
const be16 = (n: number) => [(n >> 8) & 0xff, n & 0xff];
const be32 = (n: number) => [(n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff];
const rd16 = (b: Uint8Array, at: number) => (b[at]! << 8) | b[at + 1]!;
const rd32 = (b: Uint8Array, at: number) => ((b[at]! << 24) | (b[at + 1]! << 16) | (b[at + 2]! << 8) | b[at + 3]!) >>> 0;

/** The Internet checksum's ones'-complement sum, folded to 16 bits (RFC 1071), not inverted. */
function onesSum(bytes: Uint8Array | number[], initial = 0): number {
  let sum = initial;
  for (let i = 0; i < bytes.length; i += 2) sum += (bytes[i]! << 8) | (bytes[i + 1] ?? 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}

function vnetHdr(fields: Record<string, number> = {}): Uint8Array {
  return new StructView(V.virtio_net_hdr_v1).assign(fields).bytes;
}

function eth(dst: Uint8Array, src: Uint8Array, type: number, payload: Uint8Array | number[]): Uint8Array {
  return Uint8Array.from([...dst, ...src, ...be16(type), ...payload]);
}

function ipv4(proto: number, src: number[], dst: number[], payload: Uint8Array | number[]): number[] {
  const h = [0x45, 0, ...be16(IP_HLEN + payload.length), 0, 1, 0x40, 0, 64, proto, 0, 0, ...src, ...dst];
  const c = ~onesSum(h) & 0xffff;
  h[10] = c >> 8;
  h[11] = c & 0xff;
  return [...h, ...payload];
}

/** Pseudo-header sum for TCP/UDP over IPv4 (RFC 768, RFC 793). */
const pseudoSum = (proto: number, src: number[], dst: number[], len: number) => onesSum([...src, ...dst, 0, proto, ...be16(len)]);

/**
 * A UDP datagram. `partial`: leave the checksum to the device (NEEDS_CSUM): the field holds the
 * pseudo-header sum, as Linux does for CHECKSUM_PARTIAL.
 */
function udp(src: number[], dst: number[], sport: number, dport: number, data: Uint8Array, partial: boolean): number[] {
  const seg = [...be16(sport), ...be16(dport), ...be16(8 + data.length), 0, 0, ...data];
  const pseudo = pseudoSum(IPPROTO_UDP, src, dst, seg.length);
  const c = partial ? pseudo : ~onesSum(seg, pseudo) & 0xffff || 0xffff;
  seg[6] = c >> 8;
  seg[7] = c & 0xff;
  return seg;
}

function tcp(src: number[], dst: number[], o: { sport: number; dport: number; seq: number; ack: number; flags: number; window: number; options?: number[] }): number[] {
  const opts = o.options ?? [];
  const seg = [...be16(o.sport), ...be16(o.dport), ...be32(o.seq), ...be32(o.ack), ((20 + opts.length) / 4) << 4, o.flags,
    ...be16(o.window), 0, 0, 0, 0, ...opts];
  const c = ~onesSum(seg, pseudoSum(IPPROTO_TCP, src, dst, seg.length)) & 0xffff;
  seg[16] = c >> 8;
  seg[17] = c & 0xff;
  return seg;
}
const TCP_FIN = 1, TCP_SYN = 2, TCP_RST = 4, TCP_ACK = 16;

/** ARP request, "who has `target`? tell `senderIp`" (RFC 826). */
function arpRequest(senderMac: Uint8Array, senderIp: number[], target: number[]): Uint8Array {
  const arp = [0, 1, ...be16(ETH_P_IP), 6, 4, 0, 1, ...senderMac, ...senderIp, 0, 0, 0, 0, 0, 0, ...target];
  return eth(new Uint8Array(6).fill(0xff), senderMac, ETH_P_ARP, arp);
}

interface Received {
  hdr: StructView;
  frame: Uint8Array;
  /** The used length of each receive chain it came in. */
  lens: number[];
}

const ethType = (f: Uint8Array) => rd16(f, 12);
const ipProto = (f: Uint8Array) => f[ETH_HLEN + 9]!;

// ---- the device on the test driver ----

/** What a TAP does, in memory: frames written are recorded, frames injected are handed to the device. */
class FakeBackend implements NetBackend {
  readonly name = "fake0";
  written: Uint8Array[] = [];
  offloads: number[] = [];
  inFlight = 0;
  maxInFlight = Infinity;
  refuse: string | undefined;
  closed = false;
  private onFrame?: (frame: Uint8Array) => void;
  write(frame: Uint8Array): void {
    if (this.refuse) throw new Error(this.refuse);
    this.written.push(frame.slice());
  }
  setOffload(flags: number): void {
    this.offloads.push(flags);
  }
  startReading(onFrame: (frame: Uint8Array) => void, opts: { maxInFlight?: number }): void {
    this.onFrame = onFrame;
    this.maxInFlight = opts.maxInFlight ?? Infinity;
  }
  releaseFrame(): void {
    this.inFlight--;
  }
  /** Deliver a frame as the TAP reader would; false if the reader would be waiting (at maxInFlight). */
  inject(frame: Uint8Array): boolean {
    if (!this.onFrame || this.inFlight >= this.maxInFlight) return false;
    this.inFlight++;
    this.onFrame(frame);
    return true;
  }
  close(): void {
    this.closed = true;
  }
}

const ALL = (f: bigint) => f;
const without = (...bits: number[]) => (f: bigint) => bits.reduce((x, b) => x & ~V.bit(b), f);

function setupNet(backend: NetBackend, opts: { accept?: (f: bigint) => bigint; maxPendingFrames?: number; queueSize?: number; mac?: string } = {}) {
  const logs: string[] = [];
  const net = new VirtioNet(backend, { mac: opts.mac ?? GUEST_MAC, maxPendingFrames: opts.maxPendingFrames, queueSize: opts.queueSize ?? 64, log: (m) => logs.push(m) });
  const s = virtioSetup(net);
  const [rx, tx] = s.driver.init({ accept: opts.accept ?? ALL });
  return { ...s, net, rx: rx!, tx: tx!, netLogs: logs };
}

/** Receive buffers used since the last call, reassembled into frames by num_buffers (§5.1.6.4). */
function receivedFrames(rx: TestQueue) {
  const out: Received[] = [];
  let cur: { parts: Uint8Array[]; want: number } | undefined;
  for (const u of rx.takeUsedData()) {
    if (!cur) {
      const hdr = new StructView(V.virtio_net_hdr_v1, u.data.slice(0, NET_HDR_SIZE));
      cur = { parts: [u.data], want: hdr.get("num_buffers") };
    } else cur.parts.push(u.data);
    if (cur.parts.length === cur.want) {
      const all = new Uint8Array(cur.parts.reduce((n, p) => n + p.byteLength, 0));
      let at = 0;
      for (const p of cur.parts) {
        all.set(p, at);
        at += p.byteLength;
      }
      out.push({ hdr: new StructView(V.virtio_net_hdr_v1, all.slice(0, NET_HDR_SIZE)), frame: all.slice(NET_HDR_SIZE), lens: cur.parts.map((p) => p.byteLength) });
      cur = undefined;
    }
  }
  if (cur) throw new Error(`a frame's num_buffers is ${cur.want}, only ${cur.parts.length} buffers came back`);
  return out;
}

/** A host frame, header first, of `len` frame bytes filled with a pattern. */
function hostFrame(len: number, hdr: Record<string, number> = {}): Uint8Array {
  const f = new Uint8Array(NET_HDR_SIZE + len);
  f.set(vnetHdr(hdr));
  for (let i = 0; i < len; i++) f[NET_HDR_SIZE + i] = (i * 7 + 3) & 0xff;
  return f;
}

describe("kernel layouts and ioctls", () => {
  test("struct ifreq is 40 bytes, virtio_net_hdr_v1 12, virtio_net_config 24", () => {
    expect(T.ifreq.size).toBe(40);
    expect(T.ifreq.offsetOf("ifr_ifru.ifru_flags")).toBe(16);
    expect(V.virtio_net_hdr_v1.size).toBe(12);
    expect(V.virtio_net_hdr_v1.offsetOf("num_buffers")).toBe(10);
    expect(V.virtio_net_config.size).toBe(24);
    expect(V.virtio_net_config.offsetOf("status")).toBe(6);
  });

  test("tun ioctl numbers match <linux/if_tun.h> and errors name them", () => {
    // _IOW('T', 202, int) and friends, as a C compiler computes them.
    expect(T.TUNSETIFF).toBe(0x400454ca);
    expect(T.TUNSETOFFLOAD).toBe(0x400454d0);
    expect(T.TUNGETVNETHDRSZ).toBe(0x800454d7);
    expect(T.TUNSETVNETHDRSZ).toBe(0x400454d8);
    expect(ioctlName(T.TUNSETIFF)).toBe("TUNSETIFF");
    expect(ioctlName(T.TUNSETOFFLOAD)).toBe("TUNSETOFFLOAD");
  });

  test("interface names and MAC addresses are checked before use", () => {
    expect(invalidInterfaceName("tap0")).toBeUndefined();
    expect(invalidInterfaceName("")).toContain("empty");
    expect(invalidInterfaceName("a".repeat(16))).toContain("at most 15");
    expect(invalidInterfaceName("../x")).toContain("'/'");
    expect(invalidInterfaceName("ta p")).toContain("whitespace");
    expect(() => new Tap("bad/name")).toThrow("contains '/'");
    expect([...parseMac("06:00:AC:10:00:02")]).toEqual([6, 0, 0xac, 0x10, 0, 2]);
    expect(() => parseMac("06:00:ac:10:00")).toThrow("six hex bytes");
    expect(() => parseMac("01:00:5e:00:00:01")).toThrow("multicast");
    expect(() => new VirtioNet(new FakeBackend(), { mac: "zz:00:00:00:00:00" })).toThrow("six hex bytes");
    expect(() => new VirtioNet(new FakeBackend(), { mtu: 40 })).toThrow("MTU 40");
    // Firecracker's field names: a bad guest_mac is refused before any TAP is opened.
    expect(() => new VirtioNet({ hostDevName: "kbad0", guestMac: "06:00" })).toThrow("six hex bytes");
    expect(() => new VirtioNet({ hostDevName: "bad/name" })).toThrow("contains '/'");
  });
});

describe("device model", () => {
  test("identifies as a network device with its MAC and link status in config space", () => {
    const { driver, dev } = virtioSetup(new VirtioNet(new FakeBackend(), { mac: GUEST_MAC }));
    expect(driver.read32(V.VIRTIO_MMIO_DEVICE_ID)).toBe(V.VIRTIO_ID_NET);
    const offered = dev.offeredFeatures;
    for (const f of [V.VIRTIO_NET_F_MAC, V.VIRTIO_NET_F_STATUS, V.VIRTIO_NET_F_CSUM, V.VIRTIO_NET_F_GUEST_CSUM,
      V.VIRTIO_NET_F_GUEST_TSO4, V.VIRTIO_NET_F_GUEST_TSO6, V.VIRTIO_NET_F_HOST_TSO4, V.VIRTIO_NET_F_HOST_TSO6,
      V.VIRTIO_NET_F_MRG_RXBUF]) expect(offered & V.bit(f)).toBe(V.bit(f));
    for (const f of [V.VIRTIO_NET_F_GUEST_UFO, V.VIRTIO_NET_F_HOST_UFO, V.VIRTIO_NET_F_CTRL_VQ]) expect(offered & V.bit(f)).toBe(0n);
    expect([...driver.readConfig(0, 6)]).toEqual([...parseMac(GUEST_MAC)]);
    const status = driver.readConfig(V.virtio_net_config.offsetOf("status"), 2);
    expect(status[0]! | (status[1]! << 8)).toBe(V.VIRTIO_NET_S_LINK_UP);
    // Two queues: QueueNumMax reads 0 for a third.
    driver.write32(V.VIRTIO_MMIO_QUEUE_SEL, 2);
    expect(driver.read32(V.VIRTIO_MMIO_QUEUE_NUM_MAX)).toBe(0);
  });

  test("without a MAC the feature is not offered (the driver picks one); an MTU is offered when given", () => {
    const { dev } = virtioSetup(new VirtioNet(new FakeBackend()));
    expect(dev.offeredFeatures & V.bit(V.VIRTIO_NET_F_MAC)).toBe(0n);
    expect(dev.offeredFeatures & V.bit(V.VIRTIO_NET_F_MTU)).toBe(0n);
    const withMtu = virtioSetup(new VirtioNet(new FakeBackend(), { mtu: 9000 }));
    expect(withMtu.dev.offeredFeatures & V.bit(V.VIRTIO_NET_F_MTU)).toBe(V.bit(V.VIRTIO_NET_F_MTU));
    const mtu = withMtu.driver.readConfig(V.virtio_net_config.offsetOf("mtu"), 2);
    expect(mtu[0]! | (mtu[1]! << 8)).toBe(9000);
  });

  test("an offload without the feature it depends on is refused at FEATURES_OK", () => {
    const { driver, logs } = virtioSetup(new VirtioNet(new FakeBackend(), { mac: GUEST_MAC }));
    expect(() => driver.init({ accept: without(V.VIRTIO_NET_F_CSUM) })).toThrow("refused the features");
    expect(logs.some((l) => l.includes("VIRTIO_NET_F_HOST_TSO4 needs VIRTIO_NET_F_CSUM"))).toBe(true);
    expect(() => driver.init({ accept: without(V.VIRTIO_NET_F_GUEST_CSUM) })).toThrow("refused the features");
    driver.init({ accept: without(V.VIRTIO_NET_F_GUEST_CSUM, V.VIRTIO_NET_F_GUEST_TSO4, V.VIRTIO_NET_F_GUEST_TSO6) });
    expect(driver.status() & V.VIRTIO_CONFIG_S_DRIVER_OK).toBeTruthy();
  });

  test("the negotiated receive offloads go to the TAP with TUNSETOFFLOAD, and are cleared on reset", () => {
    const b = new FakeBackend();
    const s = setupNet(b);
    expect(b.offloads.at(-1)).toBe(T.TUN_F_CSUM | T.TUN_F_TSO4 | T.TUN_F_TSO6);
    s.driver.reset();
    expect(b.offloads.at(-1)).toBe(0);
    s.driver.init({ accept: without(V.VIRTIO_NET_F_GUEST_TSO6) });
    expect(b.offloads.at(-1)).toBe(T.TUN_F_CSUM | T.TUN_F_TSO4);
    s.driver.reset();
    s.driver.init({ accept: without(V.VIRTIO_NET_F_GUEST_CSUM, V.VIRTIO_NET_F_GUEST_TSO4, V.VIRTIO_NET_F_GUEST_TSO6) });
    expect(b.offloads.at(-1)).toBe(0);
  });

  test("TX: header and frame gathered from several descriptors into one write", () => {
    const b = new FakeBackend();
    const s = setupNet(b);
    const frame = arpRequest(macBytes(GUEST_MAC), GUEST_IP, HOST_IP);
    const hdr = vnetHdr({ num_buffers: 0xbeef });
    s.tx.send([hdr.subarray(0, 5), Uint8Array.of(...hdr.subarray(5), ...frame.subarray(0, 10)), frame.subarray(10)]);
    s.tx.send([hdr, frame], { indirect: true });
    s.tx.kick();
    expect(s.tx.takeUsed()).toEqual([{ id: 0, len: 0 }, { id: 3, len: 0 }]);
    expect(b.written.length).toBe(2);
    for (const w of b.written) {
      // num_buffers means nothing on transmit and is zeroed.
      expect([...w]).toEqual([...vnetHdr(), ...frame]);
    }
    expect(s.net.counters).toMatchObject({ txFrames: 2, txBytes: 2 * frame.byteLength, txDropped: 0 });
    expect(s.irq.count).toBeGreaterThan(0);
  });

  test("RX with MRG_RXBUF: a frame spans several buffers and num_buffers says how many", () => {
    const b = new FakeBackend();
    const s = setupNet(b);
    s.rx.postWritable(8, 1000);
    s.rx.kick();
    const f = hostFrame(2500);
    expect(b.inject(f)).toBe(true);
    const got = receivedFrames(s.rx);
    expect(got.length).toBe(1);
    expect(got[0]!.lens).toEqual([1000, 1000, 512]);
    expect(got[0]!.hdr.get("num_buffers")).toBe(3);
    expect([...got[0]!.frame]).toEqual([...f.subarray(NET_HDR_SIZE)]);
    expect(s.net.counters).toMatchObject({ rxFrames: 1, rxBytes: 2500, rxDropped: 0 });
    expect(b.inFlight).toBe(0);
    expect(s.irq.count).toBeGreaterThan(0);
  });

  test("RX without MRG_RXBUF: one chain per frame, num_buffers 1; a frame too large is dropped, the chain kept", () => {
    const b = new FakeBackend();
    const s = setupNet(b, { accept: without(V.VIRTIO_NET_F_MRG_RXBUF) });
    s.rx.postWritable(2, 1526);
    s.rx.kick();
    expect(b.inject(hostFrame(3000))).toBe(true);
    expect(s.net.counters.rxDropped).toBe(1);
    expect(s.rx.usedIdx()).toBe(0);
    expect(b.inject(hostFrame(1514))).toBe(true);
    const got = receivedFrames(s.rx);
    expect(got.length).toBe(1);
    expect(got[0]!.hdr.get("num_buffers")).toBe(1);
    expect(got[0]!.frame.byteLength).toBe(1514);
  });

  test("frames wait for receive buffers, at most maxPendingFrames of them, in order", () => {
    const b = new FakeBackend();
    const s = setupNet(b, { maxPendingFrames: 4 });
    for (let i = 0; i < 4; i++) expect(b.inject(hostFrame(60 + i))).toBe(true);
    // The reader would now wait: the fifth stays with the host kernel.
    expect(b.inject(hostFrame(99))).toBe(false);
    expect(s.net.pendingFrames).toBe(4);
    s.rx.postWritable(2, 2048);
    s.rx.kick();
    expect(receivedFrames(s.rx).map((r) => r.frame.byteLength)).toEqual([60, 61]);
    expect(s.net.pendingFrames).toBe(2);
    s.rx.postWritable(8, 2048);
    s.rx.kick();
    expect(receivedFrames(s.rx).map((r) => r.frame.byteLength)).toEqual([62, 63]);
    expect(b.inFlight).toBe(0);
    expect(s.net.counters.rxDropped).toBe(0);
  });

  test("a frame with offloads the driver did not accept is dropped", () => {
    const b = new FakeBackend();
    const s = setupNet(b, { accept: without(V.VIRTIO_NET_F_GUEST_CSUM, V.VIRTIO_NET_F_GUEST_TSO4, V.VIRTIO_NET_F_GUEST_TSO6) });
    s.rx.postWritable(4, 70000);
    s.rx.kick();
    b.inject(hostFrame(100, { flags: V.VIRTIO_NET_HDR_F_NEEDS_CSUM }));
    b.inject(hostFrame(9000, { gso_type: V.VIRTIO_NET_HDR_GSO_TCPV4, gso_size: 1448 }));
    b.inject(hostFrame(100, { flags: V.VIRTIO_NET_HDR_F_DATA_VALID }));
    const got = receivedFrames(s.rx);
    expect(got.length).toBe(1);
    // Without GUEST_CSUM, flags are zero (§5.1.6.4.1).
    expect(got[0]!.hdr.get("flags")).toBe(0);
    expect(s.net.counters.rxDropped).toBe(2);
  });

  test("reset drops waiting frames and gives them back to the reader", () => {
    const b = new FakeBackend();
    const s = setupNet(b);
    b.inject(hostFrame(60));
    b.inject(hostFrame(60));
    s.driver.reset();
    expect(b.inFlight).toBe(0);
    expect(s.net.counters.rxDropped).toBe(2);
    // Not running: frames are dropped at once.
    b.inject(hostFrame(60));
    expect(b.inFlight).toBe(0);
    expect(s.net.counters.rxDropped).toBe(3);
  });
});

describe("hostile driver", () => {
  test("malformed transmit chains are dropped and counted; the device keeps running", () => {
    const b = new FakeBackend();
    const s = setupNet(b, { accept: without(V.VIRTIO_NET_F_CSUM, V.VIRTIO_NET_F_HOST_TSO4, V.VIRTIO_NET_F_HOST_TSO6) });
    const frame = new Uint8Array(60);
    s.tx.send([new Uint8Array(11)]); // shorter than the header
    s.tx.send([vnetHdr(), new Uint8Array(NET_MAX_FRAME)]); // one header too long
    s.tx.send([vnetHdr({ flags: V.VIRTIO_NET_HDR_F_NEEDS_CSUM, csum_start: 34, csum_offset: 6 }), frame]);
    s.tx.send([vnetHdr({ gso_type: V.VIRTIO_NET_HDR_GSO_TCPV4, gso_size: 1448 }), frame]);
    s.tx.send([vnetHdr({ gso_type: V.VIRTIO_NET_HDR_GSO_UDP }), frame]);
    s.tx.send([vnetHdr({ gso_type: 0x42 }), frame]);
    s.tx.send([vnetHdr({ gso_type: V.VIRTIO_NET_HDR_GSO_NONE | V.VIRTIO_NET_HDR_GSO_ECN }), frame]);
    s.tx.add([{ addr: s.alloc.alloc(64), len: 64, write: true }]); // only writable: zero bytes to send
    s.tx.kick();
    expect(s.tx.takeUsed().map((u) => u.len)).toEqual([0, 0, 0, 0, 0, 0, 0, 0]);
    expect(b.written.length).toBe(0);
    expect(s.net.counters.txDropped).toBe(8);
    // The host refusing a frame (EINVAL for a header the kernel finds inconsistent) is also just a drop.
    b.refuse = "write failed: EINVAL (Invalid argument)";
    s.tx.send([vnetHdr(), frame]);
    s.tx.kick();
    expect(s.net.counters.txDropped).toBe(9);
    b.refuse = undefined;
    s.tx.send([vnetHdr(), frame]);
    s.tx.kick();
    expect(b.written.length).toBe(1);
    expect(s.dev.status & V.VIRTIO_CONFIG_S_NEEDS_RESET).toBe(0);
    expect(s.errors).toEqual([]);
    // Each kind of mistake is logged a bounded number of times.
    expect(s.netLogs.length).toBeLessThanOrEqual(9);
  });

  test("receive chains too small for a header, or a ring too small for the frame", () => {
    const b = new FakeBackend();
    const s = setupNet(b, { queueSize: 4 });
    // Chains with fewer bytes than the header are handed back empty.
    s.rx.postWritable(2, 4);
    s.rx.postWritable(2, 100);
    s.rx.kick();
    b.inject(hostFrame(150));
    const used = s.rx.takeUsed();
    expect(used.map((u) => u.len)).toEqual([0, 0, 100, 62]);
    // 4 chains of 100 bytes can never hold 1000: dropped at once rather than waiting forever.
    s.rx.postWritable(4, 100);
    s.rx.kick();
    b.inject(hostFrame(1000));
    expect(s.net.counters.rxDropped).toBe(1);
    expect(s.net.pendingFrames).toBe(0);
    expect(b.inFlight).toBe(0);
    expect(s.dev.status & V.VIRTIO_CONFIG_S_NEEDS_RESET).toBe(0);
  });

  test("thousands of random chains and frames: no exception, bounded waiting frames, every frame accounted for", () => {
    let seed = 0x5eed;
    const rand = (n: number) => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    const b = new FakeBackend();
    const s = setupNet(b, { maxPendingFrames: 8, queueSize: 16 });
    let injected = 0;
    for (let round = 0; round < 3000; round++) {
      switch (rand(4)) {
        case 0: {
          const parts = Array.from({ length: 1 + rand(3) }, () => {
            const p = new Uint8Array(rand(3) ? rand(200) : rand(NET_MAX_FRAME / 4));
            for (let i = 0; i < p.length; i += 7) p[i] = rand(256);
            return p;
          });
          try {
            s.tx.send(parts);
          } catch {
            // Out of descriptors: the device has not returned them yet.
          }
          s.tx.kick();
          s.tx.takeUsed();
          break;
        }
        case 1:
          try {
            s.rx.postWritable(1 + rand(3), rand(2) ? 1 + rand(64) : 1 + rand(4096));
          } catch {
            // Ring full.
          }
          s.rx.kick();
          break;
        case 2: {
          const f = hostFrame(rand(5000), { flags: rand(4), gso_type: rand(6), num_buffers: rand(65536) });
          if (b.inject(f)) injected++;
          break;
        }
        case 3:
          receivedFrames(s.rx);
          break;
      }
      expect(s.net.pendingFrames).toBeLessThanOrEqual(8);
      expect(b.inFlight).toBe(s.net.pendingFrames);
    }
    const c = s.net.counters;
    expect(c.rxFrames + c.rxDropped + s.net.pendingFrames).toBe(injected);
    expect(s.errors).toEqual([]);
    expect(s.dev.status & V.VIRTIO_CONFIG_S_NEEDS_RESET).toBe(0);
  });
});

// ---- a real TAP in a network namespace ----

describe("through a real TAP in a network namespace", () => {
  let ns: NetNs | undefined;
  const open: { net: VirtioNet }[] = [];

  beforeAll(() => {
    if (!NETNS_MISSING) ns = NetNs.create("knet");
  });
  // Each test's TAP goes away after it: two links with the same subnet would take each other's replies.
  afterEach(async () => {
    for (const o of open.splice(0)) await o.net.close();
  });
  afterAll(() => ns?.delete());

  /**
   * A TAP opened by this process (TUNSETIFF creates it), moved into the namespace with the host side
   * at 10.0.2.1/24, and a virtio-net device on it driven by the test driver.
   */
  function realNet(opts: { accept?: (f: bigint) => bigint; maxPendingFrames?: number; neighbour?: boolean } = {}) {
    const ifname = uniqueName("ktap");
    const tap = new Tap(ifname);
    expect(tap.kernelVnetHdrSize()).toBe(12);
    ns!.adopt(ifname);
    // No IPv6 on the link: router solicitations would only be noise here.
    ns!.exec("sysctl", "-qw", `net.ipv6.conf.${ifname}.disable_ipv6=1`);
    ns!.ip("addr", "add", `${HOST_IP.join(".")}/24`, "dev", ifname);
    ns!.ip("link", "set", ifname, "up");
    // The guest's address, so the host can send to it without asking by ARP first.
    if (opts.neighbour) ns!.ip("neigh", "add", GUEST_IP.join("."), "lladdr", GUEST_MAC, "dev", ifname, "nud", "permanent");
    const hostMac = parseMac(ns!.exec("cat", `/sys/class/net/${ifname}/address`));
    const s = setupNet(tap, { accept: opts.accept, maxPendingFrames: opts.maxPendingFrames, queueSize: 256 });
    open.push(s);
    return { ...s, ifname, tap, hostMac };
  }

  /** Wait until the device has received a frame that `match` accepts; returns it (others are skipped). */
  async function receive(rx: TestQueue, match: (r: Received) => boolean, what: string): Promise<Received> {
    let found: Received | undefined;
    await waitFor(() => {
      for (const r of receivedFrames(rx)) if (!found && match(r)) found = r;
      if (!found && rx.usedIdx() !== rx.lastUsed) return false;
      return found !== undefined;
    }, what);
    return found!;
  }

  netnsTest("an ARP request from the guest reaches the host; the host kernel's reply comes back", async () => {
    const s = realNet();
    s.rx.postWritable(32, 2048);
    s.rx.kick();
    const rxBefore = ns!.stat(s.ifname, "rx_packets");
    s.tx.send([vnetHdr(), arpRequest(macBytes(GUEST_MAC), GUEST_IP, HOST_IP)]);
    s.tx.kick();
    expect(s.tx.takeUsed().length).toBe(1);
    expect(s.net.counters.txFrames).toBe(1);
    const reply = await receive(s.rx, (r) => ethType(r.frame) === ETH_P_ARP, "the ARP reply");
    const f = reply.frame;
    expect([...f.subarray(0, 6)]).toEqual([...macBytes(GUEST_MAC)]);
    const arp = f.subarray(ETH_HLEN);
    expect(rd16(arp, 6)).toBe(2); // ARPOP_REPLY
    expect([...arp.subarray(8, 14)]).toEqual([...s.hostMac]);
    expect([...arp.subarray(14, 18)]).toEqual(HOST_IP);
    expect([...arp.subarray(24, 28)]).toEqual(GUEST_IP);
    expect(reply.hdr.get("num_buffers")).toBe(1);
    // The host side counts the frame it received from us.
    expect(ns!.stat(s.ifname, "rx_packets")).toBeGreaterThan(rxBefore);
    expect(s.irq.count).toBeGreaterThan(0);
  });

  for (const guestCsum of [true, false]) {
    netnsTest(`UDP both ways with a server in the namespace; checksum offload ${guestCsum ? "negotiated" : "not negotiated"}`, async () => {
      const s = realNet({
        neighbour: true,
        accept: guestCsum ? ALL : without(V.VIRTIO_NET_F_GUEST_CSUM, V.VIRTIO_NET_F_GUEST_TSO4, V.VIRTIO_NET_F_GUEST_TSO6),
      });
      s.rx.postWritable(32, 2048);
      s.rx.kick();
      // A UDP echo server on the host side of the link.
      const server = ns!.spawnBun(`
        const s = await Bun.udpSocket({ hostname: "${HOST_IP.join(".")}", port: 7777, socket: {
          data(sock, buf, port, addr) { sock.send(Buffer.concat([Buffer.from("echo:"), buf]), port, addr); },
        } });
        console.log("ready");
        setTimeout(() => process.exit(0), 20000);
      `);
      try {
        const reader = (server.proc.stdout as ReadableStream<Uint8Array>).getReader();
        expect(new TextDecoder().decode((await reader.read()).value)).toContain("ready");
        reader.releaseLock();
        const payload = new TextEncoder().encode(`hello from the guest, csum ${guestCsum}`);
        // The guest leaves its checksum to the device (NEEDS_CSUM, VIRTIO_NET_F_CSUM): the host finishes it.
        const dgram = udp(GUEST_IP, HOST_IP, 5555, 7777, payload, true);
        const frame = eth(s.hostMac, macBytes(GUEST_MAC), ETH_P_IP, ipv4(IPPROTO_UDP, GUEST_IP, HOST_IP, dgram));
        s.tx.send([vnetHdr({ flags: V.VIRTIO_NET_HDR_F_NEEDS_CSUM, csum_start: ETH_HLEN + IP_HLEN, csum_offset: 6 }), frame]);
        s.tx.kick();
        const r = await receive(s.rx, (x) => ethType(x.frame) === ETH_P_IP && ipProto(x.frame) === IPPROTO_UDP, "the UDP echo");
        const u = r.frame.subarray(ETH_HLEN + IP_HLEN);
        expect(rd16(u, 0)).toBe(7777);
        expect(rd16(u, 2)).toBe(5555);
        expect(new TextDecoder().decode(u.subarray(8))).toBe(`echo:${new TextDecoder().decode(payload)}`);
        if (guestCsum) {
          // TUNSETOFFLOAD(TUN_F_CSUM) took effect: the host left the checksum to the guest.
          expect(r.hdr.get("flags") & V.VIRTIO_NET_HDR_F_NEEDS_CSUM).toBe(V.VIRTIO_NET_HDR_F_NEEDS_CSUM);
          expect(r.hdr.get("csum_start")).toBe(ETH_HLEN + IP_HLEN);
          expect(r.hdr.get("csum_offset")).toBe(6);
        } else {
          // No offload: flags are zero and the checksum is complete (sums to 0xffff with the pseudo-header).
          expect(r.hdr.get("flags")).toBe(0);
          expect(onesSum(u, pseudoSum(IPPROTO_UDP, HOST_IP, GUEST_IP, u.byteLength))).toBe(0xffff);
        }
      } finally {
        server.proc.kill();
      }
    }, 20000);
  }

  netnsTest("TSO: a TCP stream from the namespace arrives as GSO frames spread over merged receive buffers", async () => {
    const s = realNet({ neighbour: true });
    // Buffers of about one MTU, the smallest Linux's mergeable receive path posts: any GSO frame (two
    // segments or more) needs more than one.
    const BUF = 1536;
    s.rx.postWritable(250, BUF);
    s.rx.kick();
    const total = 60000;
    const client = ns!.spawnBun(`
      const data = new Uint8Array(${total});
      for (let i = 0; i < data.length; i++) data[i] = (i * 13 + 5) & 0xff;
      await Bun.connect({ hostname: "${GUEST_IP.join(".")}", port: 8080, socket: {
        open(sock) { sock.write(data); },
        data() {}, error() {}, close() {},
      } });
      setTimeout(() => process.exit(0), 20000);
    `);
    const isTcp = (r: Received) => ethType(r.frame) === ETH_P_IP && ipProto(r.frame) === IPPROTO_TCP;
    const tcpOf = (r: Received) => r.frame.subarray(ETH_HLEN + IP_HLEN);
    const sendTcp = (seg: number[]) => {
      s.tx.send([vnetHdr(), eth(s.hostMac, macBytes(GUEST_MAC), ETH_P_IP, ipv4(IPPROTO_TCP, GUEST_IP, HOST_IP, seg))]);
      s.tx.kick();
      s.tx.takeUsed();
    };
    try {
      const syn = await receive(s.rx, (r) => isTcp(r) && (tcpOf(r)[13]! & TCP_SYN) !== 0, "the client's SYN");
      const t = tcpOf(syn);
      const sport = rd16(t, 0);
      const clientIsn = rd32(t, 4);
      const ours = 1000;
      // SYN-ACK with MSS 1460 and a 64 KiB window; the guest is the server.
      sendTcp(tcp(GUEST_IP, HOST_IP, { sport: 8080, dport: sport, seq: ours, ack: clientIsn + 1, flags: TCP_SYN | TCP_ACK, window: 65535, options: [2, 4, ...be16(1460)] }));
      const got = new Map<number, Uint8Array>();
      let gso: Received | undefined;
      let mergedBuffers = 0;
      await waitFor(() => {
        for (const r of receivedFrames(s.rx)) {
          if (!isTcp(r)) continue;
          const seg = tcpOf(r);
          const payload = seg.subarray((seg[12]! >> 4) * 4);
          if (payload.byteLength === 0) continue;
          got.set(rd32(seg, 4) - clientIsn - 1, payload);
          if (r.hdr.get("gso_type") === V.VIRTIO_NET_HDR_GSO_TCPV4 && !gso) {
            gso = r;
            mergedBuffers = r.hdr.get("num_buffers");
          }
        }
        return gso !== undefined;
      }, "a GSO frame", 10000);
      // A GSO super-frame: more than one MSS of payload, in several buffers, checksum left to the guest.
      const g = gso!;
      expect(g.frame.byteLength).toBeGreaterThan(1514);
      expect(g.hdr.get("gso_size")).toBeGreaterThan(0);
      expect(g.hdr.get("gso_size")).toBeLessThanOrEqual(1460);
      expect(g.hdr.get("flags") & V.VIRTIO_NET_HDR_F_NEEDS_CSUM).toBe(V.VIRTIO_NET_HDR_F_NEEDS_CSUM);
      expect(mergedBuffers).toBe(Math.ceil((g.frame.byteLength + NET_HDR_SIZE) / BUF));
      expect(mergedBuffers).toBeGreaterThan(1);
      // Every payload byte is the client's, at its offset in the stream.
      for (const [offset, payload] of got) {
        for (let i = 0; i < payload.byteLength; i++) {
          if (payload[i] !== (((offset + i) * 13 + 5) & 0xff)) throw new Error(`stream byte ${offset + i} is wrong`);
        }
      }
      sendTcp(tcp(GUEST_IP, HOST_IP, { sport: 8080, dport: sport, seq: ours + 1, ack: 0, flags: TCP_RST, window: 0 }));
    } finally {
      client.proc.kill();
    }
    void TCP_FIN;
  }, 20000);

  netnsTest("frames wait in the kernel while the guest has no buffers, and all arrive in order once it posts some", async () => {
    const s = realNet({ neighbour: true, maxPendingFrames: 4 });
    const count = 50;
    const sender = ns!.spawnBun(`
      const s = await Bun.udpSocket({});
      for (let i = 0; i < ${count}; i++) s.send(new TextEncoder().encode("datagram " + i), 9999, "${GUEST_IP.join(".")}");
      setTimeout(() => process.exit(0), 200);
    `);
    await sender.proc.exited;
    // The device holds at most 4; the others wait in the TAP's queue in the kernel.
    await waitFor(() => s.net.pendingFrames === 4, "4 waiting frames");
    await Bun.sleep(50);
    expect(s.net.pendingFrames).toBe(4);
    expect(s.net.counters.rxFrames).toBe(0);
    s.rx.postWritable(128, 2048);
    s.rx.kick();
    const texts: string[] = [];
    await waitFor(() => {
      for (const r of receivedFrames(s.rx)) {
        if (ethType(r.frame) === ETH_P_IP && ipProto(r.frame) === IPPROTO_UDP) {
          texts.push(new TextDecoder().decode(r.frame.subarray(ETH_HLEN + IP_HLEN + 8)));
        }
      }
      return texts.length === count;
    }, `${count} datagrams`);
    expect(texts).toEqual(Array.from({ length: count }, (_, i) => `datagram ${i}`));
    expect(s.net.counters.rxDropped).toBe(0);
  }, 20000);

  netnsTest("with Firecracker's fields the device opens the TAP host_dev_name itself", async () => {
    const ifname = uniqueName("ktap");
    const net = new VirtioNet({ ifaceId: "eth0", hostDevName: ifname, guestMac: GUEST_MAC, maxPendingFrames: 8 });
    open.push({ net });
    expect(net.backend).toBeInstanceOf(Tap);
    ns!.adopt(ifname);
    ns!.exec("sysctl", "-qw", `net.ipv6.conf.${ifname}.disable_ipv6=1`);
    ns!.ip("addr", "add", `${HOST_IP.join(".")}/24`, "dev", ifname);
    ns!.ip("link", "set", ifname, "up");
    const s = virtioSetup(net);
    const [rx, tx] = s.driver.init();
    rx!.postWritable(8, 2048);
    rx!.kick();
    tx!.send([vnetHdr(), arpRequest(macBytes(GUEST_MAC), GUEST_IP, HOST_IP)]);
    tx!.kick();
    const reply = await receive(rx!, (r) => ethType(r.frame) === ETH_P_ARP, "the ARP reply");
    expect([...reply.frame.subarray(0, 6)]).toEqual([...macBytes(GUEST_MAC)]);
  });

  netnsTest("closing the device stops the reader thread and removes the TAP", async () => {
    const s = realNet();
    const before = ns!.ip("link", "show");
    expect(before).toContain(s.ifname);
    const t0 = performance.now();
    await s.net.close();
    expect(performance.now() - t0).toBeLessThan(1000);
    expect(s.tap.closed).toBe(true);
    expect(ns!.ip("link", "show")).not.toContain(s.ifname);
    expect(TAP_MAX_FRAME).toBe(NET_MAX_FRAME);
  });
});
