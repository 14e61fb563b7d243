// MMDS (src/mmds/): the data store, V2 tokens and the HTTP answers on their own, then the whole path as a
// guest sees it: raw Ethernet frames written into a virtio-net device's transmit queue by the test driver
// (test/support/virtio-driver.ts), answered by the device's MMDS stack into its receive queue. A small TCP
// client here plays the guest's stack: ARP, the handshake, requests, FIN. Malformed frames aimed at the
// MMDS address must be dropped without breaking the device.

import { describe, expect, test } from "bun:test";
import { NET_HDR_SIZE, VirtioNet, type NetBackend } from "../src/devices/virtio/net.ts";
import {
  ARPOP_REPLY, buildArp, buildEthernet, buildIpv4, buildTcp, ETH_HLEN, ETH_P_ARP, ETH_P_IP, internetChecksum,
  IPPROTO_TCP, parseArp, parseEthernet, parseIpv4, parseIpv4Packet, parseTcp, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN,
  type TcpSegment,
} from "../src/mmds/frames.ts";
import { answer, parseRequest, respond } from "../src/mmds/http.ts";
import { MMDS_MAC, MmdsNetworkStack, isLinkLocalValid } from "../src/mmds/stack.ts";
import { MmdsError, MmdsStore, mergePatch } from "../src/mmds/store.ts";
import { RCV_BUF_MAX, RTO_MS, TcpServer } from "../src/mmds/tcp.ts";
import { TokenAuthority } from "../src/mmds/token.ts";
import { virtioSetup } from "./support/virtio-driver.ts";

const META = {
  latest: {
    "meta-data": { "ami-id": "ami-87654321", "reservation-id": "r-79054aef", network: { interfaces: { macs: { "02:29:96:8f:6a:2d": { "device-number": "13345342" } } } } },
    "user-data": "#cloud-config\n",
  },
  age: 43,
};

const text = (b: Uint8Array) => new TextDecoder().decode(b);
const bytes = (s: string) => new TextEncoder().encode(s);

/** A fake monotonic clock. */
function clock() {
  let now = 1000;
  return { now: () => now, advance: (ms: number) => void (now += ms) };
}

// ---- the store ----

describe("MmdsStore", () => {
  test("PUT, GET as JSON (sorted keys) and as IMDS listings", () => {
    const s = new MmdsStore();
    s.put(META);
    expect(s.get("/latest/meta-data/ami-id", "json")).toBe('"ami-87654321"');
    expect(s.get("/latest/meta-data/ami-id", "imds")).toBe("ami-87654321");
    expect(s.get("/latest/meta-data/", "imds")).toBe("ami-id\nnetwork/\nreservation-id");
    expect(s.get("/", "imds")).toBe("age\nlatest/");
    expect(s.get("/latest/meta-data/network/interfaces/macs/02:29:96:8f:6a:2d/device-number", "imds")).toBe("13345342");
    expect(s.serialized().startsWith('{"age":43,"latest":{"meta-data":{"ami-id"')).toBe(true);
    expect(() => s.get("/age", "imds")).toThrow(MmdsError.messages.UnsupportedValueType);
    expect(s.get("/age", "json")).toBe("43");
    expect(() => s.get("/nope", "json")).toThrow(MmdsError.messages.NotFound);
    s.imdsCompat = true;
    expect(s.get("/latest/meta-data/ami-id", "json")).toBe("ami-87654321");
  });

  test("PATCH is an RFC 7396 merge patch, refused before the first PUT", () => {
    const s = new MmdsStore();
    expect(() => s.patch({ a: 1 })).toThrow(MmdsError.messages.NotInitialized);
    expect(s.serialized()).toBe("{}");
    s.put({ name: { first: "John", second: "Doe" }, age: "43", phones: { home: { RO: "1" }, mobile: "2" } });
    s.patch({ name: { second: null, last: "Kennedy" }, age: "44", phones: { home: "3", mobile: { UK: "4" } } });
    expect(s.value()).toEqual({ name: { first: "John", last: "Kennedy" }, age: "44", phones: { home: "3", mobile: { UK: "4" } } });
    expect(mergePatch({ a: 1 }, [1, 2])).toEqual([1, 2]);
    // A "__proto__" key stays a key.
    const p = JSON.parse('{"__proto__": {"polluted": "yes"}}');
    s.patch(p);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect(s.get("/__proto__/polluted", "imds")).toBe("yes");
  });

  test("the size limit refuses a PUT or PATCH that would exceed it, changing nothing", () => {
    const s = new MmdsStore(100);
    s.put({ a: "x".repeat(80) });
    expect(() => s.put({ a: "x".repeat(100) })).toThrow(MmdsError.messages.DataStoreLimitExceeded);
    expect(() => s.patch({ b: "y".repeat(20) })).toThrow(MmdsError.messages.DataStoreLimitExceeded);
    expect(s.value()).toEqual({ a: "x".repeat(80) });
  });

  test("JSON pointer escapes and arrays", () => {
    const s = new MmdsStore();
    s.put({ "a/b": { "m~n": "v" }, list: ["x", "y"] });
    expect(s.get("/a~1b/m~0n", "imds")).toBe("v");
    expect(s.get("/list/1", "json")).toBe('"y"');
    expect(() => s.get("/list/01", "json")).toThrow();
  });
});

// ---- tokens ----

describe("TokenAuthority", () => {
  test("a token is valid until its TTL passes, only from the authority that made it", () => {
    const c = clock();
    const a = new TokenAuthority(c.now);
    const t = a.generate(60);
    expect(t.length).toBe(48);
    expect(a.isValid(t)).toBe(true);
    c.advance(59_999);
    expect(a.isValid(t)).toBe(true);
    c.advance(1);
    expect(a.isValid(t)).toBe(false);
    expect(new TokenAuthority(c.now).isValid(a.generate(60))).toBe(false);
  });

  test("forged, altered, oversized or garbage tokens are refused; TTLs outside 1..21600 throw", () => {
    const c = clock();
    const a = new TokenAuthority(c.now);
    const t = a.generate(1);
    // Push the expiry forward by a day: the MAC no longer matches.
    const raw = Buffer.from(t, "base64");
    raw.writeBigUInt64LE(raw.readBigUInt64LE(0) + 86_400_000n, 0);
    expect(a.isValid(raw.toString("base64"))).toBe(false);
    for (const bad of ["", "INVALID_TOKEN", "A".repeat(71), "!!!!", t.slice(0, 40)]) expect(a.isValid(bad)).toBe(false);
    for (const ttl of [0, 21601, -1, 1.5]) expect(() => a.generate(ttl)).toThrow("Invalid time to live value provided for token");
    expect(a.isValid(a.generate(21600))).toBe(true);
  });

  test("the instance id is bound into the token", () => {
    const a = new TokenAuthority();
    a.setAad("vm1");
    const t = a.generate(60);
    a.setAad("vm2");
    expect(a.isValid(t)).toBe(false);
  });
});

// ---- HTTP ----

function ask(store: MmdsStore, req: string) {
  const raw = text(answer(store, bytes(req)));
  const [head, body] = raw.split("\r\n\r\n") as [string, string];
  const lines = head.split("\r\n");
  const headers = new Map(lines.slice(1).map((l) => [l.slice(0, l.indexOf(":")).toLowerCase(), l.slice(l.indexOf(":") + 2)]));
  return { status: Number(lines[0]!.split(" ")[1]), statusLine: lines[0]!, headers, body, raw };
}

describe("MMDS HTTP", () => {
  test("a V1 GET: micro_http's response layout, plain text by default, JSON on request", () => {
    const s = new MmdsStore();
    s.put(META);
    const r = ask(s, "GET /latest/meta-data/ami-id HTTP/1.1\r\nHost: 169.254.169.254\r\nAccept: */*\r\n\r\n");
    expect(r.raw).toBe("HTTP/1.1 200 \r\nServer: Firecracker API\r\nConnection: keep-alive\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n\r\nami-87654321");
    const j = ask(s, "GET http://169.254.169.254//latest//meta-data HTTP/1.0\r\nAccept: application/json\r\n\r\n");
    expect(j.statusLine).toBe("HTTP/1.0 200 ");
    expect(j.headers.get("content-type")).toBe("application/json");
    expect(JSON.parse(j.body)["ami-id"]).toBe("ami-87654321");
    expect(ask(s, "GET /latest/nothing HTTP/1.1\r\n\r\n")).toMatchObject({ status: 404, body: "Resource not found: /latest/nothing." });
    expect(ask(s, "GET /age HTTP/1.1\r\n\r\n")).toMatchObject({ status: 501, body: "Cannot retrieve value. The value has an unsupported type." });
  });

  test("V2: a token from PUT /latest/api/token, then GETs with it; V1-style GETs are refused", () => {
    const s = new MmdsStore();
    s.put(META);
    s.version = "V2";
    const noToken = ask(s, "GET /latest/meta-data/ami-id HTTP/1.1\r\n\r\n");
    expect(noToken.status).toBe(401);
    expect(noToken.body).toStartWith("No MMDS token provided.");
    const put = ask(s, "PUT /latest/api/token HTTP/1.1\r\nX-metadata-token-ttl-seconds: 21600\r\n\r\n");
    expect(put.status).toBe(200);
    expect(put.headers.get("x-metadata-token-ttl-seconds")).toBe("21600");
    const token = put.body;
    const ok = ask(s, `GET /latest/meta-data/network/interfaces/macs/02:29:96:8f:6a:2d/device-number HTTP/1.1\r\nX-metadata-token: ${token}\r\n\r\n`);
    expect(ok).toMatchObject({ status: 200, body: "13345342" });
    // The EC2 spelling of the header works too, any case.
    expect(ask(s, `GET /latest/meta-data/ami-id HTTP/1.1\r\nx-AWS-ec2-metadata-token: ${token}\r\n\r\n`).status).toBe(200);
    expect(ask(s, "GET /latest HTTP/1.1\r\nX-metadata-token: INVALID_TOKEN\r\n\r\n")).toMatchObject({ status: 401, body: "MMDS token not valid." });
  });

  test("V2 with an expired token: 401", () => {
    const c = clock();
    const s = new MmdsStore(undefined, c.now);
    s.put(META);
    s.version = "V2";
    const token = ask(s, "PUT /latest/api/token HTTP/1.1\r\nX-metadata-token-ttl-seconds: 1\r\n\r\n").body;
    expect(ask(s, `GET /latest HTTP/1.1\r\nX-metadata-token: ${token}\r\n\r\n`).status).toBe(200);
    c.advance(1000);
    expect(ask(s, `GET /latest HTTP/1.1\r\nX-metadata-token: ${token}\r\n\r\n`).status).toBe(401);
  });

  test("PUT errors and other methods, with Firecracker's codes and messages", () => {
    const s = new MmdsStore();
    expect(ask(s, "PUT /latest/api/token HTTP/1.1\r\nX-Forwarded-For: 203.0.113.195\r\nX-metadata-token-ttl-seconds: 60\r\n\r\n"))
      .toMatchObject({ status: 400, body: "Invalid header. Reason: Unsupported header name. Key: X-Forwarded-For" });
    expect(ask(s, "PUT /token HTTP/1.1\r\nX-metadata-token-ttl-seconds: 60\r\n\r\n")).toMatchObject({ status: 404, body: "Resource not found: /token." });
    expect(ask(s, "PUT /latest/api/token HTTP/1.1\r\n\r\n").body).toStartWith("Token time to live value not found.");
    expect(ask(s, "PUT /latest/api/token HTTP/1.1\r\nX-metadata-token-ttl-seconds: application/json\r\n\r\n").body)
      .toBe("Invalid header. Reason: Invalid value. Key:X-metadata-token-ttl-seconds; Value:application/json");
    expect(ask(s, "PUT /latest/api/token HTTP/1.1\r\nX-metadata-token-ttl-seconds: 0\r\n\r\n").body)
      .toBe("Invalid time to live value provided for token: 0. Please provide a value between 1 and 21600.");
    const patch = ask(s, "PATCH /latest HTTP/1.1\r\n\r\n");
    expect(patch).toMatchObject({ status: 405, body: "Not allowed HTTP method." });
    expect(patch.headers.get("allow")).toBe("GET, PUT");
    expect(ask(s, "POST /latest HTTP/1.1\r\n\r\n").status).toBe(501);
    expect(ask(s, "GET /latest HTTP/2.0\r\n\r\n").status).toBe(501);
    expect(ask(s, "GET /latest HTTP/1.1\r\nContent-Length: 5\r\n\r\n").status).toBe(400);
    expect(ask(s, "GET x HTTP/1.1\r\n\r\n")).toMatchObject({ status: 400, body: "Invalid URI." });
    expect(ask(s, "garbage\r\n\r\n").status).toBe(400);
    expect("status" in parseRequest(Uint8Array.of(0xff, 0xfe, 0x0d, 0x0a, 0x0d, 0x0a))).toBe(true);
    expect(respond(s, { method: "GET", path: "/", version: "HTTP/1.1", accept: "application/json", custom: [] }).body).toBe("null");
  });
});

// ---- the TCP server alone, with timers moved by hand ----

describe("TcpServer", () => {
  test("retransmits an unacknowledged response on its timer, resets after too many", () => {
    const timers: (() => void)[] = [];
    const sent: { seq: number; flags: number; payload?: Uint8Array }[] = [];
    const srv = new TcpServer({
      port: 80,
      answer: () => bytes("HTTP/1.1 200 \r\n\r\nhello"),
      emit: (_ip, seg) => sent.push(seg),
      schedule: (fn) => (timers.push(fn), () => timers.splice(timers.indexOf(fn), 1)),
    });
    const seg = (o: Partial<TcpSegment>): TcpSegment => ({ srcPort: 4000, dstPort: 80, seq: 0, ack: 0, flags: 0, window: 65535, payload: new Uint8Array(0), ...o });
    srv.receive(1, seg({ seq: 100, flags: TCP_SYN }));
    const synAck = sent.pop()!;
    srv.receive(1, seg({ seq: 101, ack: synAck.seq + 1, flags: TCP_ACK, payload: bytes("GET / HTTP/1.1\r\n\r\n") }));
    const data = sent.pop()!;
    expect(text(data.payload!)).toEndWith("hello");
    expect(timers.length).toBe(1);
    timers.shift()!();
    const again = sent.pop()!;
    expect(again.seq).toBe(data.seq);
    expect(text(again.payload!)).toBe(text(data.payload!));
    for (let i = 0; i < 20 && timers.length; i++) timers.shift()!();
    expect(sent.at(-1)!.flags & TCP_RST).toBe(TCP_RST);
    expect(srv.conn).toBeUndefined();
    expect(RTO_MS).toBeGreaterThan(0);
  });
});

// ---- through virtio-net, as raw frames ----

const GUEST_MAC = Uint8Array.of(0x06, 0x00, 0x0a, 0x00, 0x02, 0x02);
const GUEST_IP = parseIpv4("10.0.2.2")!;
const MMDS_IP = parseIpv4("169.254.169.254")!;

class NullBackend implements NetBackend {
  readonly name = "null0";
  written: Uint8Array[] = [];
  write(frame: Uint8Array): void {
    this.written.push(frame.slice());
  }
  setOffload(): void {}
  startReading(): void {}
  releaseFrame(): void {}
  close(): void {}
}

/** A guest's view: frames out through the TX queue, frames in from the RX queue. */
function guest(opts: { store?: MmdsStore; ipv4?: string } = {}) {
  const store = opts.store ?? new MmdsStore();
  const backend = new NullBackend();
  const net = new VirtioNet(backend, { queueSize: 64 });
  const stack = new MmdsNetworkStack(store, { ipv4: opts.ipv4 });
  net.setMmds(stack);
  const s = virtioSetup(net);
  const [rx, tx] = s.driver.init();
  rx!.postWritable(48, 2048);
  rx!.kick();
  const hdr = new Uint8Array(NET_HDR_SIZE);
  return {
    store, backend, net, stack, s,
    send(frame: Uint8Array) {
      tx!.send([hdr, frame]);
      tx!.kick();
      tx!.takeUsed();
    },
    /** Frames the device delivered since the last call (Ethernet, header stripped); receive buffers re-posted. */
    received(): Uint8Array[] {
      const out = rx!.takeUsedData().map((u) => u.data.subarray(NET_HDR_SIZE));
      if (out.length) {
        rx!.postWritable(out.length, 2048);
        rx!.kick();
      }
      return out;
    },
  };
}

type Guest = ReturnType<typeof guest>;

function tcpFrame(g: Guest, o: { sport: number; dport?: number; seq: number; ack: number; flags: number; payload?: Uint8Array; mss?: number; window?: number; dst?: number }) {
  const dst = o.dst ?? MMDS_IP;
  const seg = buildTcp(GUEST_IP, dst, { srcPort: o.sport, dstPort: o.dport ?? 80, seq: o.seq, ack: o.ack, flags: o.flags, window: o.window ?? 64240, mss: o.mss, payload: o.payload });
  return buildEthernet(MMDS_MAC, GUEST_MAC, ETH_P_IP, buildIpv4(GUEST_IP, dst, IPPROTO_TCP, 1, seg));
}

/** Parse a reply frame as TCP, checking that its IPv4 and TCP checksums verify. */
function tcpReply(f: Uint8Array): TcpSegment {
  const e = parseEthernet(f)!;
  expect(e.ethertype).toBe(ETH_P_IP);
  expect(Array.from(e.src)).toEqual(Array.from(MMDS_MAC));
  expect(Array.from(e.dst)).toEqual(Array.from(GUEST_MAC));
  const ip = parseIpv4Packet(e.payload)!;
  expect(internetChecksum(e.payload.subarray(0, 20))).toBe(0);
  const pseudo = Uint8Array.of(...be32(ip.src), ...be32(ip.dst), 0, IPPROTO_TCP, ip.payload.byteLength >> 8, ip.payload.byteLength & 0xff);
  expect(internetChecksum(pseudo, ip.payload)).toBe(0);
  return parseTcp(ip.payload)!;
}
function be32(n: number) {
  return [(n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff];
}

let nextPort = 40000;

/** One HTTP exchange over a fresh connection, with FIN at the end: returns the response text. */
function httpOver(g: Guest, request: string): string {
  const sport = nextPort++;
  let seq = 1000;
  g.send(tcpFrame(g, { sport, seq, ack: 0, flags: TCP_SYN, mss: 1460 }));
  const [synAckFrame, ...rest] = g.received();
  expect(rest.length).toBe(0);
  const synAck = tcpReply(synAckFrame!);
  expect(synAck.flags).toBe(TCP_SYN | TCP_ACK);
  expect(synAck.ack).toBe(seq + 1);
  expect(synAck.mss).toBe(1460);
  seq++;
  let ack = (synAck.seq + 1) >>> 0;
  const req = bytes(request);
  g.send(tcpFrame(g, { sport, seq, ack, flags: TCP_ACK | TCP_PSH, payload: req }));
  seq += req.byteLength;
  const chunks: Uint8Array[] = [];
  for (let round = 0; round < 100; round++) {
    const segs = g.received().map(tcpReply);
    if (segs.length === 0) break;
    for (const s of segs) {
      expect(s.seq).toBe(ack);
      if (s.payload.byteLength) chunks.push(s.payload.slice());
      ack = (ack + s.payload.byteLength) >>> 0;
    }
    g.send(tcpFrame(g, { sport, seq, ack, flags: TCP_ACK }));
  }
  // Close: our FIN, its FIN, our last ACK.
  g.send(tcpFrame(g, { sport, seq, ack, flags: TCP_FIN | TCP_ACK }));
  seq++;
  const fin = g.received().map(tcpReply);
  expect(fin.length).toBe(1);
  expect(fin[0]!.flags & TCP_FIN).toBe(TCP_FIN);
  expect(fin[0]!.ack).toBe(seq);
  g.send(tcpFrame(g, { sport, seq, ack: (fin[0]!.seq + 1) >>> 0, flags: TCP_ACK }));
  expect(g.stack.tcp.conn).toBeUndefined();
  return text(Buffer.concat(chunks));
}

const bodyOf = (response: string) => response.slice(response.indexOf("\r\n\r\n") + 4);
const statusOf = (response: string) => Number(response.split(" ")[1]);

describe("MMDS through virtio-net (raw frames)", () => {
  test("ARP: a request for the MMDS address is answered with MMDS's MAC, not sent to the host", () => {
    const g = guest();
    const arp = buildArp({ op: 1, sha: GUEST_MAC, spa: GUEST_IP, tha: new Uint8Array(6), tpa: MMDS_IP });
    g.send(buildEthernet(new Uint8Array(6).fill(0xff), GUEST_MAC, ETH_P_ARP, arp));
    const [reply] = g.received();
    const e = parseEthernet(reply!)!;
    expect(e.ethertype).toBe(ETH_P_ARP);
    expect(Array.from(e.dst)).toEqual(Array.from(GUEST_MAC));
    const a = parseArp(e.payload)!;
    expect(a.op).toBe(ARPOP_REPLY);
    expect(Array.from(a.sha)).toEqual(Array.from(MMDS_MAC));
    expect(a.spa).toBe(MMDS_IP);
    expect(a.tpa).toBe(GUEST_IP);
    expect(g.backend.written.length).toBe(0);
    // ARP for another address is the host's.
    g.send(buildEthernet(new Uint8Array(6).fill(0xff), GUEST_MAC, ETH_P_ARP, buildArp({ op: 1, sha: GUEST_MAC, spa: GUEST_IP, tha: new Uint8Array(6), tpa: parseIpv4("10.0.2.1")! })));
    expect(g.backend.written.length).toBe(1);
    expect(g.received().length).toBe(0);
  });

  test("V1: handshake, GET a key, FIN; JSON with Accept", () => {
    const g = guest();
    g.store.put(META);
    const r = httpOver(g, "GET /latest/meta-data/ami-id HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n");
    expect(statusOf(r)).toBe(200);
    expect(bodyOf(r)).toBe("ami-87654321");
    expect(bodyOf(httpOver(g, "GET /latest/meta-data HTTP/1.1\r\nAccept: application/json\r\n\r\n"))).toStartWith('{"ami-id":"ami-87654321"');
    expect(bodyOf(httpOver(g, "GET /latest/ HTTP/1.1\r\n\r\n"))).toBe("meta-data/\nuser-data");
    expect(g.backend.written.length).toBe(0);
  });

  test("V2: token, then a nested key; V1-style GET refused; bad and expired tokens refused", () => {
    const c = clock();
    const g = guest({ store: new MmdsStore(undefined, c.now) });
    g.store.put(META);
    g.store.version = "V2";
    const tok = httpOver(g, "PUT /latest/api/token HTTP/1.1\r\nX-metadata-token-ttl-seconds: 60\r\n\r\n");
    expect(statusOf(tok)).toBe(200);
    const token = bodyOf(tok);
    const nested = httpOver(g, `GET /latest/meta-data/network/interfaces/macs/02:29:96:8f:6a:2d/device-number HTTP/1.1\r\nX-metadata-token: ${token}\r\n\r\n`);
    expect(statusOf(nested)).toBe(200);
    expect(bodyOf(nested)).toBe("13345342");
    expect(statusOf(httpOver(g, "GET /latest/meta-data/ami-id HTTP/1.1\r\n\r\n"))).toBe(401);
    expect(statusOf(httpOver(g, "GET /latest/meta-data/ami-id HTTP/1.1\r\nX-metadata-token: x\r\n\r\n"))).toBe(401);
    c.advance(60_000);
    expect(statusOf(httpOver(g, `GET /latest/meta-data/ami-id HTTP/1.1\r\nX-metadata-token: ${token}\r\n\r\n`))).toBe(401);
  });

  test("a response larger than one segment arrives whole, in MSS-sized segments", () => {
    const g = guest();
    const big = "x".repeat(20_000);
    g.store.put({ big });
    const r = httpOver(g, "GET /big HTTP/1.1\r\n\r\n");
    expect(bodyOf(r)).toBe(big);
  });

  test("a custom ipv4_address; the default address is then just another host", () => {
    const g = guest({ ipv4: "169.254.170.2" });
    g.store.put({ a: "b" });
    g.send(tcpFrame(g, { sport: 1, seq: 1, ack: 0, flags: TCP_SYN, dst: MMDS_IP }));
    expect(g.backend.written.length).toBe(1);
    expect(isLinkLocalValid("169.254.170.2")).toBe(true);
    for (const bad of ["169.254.0.1", "169.254.255.1", "10.0.0.1", "169.254.1"]) expect(isLinkLocalValid(bad)).toBe(false);
  });

  test("RST for a segment to no connection, to another port, and for an over-long request", () => {
    const g = guest();
    g.send(tcpFrame(g, { sport: 5, seq: 7, ack: 99, flags: TCP_ACK }));
    const [r1] = g.received().map(tcpReply);
    expect(r1!.flags & TCP_RST).toBe(TCP_RST);
    expect(r1!.seq).toBe(99);
    g.send(tcpFrame(g, { sport: 5, dport: 8080, seq: 7, ack: 0, flags: TCP_SYN }));
    const [r2] = g.received().map(tcpReply);
    expect(r2!.flags).toBe(TCP_RST | TCP_ACK);
    expect(r2!.ack).toBe(8);
    // A request with no end, bigger than the receive buffer.
    g.send(tcpFrame(g, { sport: 6, seq: 10, ack: 0, flags: TCP_SYN }));
    const synAck = g.received().map(tcpReply)[0]!;
    let seq = 11;
    const chunk = bytes("a".repeat(1000));
    let reset = false;
    for (let i = 0; i < 4 && !reset; i++) {
      g.send(tcpFrame(g, { sport: 6, seq, ack: synAck.seq + 1, flags: TCP_ACK, payload: chunk }));
      seq += chunk.byteLength;
      reset = g.received().map(tcpReply).some((s) => s.flags & TCP_RST);
    }
    expect(reset).toBe(true);
    expect(RCV_BUF_MAX).toBe(2500);
    expect(g.stack.tcp.conn).toBeUndefined();
  });

  test("malformed frames for the MMDS address are dropped: no crash, no reply, the device keeps working", () => {
    const g = guest();
    g.store.put({ a: "b" });
    const ipHdr = (mut: (p: Uint8Array) => void) => {
      const p = buildIpv4(GUEST_IP, MMDS_IP, IPPROTO_TCP, 1, buildTcp(GUEST_IP, MMDS_IP, { srcPort: 1, dstPort: 80, seq: 1, ack: 0, flags: TCP_SYN, window: 1000 }));
      mut(p);
      return buildEthernet(MMDS_MAC, GUEST_MAC, ETH_P_IP, p);
    };
    const bad = [
      ipHdr((p) => (p[0] = 0x44)), // IHL 4
      ipHdr((p) => (p[0] = 0x4f)), // IHL past the packet
      ipHdr((p) => (p[2] = 0xff)), // total length past the frame
      ipHdr((p) => (p[6] = 0x20)), // a fragment (MF)
      ipHdr((p) => (p[9] = 17)), // UDP
      ipHdr((p) => (p[20 + 12] = 0xf0)), // TCP data offset 60 > segment
      ipHdr((p) => (p[20 + 12] = 0x10)), // TCP data offset 4
      ipHdr((p) => p.fill(0, 21)), // TCP header zeroed
      buildEthernet(MMDS_MAC, GUEST_MAC, ETH_P_IP, buildIpv4(GUEST_IP, MMDS_IP, IPPROTO_TCP, 1, new Uint8Array(5))),
    ];
    for (const f of bad) g.send(f);
    // Truncations of a valid SYN at every length.
    const good = tcpFrame(g, { sport: 9, seq: 1, ack: 0, flags: TCP_SYN });
    for (let n = ETH_HLEN; n < good.byteLength; n++) g.send(good.subarray(0, n));
    // Random bytes behind an IPv4 header to the MMDS address, and random TCP headers.
    let seed = 12345;
    const rnd = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) >> 16) & 0xff;
    for (let i = 0; i < 300; i++) {
      const body = Uint8Array.from({ length: rnd() }, rnd);
      g.send(buildEthernet(MMDS_MAC, GUEST_MAC, ETH_P_IP, buildIpv4(GUEST_IP, MMDS_IP, IPPROTO_TCP, i, body)));
      const junk = Uint8Array.from({ length: 14 + rnd() }, rnd);
      g.send(junk);
    }
    // Replies were at most RSTs and SYN-ACKs; nothing for MMDS reached the host; the device still answers.
    for (let got = g.received(); got.length; got = g.received()) {
      for (const f of got) {
        const e = parseEthernet(f)!;
        if (e.ethertype === ETH_P_IP) expect(tcpReply(f).flags & (TCP_RST | TCP_SYN)).not.toBe(0);
      }
    }
    expect(g.backend.written.every((f) => parseIpv4Packet(f.subarray(NET_HDR_SIZE + ETH_HLEN))?.dst !== MMDS_IP)).toBe(true);
    expect(g.stack.counters.rxDropped).toBeGreaterThan(5);
    expect(g.s.errors).toEqual([]);
    expect(bodyOf(httpOver(g, "GET /a HTTP/1.1\r\n\r\n"))).toBe("b");
  });

  test("no MMDS on an interface: frames for 169.254.169.254 go to the host", () => {
    const g = guest();
    g.net.setMmds(undefined);
    g.send(tcpFrame(g, { sport: 1, seq: 1, ack: 0, flags: TCP_SYN }));
    expect(g.backend.written.length).toBe(1);
    expect(g.received().length).toBe(0);
  });
});

describe("MMDS metrics", () => {
  test("the store counts frames, connections and token use by Firecracker's names", () => {
    const g = guest();
    g.store.put({ a: "b" });
    httpOver(g, "GET /a HTTP/1.1\r\n\r\n");
    httpOver(g, "GET /a HTTP/1.1\r\nX-metadata-token: nope\r\n\r\n");
    const c = g.store.counters;
    expect(c.connections_created).toBe(2);
    expect(c.connections_destroyed).toBe(2);
    expect(c.rx_no_token).toBe(1);
    expect(c.rx_invalid_token).toBe(1);
    expect(c.rx_accepted).toBeGreaterThanOrEqual(10);
    expect(c.tx_frames).toBeGreaterThanOrEqual(6);
    expect(c.tx_bytes).toBeGreaterThan(c.tx_frames * 54);
    g.send(buildEthernet(MMDS_MAC, GUEST_MAC, ETH_P_IP, buildIpv4(GUEST_IP, MMDS_IP, 17, 1, new Uint8Array(8))));
    expect(c.rx_accepted_unusual).toBe(1);
  });
});
