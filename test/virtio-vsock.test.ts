// virtio-vsock with Firecracker's host side, through the test driver and real Unix sockets: connections in
// both directions with data, credit-based flow control and shutdown, then a hostile guest (bad headers,
// lengths past the limits, unknown operations, credit abuse) that must get RSTs or drops, never a crash,
// a hang, or unbounded buffering.

import { afterAll, afterEach, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Socket, TCPSocketListener } from "bun";
import { StructView } from "../src/kvm/struct.ts";
import * as V from "../src/devices/virtio/uapi.ts";
import { VSOCK_BUF_ALLOC, VSOCK_CREDIT_UPDATE_THRESHOLD, VSOCK_MAX_PKT_DATA } from "../src/devices/virtio/vsock-connection.ts";
import { VSOCK_HDR_SIZE, VSOCK_MAX_PENDING_RST, VirtioVsock } from "../src/devices/virtio/vsock.ts";
import { virtioSetup, waitFor } from "./support/virtio-driver.ts";

const dir = mkdtempSync(join(tmpdir(), "kindling-vsock-"));
const GUEST_CID = 3;
const RX_BUF = VSOCK_HDR_SIZE + 4096;
let paths = 0;
const devices: VirtioVsock[] = [];
const listeners: TCPSocketListener<unknown>[] = [];

afterEach(() => {
  for (const d of devices.splice(0)) d.close();
  for (const l of listeners.splice(0)) l.stop(true);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

// ---- the guest side: packets through the test driver ----

interface Packet {
  src_cid: number;
  dst_cid: number;
  src_port: number;
  dst_port: number;
  len: number;
  type: number;
  op: number;
  flags: number;
  buf_alloc: number;
  fwd_cnt: number;
  data: Uint8Array;
}

const OP_NAMES: Record<number, string> = {
  1: "REQUEST", 2: "RESPONSE", 3: "RST", 4: "SHUTDOWN", 5: "RW", 6: "CREDIT_UPDATE", 7: "CREDIT_REQUEST",
};

function setupVsock(opts: { rxBuffers?: number } = {}) {
  const udsPath = join(dir, `v${paths++}.sock`);
  const logs: string[] = [];
  const vsock = new VirtioVsock({ guestCid: GUEST_CID, udsPath, queueSize: 128, log: (m) => logs.push(m) });
  devices.push(vsock);
  const s = virtioSetup(vsock);
  const [rx, tx, ev] = s.driver.init();
  // Linux keeps the rx queue full of 4 KiB buffers and a few event buffers posted.
  rx!.postWritable(opts.rxBuffers ?? 64, RX_BUF);
  rx!.kick();
  ev!.postWritable(4, 4);
  ev!.kick();
  const got: Packet[] = [];

  /** Packets the device put in the rx queue since the last look; the buffers are posted again. */
  function collect(): Packet[] {
    const used = rx!.takeUsedData();
    for (const u of used) {
      const h = new StructView(V.virtio_vsock_hdr, u.data.slice(0, VSOCK_HDR_SIZE));
      const p = Object.fromEntries(V.virtio_vsock_hdr.fields.map((f) => [f.name, h.get(f.name)])) as unknown as Packet;
      p.data = u.data.slice(VSOCK_HDR_SIZE);
      expect(p.data.byteLength).toBe(p.len);
      got.push(p);
    }
    if (used.length > 0) {
      rx!.postWritable(used.length, RX_BUF);
      rx!.kick();
    }
    return got;
  }

  /** Wait for the next packet with operation `op` that `match` accepts (others are kept in `got`). */
  async function expectPacket(op: number, what = OP_NAMES[op] ?? `op ${op}`, match: (p: Packet) => boolean = () => true): Promise<Packet> {
    let p: Packet | undefined;
    await waitFor(() => {
      collect();
      const i = got.findIndex((x) => x.op === op && match(x));
      if (i >= 0) p = got.splice(i, 1)[0];
      return p !== undefined;
    }, what);
    return p!;
  }

  /** Send one packet from the guest (header and payload in two descriptors, as Linux does). */
  function send(fields: Partial<Packet>, data = new Uint8Array(0)): void {
    const h = new StructView(V.virtio_vsock_hdr).assign({
      src_cid: GUEST_CID, dst_cid: V.VMADDR_CID_HOST, src_port: 0, dst_port: 0, len: data.byteLength,
      type: V.VIRTIO_VSOCK_TYPE_STREAM, op: 0, flags: 0, buf_alloc: 64 * 1024, fwd_cnt: 0,
      ...(fields as Record<string, number>),
    });
    tx!.send(data.byteLength ? [h.bytes, data] : [h.bytes]);
    tx!.kick();
    tx!.takeUsed();
  }

  return { ...s, vsock, udsPath, rx: rx!, tx: tx!, got, collect, expectPacket, send, logs };
}

/** A host program's end of a Unix socket connection, collecting what it reads. */
interface HostEnd {
  socket: Socket<undefined>;
  text: () => string;
  bytes: () => Uint8Array;
  ended: () => boolean;
  closed: () => boolean;
}

function collector() {
  const chunks: Uint8Array[] = [];
  let ended = false;
  let closed = false;
  const bytes = () => {
    const out = new Uint8Array(chunks.reduce((n, c) => n + c.byteLength, 0));
    let at = 0;
    for (const c of chunks) {
      out.set(c, at);
      at += c.byteLength;
    }
    return out;
  };
  return {
    handlers: {
      data: (_s: Socket<undefined>, d: Uint8Array) => void chunks.push(new Uint8Array(d)),
      end: () => void (ended = true),
      close: () => void (closed = true),
      error: () => {},
    },
    view: { text: () => new TextDecoder().decode(bytes()), bytes, ended: () => ended, closed: () => closed },
  };
}

async function hostConnect(path: string): Promise<HostEnd> {
  const c = collector();
  const socket = await Bun.connect({ unix: path, allowHalfOpen: true, socket: c.handlers });
  return { socket, ...c.view };
}

/** A host program listening at `path` (for guest-initiated connections); `accepted` fills as they come. */
function hostListen(path: string): { accepted: HostEnd[] } {
  const accepted: HostEnd[] = [];
  type Col = ReturnType<typeof collector>;
  const listener = Bun.listen<Col>({
    unix: path,
    allowHalfOpen: true,
    socket: {
      open(s) {
        s.data = collector();
        accepted.push({ socket: s as unknown as Socket<undefined>, ...s.data.view });
      },
      data: (s, d) => s.data.handlers.data(s as unknown as Socket<undefined>, d),
      end: (s) => s.data.handlers.end(),
      close: (s) => s.data.handlers.close(),
      error() {},
    },
  });
  listeners.push(listener as unknown as TCPSocketListener<unknown>);
  return { accepted };
}

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);
const pattern = (n: number, seed = 0) => Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff);

type Setup = ReturnType<typeof setupVsock>;

/** Host connects, asks for guest port `port`; the guest accepts. Returns both ends' addresses. */
async function hostInitiated(s: Setup, port: number, guestBufAlloc = 64 * 1024) {
  const host = await hostConnect(s.udsPath);
  host.socket.write(`CONNECT ${port}\n`);
  const req = await s.expectPacket(V.VIRTIO_VSOCK_OP_REQUEST);
  s.send({ op: V.VIRTIO_VSOCK_OP_RESPONSE, src_port: port, dst_port: req.src_port, buf_alloc: guestBufAlloc });
  await waitFor(() => host.text().includes("\n"), "the OK line");
  return { host, req, hostPort: req.src_port, guestPort: port };
}

describe("device", () => {
  test("identifies as a socket device with the guest's CID in config space and three queues", () => {
    const s = setupVsock();
    expect(s.driver.read32(V.VIRTIO_MMIO_DEVICE_ID)).toBe(V.VIRTIO_ID_VSOCK);
    expect(s.dev.offeredFeatures & V.bit(V.VIRTIO_VSOCK_F_SEQPACKET)).toBe(0n);
    const cfg = s.driver.readConfig(0, 8);
    expect(new DataView(cfg.buffer).getBigUint64(0, true)).toBe(BigInt(GUEST_CID));
    expect(s.driver.queues.length).toBe(3);
    expect(V.virtio_vsock_hdr.size).toBe(44);
    expect(V.virtio_vsock_hdr.offsetOf("op")).toBe(30);
  });

  test("bad options are refused with a message naming the problem", () => {
    expect(() => new VirtioVsock({ guestCid: 2, udsPath: join(dir, "x.sock") })).toThrow("guest_cid 2");
    expect(() => new VirtioVsock({ guestCid: 2 ** 32 - 1, udsPath: join(dir, "x.sock") })).toThrow("VMADDR_CID_ANY");
    const stale = join(dir, "stale.sock");
    writeFileSync(stale, "");
    expect(() => new VirtioVsock({ guestCid: 3, udsPath: stale })).toThrow(`cannot listen on ${stale}`);
  });

  test("the host-side socket is created mode 0600 whatever the process umask", () => {
    const old = process.umask(0);
    try {
      const udsPath = join(dir, `mode${paths++}.sock`);
      const v = new VirtioVsock({ guestCid: GUEST_CID, udsPath });
      devices.push(v);
      expect(statSync(udsPath).mode & 0o777).toBe(0o600);
      expect(process.umask()).toBe(0);
    } finally {
      process.umask(old);
    }
  });

  test("close stops listening and removes the socket file", async () => {
    const s = setupVsock();
    expect(existsSync(s.udsPath)).toBe(true);
    s.vsock.close();
    expect(existsSync(s.udsPath)).toBe(false);
    await expect(Bun.connect({ unix: s.udsPath, socket: { data() {} } })).rejects.toThrow();
  });
});

describe("host-initiated connections (CONNECT <port>)", () => {
  test("handshake, data both ways, guest credit respected, then the guest's shutdown ends in RST", async () => {
    const s = setupVsock();
    const { host, req, hostPort, guestPort } = await hostInitiated(s, 5000, 6000);
    expect(req).toMatchObject({ src_cid: 2, dst_cid: GUEST_CID, dst_port: 5000, type: V.VIRTIO_VSOCK_TYPE_STREAM, buf_alloc: VSOCK_BUF_ALLOC, fwd_cnt: 0 });
    expect(hostPort).toBeGreaterThanOrEqual(2 ** 30);
    expect(host.text()).toBe(`OK ${hostPort}\n`);
    const addr = { src_port: guestPort, dst_port: hostPort };

    // host -> guest
    host.socket.write("hello guest");
    const rw = await s.expectPacket(V.VIRTIO_VSOCK_OP_RW);
    expect(dec(rw.data)).toBe("hello guest");
    expect(rw).toMatchObject({ src_port: hostPort, dst_port: guestPort });

    // guest -> host
    s.send({ ...addr, op: V.VIRTIO_VSOCK_OP_RW, buf_alloc: 6000, fwd_cnt: 11 }, enc("hello host"));
    await waitFor(() => host.text().endsWith("hello host"), "the guest's bytes at the host");

    // 20000 bytes from the host; the guest offers 6000 and has consumed the 11 it got: exactly 6000 may go
    // (not a multiple of the 4096-byte receive buffers, so a device that ignored credit would send more).
    const big = pattern(20000);
    host.socket.write(big);
    let delivered = 0;
    const received: Uint8Array[] = [];
    const takeRw = () => {
      const rw = s.collect().filter((p) => p.op === V.VIRTIO_VSOCK_OP_RW);
      s.got.splice(0, s.got.length, ...s.got.filter((p) => p.op !== V.VIRTIO_VSOCK_OP_RW));
      return rw;
    };
    await waitFor(() => {
      for (const p of takeRw()) {
        received.push(p.data);
        delivered += p.len;
      }
      return delivered >= 6000;
    }, "the first 6000 bytes");
    await Bun.sleep(30);
    s.collect();
    expect(s.got.filter((p) => p.op === V.VIRTIO_VSOCK_OP_RW).length).toBe(0);
    expect(delivered).toBe(6000);
    // With data waiting and no credit, the device asks for some.
    const creq = await s.expectPacket(V.VIRTIO_VSOCK_OP_CREDIT_REQUEST);
    expect(creq.dst_port).toBe(guestPort);
    // The guest consumed everything: its window reopens, the rest flows.
    s.send({ ...addr, op: V.VIRTIO_VSOCK_OP_CREDIT_UPDATE, buf_alloc: 64 * 1024, fwd_cnt: 11 + 6000 });
    await waitFor(() => {
      for (const p of takeRw()) received.push(p.data);
      return received.reduce((n, r) => n + r.byteLength, 0) === 20000;
    }, "the rest of the 20000 bytes");
    const all = new Uint8Array(20000);
    let at = 0;
    for (const r of received) {
      all.set(r, at);
      at += r.byteLength;
    }
    expect(Buffer.compare(all, big)).toBe(0);

    // The guest closes both ways: the host sees EOF, the guest gets RST, the connection is gone.
    s.send({ ...addr, op: V.VIRTIO_VSOCK_OP_SHUTDOWN, flags: V.VIRTIO_VSOCK_SHUTDOWN_RCV | V.VIRTIO_VSOCK_SHUTDOWN_SEND });
    const rst = await s.expectPacket(V.VIRTIO_VSOCK_OP_RST);
    expect(rst).toMatchObject({ src_port: hostPort, dst_port: guestPort });
    await waitFor(() => host.closed() || host.ended(), "the host socket to end");
    expect(s.vsock.connections.size).toBe(0);
    expect(s.errors).toEqual([]);
  });

  test("the host half-closes: SHUTDOWN(SEND) after its last byte; the guest can still answer", async () => {
    const s = setupVsock();
    const { host, hostPort, guestPort } = await hostInitiated(s, 5001);
    const addr = { src_port: guestPort, dst_port: hostPort };
    host.socket.write("request");
    host.socket.shutdown();
    const rw = await s.expectPacket(V.VIRTIO_VSOCK_OP_RW);
    expect(dec(rw.data)).toBe("request");
    const shut = await s.expectPacket(V.VIRTIO_VSOCK_OP_SHUTDOWN);
    expect(shut.flags).toBe(V.VIRTIO_VSOCK_SHUTDOWN_SEND);
    // Order: the data came first.
    s.send({ ...addr, op: V.VIRTIO_VSOCK_OP_RW }, enc("reply"));
    await waitFor(() => host.text().endsWith("reply"), "the reply at the host");
    s.send({ ...addr, op: V.VIRTIO_VSOCK_OP_SHUTDOWN, flags: 3 });
    await s.expectPacket(V.VIRTIO_VSOCK_OP_RST);
    await waitFor(() => host.closed() || host.ended(), "the host socket to end");
  });

  test("the host closes: SHUTDOWN(RCV|SEND); the guest's RST ends the connection", async () => {
    const s = setupVsock();
    const { host, hostPort, guestPort } = await hostInitiated(s, 5002);
    host.socket.terminate();
    // (A SHUTDOWN(SEND) for the EOF may come first; then both directions are shut.)
    const both = V.VIRTIO_VSOCK_SHUTDOWN_RCV | V.VIRTIO_VSOCK_SHUTDOWN_SEND;
    const shut = await s.expectPacket(V.VIRTIO_VSOCK_OP_SHUTDOWN, "SHUTDOWN(RCV|SEND)", (p) => p.flags === both);
    expect(shut.dst_port).toBe(guestPort);
    expect(s.vsock.connections.size).toBe(1);
    s.send({ src_port: guestPort, dst_port: hostPort, op: V.VIRTIO_VSOCK_OP_RST });
    expect(s.vsock.connections.size).toBe(0);
  });

  test("a host program that connects before the driver is up gets its connection once it is", async () => {
    const udsPath = join(dir, `v${paths++}.sock`);
    const vsock = new VirtioVsock({ guestCid: GUEST_CID, udsPath });
    devices.push(vsock);
    const s = virtioSetup(vsock);
    const host = await hostConnect(udsPath);
    host.socket.write("CONNECT 5010\n");
    await Bun.sleep(20);
    // Linux's probe starts with a reset: the waiting connection survives it.
    const [rx, tx] = s.driver.init();
    rx!.postWritable(4, RX_BUF);
    rx!.kick();
    await waitFor(() => rx!.usedIdx() === 1, "the REQUEST");
    const [u] = rx!.takeUsedData();
    const req = new StructView(V.virtio_vsock_hdr, u!.data.slice(0, VSOCK_HDR_SIZE));
    expect(req.get("op")).toBe(V.VIRTIO_VSOCK_OP_REQUEST);
    expect(req.get("dst_port")).toBe(5010);
    void tx;
  });

  test("the guest refuses (RST): the host socket is closed without an OK", async () => {
    const s = setupVsock();
    const host = await hostConnect(s.udsPath);
    host.socket.write("CONNECT 7\n");
    const req = await s.expectPacket(V.VIRTIO_VSOCK_OP_REQUEST);
    s.send({ src_port: 7, dst_port: req.src_port, op: V.VIRTIO_VSOCK_OP_RST });
    await waitFor(() => host.closed(), "the host socket to close");
    expect(host.text()).toBe("");
  });

  test("a guest RST on an open connection closes the host socket", async () => {
    const s = setupVsock();
    const { host, hostPort, guestPort } = await hostInitiated(s, 5003);
    s.send({ src_port: guestPort, dst_port: hostPort, op: V.VIRTIO_VSOCK_OP_RST });
    await waitFor(() => host.closed(), "the host socket to close");
    expect(s.vsock.connections.size).toBe(0);
  });

  test("bytes written right after the CONNECT line reach the guest after the handshake", async () => {
    const s = setupVsock();
    const host = await hostConnect(s.udsPath);
    host.socket.write("CONNECT 5004\nearly bytes");
    const req = await s.expectPacket(V.VIRTIO_VSOCK_OP_REQUEST);
    await Bun.sleep(20);
    expect(s.collect().some((p) => p.op === V.VIRTIO_VSOCK_OP_RW)).toBe(false);
    s.send({ op: V.VIRTIO_VSOCK_OP_RESPONSE, src_port: 5004, dst_port: req.src_port });
    expect(dec((await s.expectPacket(V.VIRTIO_VSOCK_OP_RW)).data)).toBe("early bytes");
  });

  test("a malformed CONNECT line closes the host socket; nothing reaches the guest", async () => {
    const s = setupVsock();
    for (const line of ["HELLO 5\n", "CONNECT\n", "CONNECT -1\n", "CONNECT 99999999999\n", "CONNECT 5".padEnd(40, "5")]) {
      const host = await hostConnect(s.udsPath);
      host.socket.write(line);
      await waitFor(() => host.closed() || host.ended(), `the host socket to close after ${JSON.stringify(line)}`);
    }
    await Bun.sleep(20);
    expect(s.collect()).toEqual([]);
    expect(s.vsock.connections.size).toBe(0);
  });

  test("a host program that writes faster than the guest reads is paused, not buffered without bound", async () => {
    const s = setupVsock({ rxBuffers: 0 });
    const { host } = await (async () => {
      // The guest has no receive buffers yet: post a few for the handshake only.
      s.rx.postWritable(2, RX_BUF);
      s.rx.kick();
      return hostInitiated(s, 5005);
    })();
    const chunk = new Uint8Array(64 * 1024);
    let written = 0;
    for (let i = 0; i < 64; i++) {
      const n = host.socket.write(chunk);
      if (n <= 0) break;
      written += n;
      await Bun.sleep(0);
    }
    await Bun.sleep(50);
    const conn = [...s.vsock.connections.values()][0]!;
    // What the device holds stays near its limit; the rest waits in the host program (write returned short).
    expect(conn.fromHostBytes).toBeLessThanOrEqual(512 * 1024);
    expect(written).toBeLessThan(64 * chunk.byteLength);
  });
});

describe("guest-initiated connections (<uds_path>_<port>)", () => {
  test("REQUEST to CID 2 port P connects to <uds_path>_P: data both ways, shutdown, RST", async () => {
    const s = setupVsock();
    const server = hostListen(`${s.udsPath}_6000`);
    s.send({ op: V.VIRTIO_VSOCK_OP_REQUEST, src_port: 1234, dst_port: 6000, buf_alloc: 64 * 1024 });
    const resp = await s.expectPacket(V.VIRTIO_VSOCK_OP_RESPONSE);
    expect(resp).toMatchObject({ src_cid: 2, dst_cid: GUEST_CID, src_port: 6000, dst_port: 1234, buf_alloc: VSOCK_BUF_ALLOC });
    await waitFor(() => server.accepted.length === 1, "the host server to accept");
    const host = server.accepted[0]!;
    const addr = { src_port: 1234, dst_port: 6000 };
    s.send({ ...addr, op: V.VIRTIO_VSOCK_OP_RW }, enc("ping"));
    await waitFor(() => host.text() === "ping", "ping at the host");
    host.socket.write("pong");
    expect(dec((await s.expectPacket(V.VIRTIO_VSOCK_OP_RW)).data)).toBe("pong");
    // Half-close from the guest: the host reads EOF but can still write.
    s.send({ ...addr, op: V.VIRTIO_VSOCK_OP_SHUTDOWN, flags: V.VIRTIO_VSOCK_SHUTDOWN_SEND });
    await waitFor(() => host.ended(), "EOF at the host");
    host.socket.write("last words");
    expect(dec((await s.expectPacket(V.VIRTIO_VSOCK_OP_RW)).data)).toBe("last words");
    s.send({ ...addr, op: V.VIRTIO_VSOCK_OP_SHUTDOWN, flags: 3 });
    await s.expectPacket(V.VIRTIO_VSOCK_OP_RST);
    await waitFor(() => host.closed(), "the host socket to close");
    expect(s.vsock.connections.size).toBe(0);
  });

  test("nothing listening at <uds_path>_P: the guest gets RST", async () => {
    const s = setupVsock();
    s.send({ op: V.VIRTIO_VSOCK_OP_REQUEST, src_port: 1235, dst_port: 6001 });
    const rst = await s.expectPacket(V.VIRTIO_VSOCK_OP_RST);
    expect(rst).toMatchObject({ src_port: 6001, dst_port: 1235 });
    expect(s.vsock.connections.size).toBe(0);
  });

  test("the guest's credit: CREDIT_UPDATE when its window reopens, without being asked", async () => {
    const s = setupVsock();
    const server = hostListen(`${s.udsPath}_6002`);
    s.send({ op: V.VIRTIO_VSOCK_OP_REQUEST, src_port: 1236, dst_port: 6002 });
    await s.expectPacket(V.VIRTIO_VSOCK_OP_RESPONSE);
    await waitFor(() => server.accepted.length === 1, "accept");
    const host = server.accepted[0]!;
    const addr = { src_port: 1236, dst_port: 6002 };
    // A CREDIT_REQUEST is always answered.
    s.send({ ...addr, op: V.VIRTIO_VSOCK_OP_CREDIT_REQUEST });
    expect((await s.expectPacket(V.VIRTIO_VSOCK_OP_CREDIT_UPDATE)).fwd_cnt).toBe(0);
    // The host stops reading. The guest, as Linux does, sends no more than its credit: buf_alloc minus
    // what it sent beyond the last fwd_cnt it heard.
    host.socket.pause();
    const sent: Uint8Array[] = [];
    let txCnt = 0;
    let heardFwdCnt = 0;
    const sendWithinCredit = () => {
      for (;;) {
        const credit = VSOCK_BUF_ALLOC - (txCnt - heardFwdCnt);
        if (credit <= 0) return;
        const chunk = pattern(Math.min(credit, VSOCK_MAX_PKT_DATA), txCnt);
        s.send({ ...addr, op: V.VIRTIO_VSOCK_OP_RW }, chunk);
        sent.push(chunk);
        txCnt += chunk.byteLength;
      }
    };
    const hear = () => {
      for (const p of s.collect().splice(0)) {
        expect(p.buf_alloc).toBe(VSOCK_BUF_ALLOC);
        heardFwdCnt = Math.max(heardFwdCnt, p.fwd_cnt);
      }
    };
    sendWithinCredit();
    expect(txCnt).toBe(VSOCK_BUF_ALLOC);
    // Whatever the host's socket buffer took counts as forwarded: the window reopens that far, unasked.
    await waitFor(() => (hear(), heardFwdCnt > 0), "a first CREDIT_UPDATE");
    sendWithinCredit();
    expect(txCnt).toBeGreaterThan(VSOCK_BUF_ALLOC);
    expect(s.vsock.connections.size).toBe(1);
    const firstHeard = heardFwdCnt;
    // The host reads again: every byte is forwarded, and the guest hears enough of it to have at least
    // VSOCK_CREDIT_UPDATE_THRESHOLD of credit again (updates are not sent while it has more).
    host.socket.resume();
    await waitFor(() => host.bytes().byteLength === txCnt, "all bytes at the host");
    await waitFor(() => (hear(), VSOCK_BUF_ALLOC - (txCnt - heardFwdCnt) >= VSOCK_CREDIT_UPDATE_THRESHOLD), "the window to reopen");
    expect(heardFwdCnt).toBeGreaterThan(firstHeard);
    // Asked, the device tells the exact count.
    s.send({ ...addr, op: V.VIRTIO_VSOCK_OP_CREDIT_REQUEST });
    expect((await s.expectPacket(V.VIRTIO_VSOCK_OP_CREDIT_UPDATE)).fwd_cnt).toBe(txCnt);
    const all = new Uint8Array(txCnt);
    let at = 0;
    for (const c of sent) {
      all.set(c, at);
      at += c.byteLength;
    }
    expect(Buffer.compare(host.bytes(), all)).toBe(0);
  });

  test("a guest that sends past its credit is reset", async () => {
    const s = setupVsock();
    const server = hostListen(`${s.udsPath}_6003`);
    s.send({ op: V.VIRTIO_VSOCK_OP_REQUEST, src_port: 1237, dst_port: 6003 });
    await s.expectPacket(V.VIRTIO_VSOCK_OP_RESPONSE);
    await waitFor(() => server.accepted.length === 1, "accept");
    const host = server.accepted[0]!;
    host.socket.pause();
    const addr = { src_port: 1237, dst_port: 6003 };
    const chunk = new Uint8Array(VSOCK_MAX_PKT_DATA);
    // The host kernel's socket buffer takes some; past that plus VSOCK_BUF_ALLOC the guest is over its credit.
    for (let i = 0; i < 32 && s.vsock.connections.size === 1; i++) s.send({ ...addr, op: V.VIRTIO_VSOCK_OP_RW }, chunk);
    await s.expectPacket(V.VIRTIO_VSOCK_OP_RST);
    expect(s.vsock.connections.size).toBe(0);
    expect(s.logs.some((l) => l.includes("past the") && l.includes("credit"))).toBe(true);
    host.socket.resume();
    await waitFor(() => host.closed(), "the host socket to close");
  });
});

describe("hostile guest", () => {
  test("malformed packets are dropped or answered with RST; the device keeps running", async () => {
    const s = setupVsock();
    const tx = s.tx;
    // Shorter than the header.
    tx.send([new Uint8Array(VSOCK_HDR_SIZE - 1)]);
    tx.kick();
    // len beyond the buffers, and beyond VSOCK_MAX_PKT_DATA.
    s.send({ op: V.VIRTIO_VSOCK_OP_RW, len: 100 }, new Uint8Array(10));
    s.send({ op: V.VIRTIO_VSOCK_OP_RW, len: VSOCK_MAX_PKT_DATA + 1 }, new Uint8Array(VSOCK_MAX_PKT_DATA + 1));
    // From another CID than the guest's: dropped without an answer.
    s.send({ op: V.VIRTIO_VSOCK_OP_REQUEST, src_cid: 7, src_port: 1, dst_port: 2 });
    s.send({ op: V.VIRTIO_VSOCK_OP_REQUEST, src_cid: 2 ** 32 + GUEST_CID, src_port: 1, dst_port: 2 });
    expect(s.vsock.counters.dropped).toBe(5);
    // To another CID, of another type, an unknown op, data for no connection: RST each.
    s.send({ op: V.VIRTIO_VSOCK_OP_REQUEST, dst_cid: 9, src_port: 11, dst_port: 1 });
    s.send({ op: V.VIRTIO_VSOCK_OP_REQUEST, type: V.VIRTIO_VSOCK_TYPE_SEQPACKET, src_port: 12, dst_port: 1 });
    s.send({ op: 99, src_port: 13, dst_port: 1 });
    s.send({ op: V.VIRTIO_VSOCK_OP_RW, src_port: 14, dst_port: 1 }, enc("?"));
    s.send({ op: V.VIRTIO_VSOCK_OP_SHUTDOWN, src_port: 15, dst_port: 1, flags: 3 });
    s.send({ op: V.VIRTIO_VSOCK_OP_RESPONSE, src_port: 16, dst_port: 1 });
    // RST for no connection: never answered.
    s.send({ op: V.VIRTIO_VSOCK_OP_RST, src_port: 17, dst_port: 1 });
    const rsts = s.collect().filter((p) => p.op === V.VIRTIO_VSOCK_OP_RST);
    expect(rsts.map((p) => p.dst_port)).toEqual([11, 12, 13, 14, 15, 16]);
    // The RST comes from where the packet was going.
    expect(rsts[0]).toMatchObject({ src_cid: 9, dst_cid: GUEST_CID, src_port: 1 });
    expect(s.errors).toEqual([]);
    expect(s.dev.status & V.VIRTIO_CONFIG_S_NEEDS_RESET).toBe(0);
    // And it still works.
    const server = hostListen(`${s.udsPath}_6100`);
    s.send({ op: V.VIRTIO_VSOCK_OP_REQUEST, src_port: 20, dst_port: 6100 });
    await s.expectPacket(V.VIRTIO_VSOCK_OP_RESPONSE);
    await waitFor(() => server.accepted.length === 1, "accept");
  });

  test("protocol violations on an open connection reset it and close the host socket", async () => {
    const s = setupVsock();
    for (const [i, bad] of [
      { op: 99 },
      { op: V.VIRTIO_VSOCK_OP_REQUEST },
      { op: V.VIRTIO_VSOCK_OP_RESPONSE },
      { op: V.VIRTIO_VSOCK_OP_RW, len: 5000 },
    ].entries()) {
      const { host, hostPort, guestPort } = await hostInitiated(s, 5100 + i);
      s.send({ src_port: guestPort, dst_port: hostPort, ...bad });
      await s.expectPacket(V.VIRTIO_VSOCK_OP_RST, `RST after ${JSON.stringify(bad)}`);
      await waitFor(() => host.closed(), "the host socket to close");
    }
    expect(s.vsock.connections.size).toBe(0);
  });

  test("credit abuse by the guest: a fwd_cnt for bytes never sent resets the connection", async () => {
    const s = setupVsock();
    const { host, hostPort, guestPort } = await hostInitiated(s, 5200, 4096);
    const addr = { src_port: guestPort, dst_port: hostPort };
    host.socket.write(pattern(10000));
    // Exactly the 4096 bytes of credit, then nothing more without a new fwd_cnt.
    const rw = await s.expectPacket(V.VIRTIO_VSOCK_OP_RW);
    expect(rw.len).toBe(4096);
    await s.expectPacket(V.VIRTIO_VSOCK_OP_CREDIT_REQUEST);
    expect(s.got.filter((p) => p.op === V.VIRTIO_VSOCK_OP_RW)).toEqual([]);
    // A huge buf_alloc is fine (it costs the device nothing); a fwd_cnt past the 4096 bytes sent is not.
    s.send({ ...addr, op: V.VIRTIO_VSOCK_OP_CREDIT_UPDATE, buf_alloc: 0xffffffff, fwd_cnt: 1_000_000_000 });
    await s.expectPacket(V.VIRTIO_VSOCK_OP_RST);
    expect(s.got.filter((p) => p.op === V.VIRTIO_VSOCK_OP_RW)).toEqual([]);
    await waitFor(() => host.closed(), "the host socket to close");
  });

  test("answers owed to a guest that posts no receive buffers are bounded", () => {
    const s = setupVsock({ rxBuffers: 0 });
    for (let i = 0; i < 2000; i++) s.send({ op: V.VIRTIO_VSOCK_OP_RW, src_port: i, dst_port: 1 }, enc("x"));
    s.rx.postWritable(100, RX_BUF);
    s.rx.kick();
    s.rx.postWritable(28, RX_BUF);
    s.rx.kick();
    let n = 0;
    for (let round = 0; round < 10; round++) n += s.collect().splice(0).length;
    expect(n).toBe(VSOCK_MAX_PENDING_RST);
  });

  test("receive buffers too small for a header are returned empty", async () => {
    const s = setupVsock({ rxBuffers: 0 });
    s.rx.postWritable(3, VSOCK_HDR_SIZE - 1);
    s.rx.postWritable(1, VSOCK_HDR_SIZE);
    s.rx.kick();
    s.send({ op: V.VIRTIO_VSOCK_OP_RW, src_port: 1, dst_port: 1 }, enc("x"));
    const used = s.rx.takeUsed();
    expect(used.map((u) => u.len)).toEqual([0, 0, 0, VSOCK_HDR_SIZE]);
  });

  test("thousands of random packets: no exception, no device error, bounded state", async () => {
    const s = setupVsock();
    hostListen(`${s.udsPath}_7000`);
    let seed = 1234;
    const rand = (n: number) => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    const ops = [0, 1, 2, 3, 4, 5, 6, 7, 8, 255];
    for (let i = 0; i < 3000; i++) {
      const data = new Uint8Array(rand(3) === 0 ? rand(300) : 0);
      const fields: Partial<Packet> = {
        op: ops[rand(ops.length)]!,
        src_port: rand(4),
        dst_port: rand(2) ? 7000 : rand(3),
        type: rand(10) ? V.VIRTIO_VSOCK_TYPE_STREAM : rand(5),
        flags: rand(8),
        buf_alloc: rand(2) ? rand(1 << 20) : 0xffffffff,
        fwd_cnt: rand(1 << 20),
        len: rand(10) ? data.byteLength : rand(1 << 20),
        src_cid: rand(50) ? GUEST_CID : rand(10),
        dst_cid: rand(50) ? 2 : rand(10),
      };
      try {
        s.send(fields, data);
      } catch {
        // Out of descriptors.
      }
      if (rand(4) === 0) s.collect().splice(0);
      if (rand(100) === 0) await Bun.sleep(0);
      expect(s.vsock.connections.size).toBeLessThanOrEqual(8);
    }
    await Bun.sleep(20);
    s.collect();
    expect(s.errors).toEqual([]);
    expect(s.dev.status & V.VIRTIO_CONFIG_S_NEEDS_RESET).toBe(0);
    // The log is bounded however much the guest misbehaves.
    expect(s.logs.length).toBeLessThan(30);
  });

  test("a device reset closes every host socket", async () => {
    const s = setupVsock();
    const a = await hostInitiated(s, 5300);
    const b = await hostInitiated(s, 5301);
    s.driver.reset();
    await waitFor(() => a.host.closed() && b.host.closed(), "both host sockets to close");
    expect(s.vsock.connections.size).toBe(0);
  });
});
