// MMDS against Linux's own network stack: a TAP moved into a network namespace plays the guest's
// interface, and curl and wget run inside the namespace as a guest's programs would. Every frame
// the namespace's kernel sends on the TAP (ARP for the MMDS address, the TCP segments) goes to the MMDS
// stack (src/mmds/stack.ts) exactly as the virtio-net transmit path hands it over, and the stack's replies
// are written back into the TAP. So the handshake, the data, the ACKs and the close are the real Linux TCP
// a guest kernel runs, not this test's idea of it.

import { afterAll, beforeAll, describe, expect } from "bun:test";
import { MmdsNetworkStack } from "../src/mmds/stack.ts";
import { MmdsStore } from "../src/mmds/store.ts";
import { Tap } from "../src/net/tap.ts";
import { NetNs, netnsTest, NETNS_MISSING, uniqueName } from "./support/netns.ts";

const VNET_HDR = 12;
const META = {
  latest: {
    "meta-data": { "ami-id": "ami-87654321", network: { interfaces: { macs: { "02:29:96:8f:6a:2d": { "device-number": "13345342" } } } } },
    big: "0123456789".repeat(2000),
  },
};

describe("MMDS with Linux's TCP stack as the guest (curl, wget)", () => {
  let ns: NetNs | undefined;
  let tap: Tap | undefined;
  const store = new MmdsStore();
  const stack = new MmdsNetworkStack(store);

  beforeAll(() => {
    if (NETNS_MISSING) return;
    ns = NetNs.create("kmmds");
    const ifname = uniqueName("kmm");
    tap = new Tap(ifname);
    ns.adopt(ifname);
    ns.exec("sysctl", "-qw", `net.ipv6.conf.${ifname}.disable_ipv6=1`);
    ns.ip("addr", "add", "10.0.2.2/24", "dev", ifname);
    ns.ip("link", "set", ifname, "up");
    // As Firecracker's guide tells a guest to: MMDS is reached through this interface.
    ns.ip("route", "add", "169.254.169.254", "dev", ifname);
    const t = tap;
    stack.output = (frame) => {
      const out = new Uint8Array(VNET_HDR + frame.byteLength);
      out.set(frame, VNET_HDR);
      t.write(out);
    };
    t.startReading((frame) => {
      try {
        // What virtio-net's transmit path does with a guest frame: header off, then MMDS first.
        stack.handleFrame(frame.subarray(VNET_HDR));
      } finally {
        t.releaseFrame();
      }
    });
    store.put(META);
  });
  afterAll(async () => {
    stack.close();
    await tap?.close();
    ns?.delete();
  });

  /** A command in the namespace, without blocking this process's event loop (it must answer the frames). */
  async function run(...args: string[]): Promise<string> {
    const p = Bun.spawn(["ip", "netns", "exec", ns!.name, ...args], { stdout: "pipe", stderr: "pipe" });
    const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
    if (code !== 0) throw new Error(`${args.join(" ")}: exit ${code}: ${err}`);
    return out;
  }

  netnsTest("V1: curl and wget GET a key and a listing; a 20 KB value arrives whole", async () => {
    store.version = "V1";
    expect(await run("curl", "-sS", "-m", "20", "http://169.254.169.254/latest/meta-data/ami-id")).toBe("ami-87654321");
    expect(await run("wget", "-q", "-T", "20", "-O", "-", "http://169.254.169.254/latest/meta-data/")).toBe("ami-id\nnetwork/");
    expect(await run("curl", "-sS", "-m", "20", "-H", "Accept: application/json", "http://169.254.169.254/latest/meta-data/ami-id")).toBe('"ami-87654321"');
    expect(await run("curl", "-sS", "-m", "20", "http://169.254.169.254/latest/big")).toBe(META.latest.big);
  }, 60_000);

  netnsTest("V2: a token with PUT, then a nested key with it; without a token 401", async () => {
    store.version = "V2";
    try {
      const token = await run("curl", "-sS", "-m", "20", "-X", "PUT", "-H", "X-metadata-token-ttl-seconds: 60", "http://169.254.169.254/latest/api/token");
      expect(token).toMatch(/^[A-Za-z0-9+/=]{48}$/);
      const key = "http://169.254.169.254/latest/meta-data/network/interfaces/macs/02:29:96:8f:6a:2d/device-number";
      expect(await run("curl", "-sS", "-m", "20", "-H", `X-metadata-token: ${token}`, key)).toBe("13345342");
      expect(await run("curl", "-sS", "-m", "20", "-o", "/dev/null", "-w", "%{http_code}", key)).toBe("401");
      expect(await run("curl", "-sS", "-m", "20", "-o", "/dev/null", "-w", "%{http_code}", "-H", "X-metadata-token: forged", key)).toBe("401");
    } finally {
      store.version = "V1";
    }
  }, 60_000);
});
