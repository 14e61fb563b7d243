// MMDS and rate limiters through the API: /mmds and /mmds/config over the socket with Firecracker's
// answers (204, 200, 400, 413), the config file's `mmds-config`, `--metadata FILE`, MMDS reaching the guest
// through the network interface it is configured on (raw frames into the device the MicroVM built), and
// rate limiters given to the devices at start and changed by PATCH while the VM runs. The VM boots with a
// stand-in (no KVM).

import { afterAll, describe, expect, test } from "bun:test";
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { consola } from "consola";
import type { LinuxBootOptions } from "../src/boot/linux.ts";
import { createVirtioDevices } from "../src/boot/machine.ts";
import type { VirtioBlock } from "../src/devices/virtio/block.ts";
import { NET_HDR_SIZE, VirtioNet, type NetBackend } from "../src/devices/virtio/net.ts";
import type { VirtioRng } from "../src/devices/virtio/rng.ts";
import { buildEthernet, buildIpv4, buildTcp, ETH_P_IP, IPPROTO_TCP, parseEthernet, parseIpv4, parseIpv4Packet, parseTcp, TCP_ACK, TCP_SYN } from "../src/mmds/frames.ts";
import { MMDS_MAC } from "../src/mmds/stack.ts";
import type { MicroVM } from "../src/microvm.ts";
import { collect, fakeBoot, fakeMicroVM, fixtureFiles, serveFake, spawnKindling, type FakeVm } from "./support/api.ts";
import { virtioSetup } from "./support/virtio-driver.ts";

consola.level = -1;
const files = fixtureFiles();
afterAll(() => rmSync(files.dir, { recursive: true, force: true }));

async function served(vm: MicroVM, fn: (call: Awaited<ReturnType<typeof serveFake>>["call"]) => Promise<void>) {
  const { server, call } = await serveFake(vm, files.dir);
  try {
    await fn(call);
  } finally {
    server.close();
  }
}

class NullBackend implements NetBackend {
  readonly name = "null0";
  written = 0;
  write(): void {
    this.written++;
  }
  setOffload(): void {}
  startReading(): void {}
  releaseFrame(): void {}
  close(): void {}
}

/** The real VirtioNet on a backend that goes nowhere: what MicroVM builds for a network interface. */
class TestNet extends VirtioNet {
  static made: TestNet[] = [];
  constructor(o: Record<string, unknown>) {
    super(new NullBackend(), { rxRateLimiter: o.rxRateLimiter as never, txRateLimiter: o.txRateLimiter as never });
    TestNet.made.push(this);
  }
}

/** fakeBoot, with the recipe's real virtio-blk and virtio-rng models for the drives and the entropy device. */
function bootWithDevices(booted: FakeVm[]) {
  return async (opts: LinuxBootOptions) => {
    const r = await fakeBoot(booted)(opts);
    const real = createVirtioDevices({ kernel: opts.kernel, drives: opts.drives, entropy: opts.entropy, entropyRateLimiter: opts.entropyRateLimiter });
    const virtio = [...real.virtio, ...r.devices.virtio.filter((v) => v.name.startsWith("net_") || v.name === "vsock")];
    r.vm.devices = virtio;
    return { vm: r.vm, devices: { virtio } };
  };
}

describe("/mmds", () => {
  test("GET before any PUT is {}; PATCH before PUT is refused; PUT, PATCH (RFC 7396), GET in sorted order", async () => {
    await served(fakeMicroVM(), async (call) => {
      expect(await call("GET", "/mmds")).toMatchObject({ status: 200, json: {} });
      expect(await call("PATCH", "/mmds", { a: 1 })).toMatchObject({ status: 400, json: { fault_message: "MMDS error: The MMDS data store is not initialized." } });
      expect((await call("PUT", "/mmds", { latest: { "meta-data": { "ami-id": "ami-1", b: "x" } }, a: 1 })).status).toBe(204);
      expect((await call("PATCH", "/mmds", { latest: { "meta-data": { b: null, c: "y" } } })).status).toBe(204);
      const r = await call("GET", "/mmds");
      expect(r.text).toBe('{"a":1,"latest":{"meta-data":{"ami-id":"ami-1","c":"y"}}}');
    });
  });

  test("a document growing over 51200 bytes answers 413 and changes nothing; MMDS contents can change after start", async () => {
    const vm = fakeMicroVM();
    await served(vm, async (call) => {
      // A body is at most 51200 bytes itself (the API's limit), so only a PATCH can grow the document past it.
      await call("PUT", "/mmds", { k: "v", a: "x".repeat(30_000) });
      const big = await call("PATCH", "/mmds", { b: "x".repeat(30_000) });
      expect(big.status).toBe(413);
      expect((big.json as { fault_message: string }).fault_message).toBe("MMDS limit exceeded error: The MMDS patch request doesn't fit.");
      expect((await call("PUT", "/mmds", { k: "x".repeat(51_200) })).status).toBe(400);
      expect((await call("GET", "/mmds")).json).toEqual({ a: "x".repeat(30_000), k: "v" });
      await call("PUT", "/mmds", { k: "v" });
      vm.setBootSource({ kernel_image_path: files.kernel });
      await vm.start();
      expect((await call("PATCH", "/mmds", { k: "w" })).status).toBe(204);
      expect((await call("GET", "/mmds")).json).toEqual({ k: "w" });
    });
  });
});

describe("/mmds/config", () => {
  test("Firecracker's rules: interfaces that exist, at least one, a link-local address; pre-boot only", async () => {
    const vm = fakeMicroVM();
    await served(vm, async (call) => {
      const fault = async (body: unknown) => ((await call("PUT", "/mmds/config", body)).json as { fault_message: string }).fault_message;
      expect(await fault({ network_interfaces: ["eth0"] })).toContain("does not correspond to any existing network interface (eth0)");
      expect(await call("PUT", "/network-interfaces/eth0", { iface_id: "eth0", host_dev_name: "tap0" })).toMatchObject({ status: 204 });
      expect(await fault({ network_interfaces: [] })).toContain("The list of network interface IDs that allow forwarding MMDS requests is empty.");
      expect(await fault({ network_interfaces: ["eth0"], ipv4_address: "10.0.0.1" })).toContain("ipv4_address: The MMDS IPv4 address is not link local.");
      expect(await fault({ network_interfaces: ["eth0"], version: "V3" })).toContain("version: must be one of V1, V2");
      expect(await fault({ network_interfaces: ["eth0"], extra: 1 })).toContain("extra: unknown field");
      const ok = { network_interfaces: ["eth0"], version: "V2", ipv4_address: "169.254.170.2", imds_compat: true };
      expect((await call("PUT", "/mmds/config", ok)).status).toBe(204);
      expect(((await call("GET", "/vm/config")).json as Record<string, unknown>)["mmds-config"]).toEqual(ok);
      vm.setBootSource({ kernel_image_path: files.kernel });
      await vm.start();
      expect(await fault(ok)).toContain("can only be configured before the microVM starts");
    });
  });

  test("the guest reaches MMDS on the configured interface only, at the configured address, with the configured version", async () => {
    TestNet.made = [];
    const vm = fakeMicroVM(
      {
        "boot-source": { kernel_image_path: files.kernel },
        "network-interfaces": [{ iface_id: "eth0", host_dev_name: "tap0" }, { iface_id: "eth1", host_dev_name: "tap1" }],
        "mmds-config": { network_interfaces: ["eth0"], version: "V2", ipv4_address: "169.254.170.2" },
      },
      { deviceModels: { VirtioNet: TestNet } },
    );
    vm.putMmds({ latest: { "meta-data": { "ami-id": "ami-7" } } });
    await vm.start();
    const [eth0, eth1] = TestNet.made;
    const mmdsIp = parseIpv4("169.254.170.2")!;
    const guestIp = parseIpv4("10.0.0.2")!;
    const syn = buildEthernet(MMDS_MAC, Uint8Array.of(6, 0, 0, 0, 0, 2), ETH_P_IP,
      buildIpv4(guestIp, mmdsIp, IPPROTO_TCP, 1, buildTcp(guestIp, mmdsIp, { srcPort: 5000, dstPort: 80, seq: 1, ack: 0, flags: TCP_SYN, window: 65535 })));
    const exchange = (net: TestNet) => {
      const s = virtioSetup(net);
      const [rx, tx] = s.driver.init();
      rx!.postWritable(8, 2048);
      rx!.kick();
      tx!.send([new Uint8Array(NET_HDR_SIZE), syn]);
      tx!.kick();
      return { rx: rx!, tx: tx!, replies: () => rx!.takeUsedData().map((u) => parseTcp(parseIpv4Packet(parseEthernet(u.data.subarray(NET_HDR_SIZE))!.payload)!.payload)!) };
    };
    const a = exchange(eth0!);
    const [synAck] = a.replies();
    expect(synAck!.flags).toBe(TCP_SYN | TCP_ACK);
    // A V1-style GET (no token) is refused: V2 is configured.
    const req = new TextEncoder().encode("GET /latest/meta-data/ami-id HTTP/1.1\r\n\r\n");
    const seg = buildTcp(guestIp, mmdsIp, { srcPort: 5000, dstPort: 80, seq: 2, ack: synAck!.seq + 1, flags: TCP_ACK, window: 65535, payload: req });
    a.tx.send([new Uint8Array(NET_HDR_SIZE), buildEthernet(MMDS_MAC, Uint8Array.of(6, 0, 0, 0, 0, 2), ETH_P_IP, buildIpv4(guestIp, mmdsIp, IPPROTO_TCP, 2, seg))]);
    a.tx.kick();
    const [resp] = a.replies();
    expect(new TextDecoder().decode(resp!.payload)).toStartWith("HTTP/1.1 401 ");
    // eth1 has no MMDS: the SYN goes to its TAP.
    exchange(eth1!);
    expect((eth1!.backend as NullBackend).written).toBe(1);
    expect((eth0!.backend as NullBackend).written).toBe(0);
    await vm.stop();
  });
});

describe("rate limiters through the API", () => {
  test("given to the devices at start; PATCH replaces the buckets it names while the VM runs", async () => {
    TestNet.made = [];
    const booted: FakeVm[] = [];
    const bw = { size: 1048576, refill_time: 1000 };
    const ops = { size: 100, one_time_burst: 10, refill_time: 1000 };
    const vm = fakeMicroVM(
      {
        "boot-source": { kernel_image_path: files.kernel },
        drives: [{ drive_id: "x1", is_root_device: false, path_on_host: files.disk, is_read_only: true, rate_limiter: { bandwidth: bw } }],
        "network-interfaces": [{ iface_id: "eth0", host_dev_name: "tap0", rx_rate_limiter: { ops }, tx_rate_limiter: { bandwidth: bw } }],
        entropy: { rate_limiter: { bandwidth: { size: 1000, refill_time: 100 } } },
      },
      { boot: bootWithDevices(booted), deviceModels: { VirtioNet: TestNet } },
    );
    await served(vm, async (call) => {
      await vm.start();
      const byName = new Map(booted[0]!.devices.map((d) => [d.name, d.device]));
      const blk = byName.get("block_x1") as VirtioBlock;
      const rng = byName.get("entropy") as VirtioRng;
      const net = TestNet.made[0]!;
      expect(blk.rateLimiter.config()).toEqual({ bandwidth: bw });
      expect(rng.rateLimiter.config()).toEqual({ bandwidth: { size: 1000, refill_time: 100 } });
      expect(net.rxRateLimiter.config()).toEqual({ ops });
      expect(net.txRateLimiter.config()).toEqual({ bandwidth: bw });

      expect((await call("PATCH", "/drives/x1", { drive_id: "x1", rate_limiter: { ops: { size: 5, refill_time: 10 } } })).status).toBe(204);
      expect(blk.rateLimiter.config()).toEqual({ bandwidth: bw, ops: { size: 5, refill_time: 10 } });
      expect((await call("PATCH", "/drives/x1", { drive_id: "x1", rate_limiter: { bandwidth: { size: 0, refill_time: 0 } } })).status).toBe(204);
      expect(blk.rateLimiter.config()).toEqual({ ops: { size: 5, refill_time: 10 } });
      expect((await call("PATCH", "/network-interfaces/eth0", { iface_id: "eth0", tx_rate_limiter: { ops: { size: 7, refill_time: 70 } } })).status).toBe(204);
      expect(net.txRateLimiter.config()).toEqual({ bandwidth: bw, ops: { size: 7, refill_time: 70 } });
      expect(net.rxRateLimiter.config()).toEqual({ ops });
      const config = (await call("GET", "/vm/config")).json as { drives: { rate_limiter: unknown }[]; "network-interfaces": { tx_rate_limiter: unknown }[] };
      expect(config.drives[0]!.rate_limiter).toEqual({ ops: { size: 5, refill_time: 10 } });
      expect(config["network-interfaces"][0]!.tx_rate_limiter).toEqual({ bandwidth: bw, ops: { size: 7, refill_time: 70 } });
      // Kata's runtime-rs sends absent buckets as null: no change, as serde's Option reads them.
      expect((await call("PATCH", "/drives/x1", { drive_id: "x1", rate_limiter: { bandwidth: null, ops: null } })).status).toBe(204);
      expect(blk.rateLimiter.config()).toEqual({ ops: { size: 5, refill_time: 10 } });
      const bad = await call("PATCH", "/drives/x1", { drive_id: "x1", rate_limiter: { bandwidth: { size: -1, refill_time: 1 } } });
      expect(bad.status).toBe(400);
    });
    await vm.stop();
  });

  test("the serial rate_limiter drops console output over budget", async () => {
    const booted: FakeVm[] = [];
    const vm = fakeMicroVM({ "boot-source": { kernel_image_path: files.kernel } }, { boot: fakeBoot(booted) });
    vm.setSerial({ rate_limiter: { size: 10, refill_time: 100_000 } });
    const seen: string[] = [];
    vm.on("serial", (b) => seen.push(new TextDecoder().decode(b)));
    await vm.start();
    booted[0]!.print("12345678");
    booted[0]!.print("abcdefgh");
    expect(seen).toEqual(["12345678"]);
    expect(vm.serialRateLimited).toBe(8);
    await vm.stop();
  });
});

describe("--metadata FILE", () => {
  test("kindling api --metadata fills the store; a file that is not JSON is a usage error", async () => {
    const meta = join(files.dir, "meta.json");
    writeFileSync(meta, JSON.stringify({ latest: { "user-data": "hi" } }));
    const sock = join(files.dir, "meta.sock");
    const child = spawnKindling(["api", "--api-sock", sock, "--metadata", meta]);
    const out = collect(child.stdout);
    const err = collect(child.stderr);
    try {
      expect(await out.until(/waiting for PUT \/actions InstanceStart/, 20_000), err.text + out.text).toBe(true);
      const r = await fetch("http://localhost/mmds", { unix: sock } as RequestInit);
      expect(await r.json()).toEqual({ latest: { "user-data": "hi" } });
    } finally {
      child.kill();
      await child.exited;
    }
    const bad = join(files.dir, "bad.json");
    writeFileSync(bad, "{nope");
    const child2 = spawnKindling(["api", "--api-sock", join(files.dir, "bad.sock"), "--metadata", bad]);
    const out2 = collect(child2.stdout);
    const err2 = collect(child2.stderr);
    expect(await child2.exited).toBe(2);
    await Promise.all([out2.done, err2.done]);
    expect(err2.text + out2.text).toContain("--metadata");
    expect(err2.text + out2.text).toContain("not valid JSON");
  }, 40_000);
});
