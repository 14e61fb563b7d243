// What a guest can make the VMM write without bound is rate-limited (src/rate-limit.ts): log lines from
// virtio-mmio register mistakes, failed block requests and unclaimed bus addresses; the bus's bookkeeping of
// unclaimed addresses; console bytes to serial_out_path.

import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { consola } from "consola";
import { Bus, UNCLAIMED_TRACKED_MAX } from "../src/bus.ts";
import { FileBlockBackend, VirtioBlock } from "../src/devices/virtio/block.ts";
import { VirtioRng } from "../src/devices/virtio/rng.ts";
import * as V from "../src/devices/virtio/uapi.ts";
import { GUEST_LOG_BURST, rateLimitedLog, SERIAL_OUT_BURST_BYTES, TokenBucket } from "../src/rate-limit.ts";
import { fakeMicroVM, fixtureFiles, type FakeVm } from "./support/api.ts";
import { virtioSetup } from "./support/virtio-driver.ts";

consola.level = 0;
const dir = mkdtempSync(join(tmpdir(), "kindling-rate-"));
const files = fixtureFiles();
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
  rmSync(files.dir, { recursive: true, force: true });
});

describe("token bucket", () => {
  test("a burst up to the capacity, then the refill rate; nothing beyond the capacity accumulates", () => {
    let now = 0;
    const b = new TokenBucket(10, 5, () => now);
    expect(Array.from({ length: 12 }, () => b.take()).filter(Boolean).length).toBe(10);
    now += 1000;
    expect(b.takeUpTo(100)).toBe(5);
    now += 1_000_000;
    expect(b.takeUpTo(100)).toBe(10);
    expect(b.take()).toBe(false);
  });

  test("a rate-limited log drops lines over the limit and says how many, later", () => {
    let now = 0;
    const lines: string[] = [];
    const log = rateLimitedLog((m) => lines.push(m), new TokenBucket(3, 1, () => now));
    for (let i = 0; i < 1000; i++) log(`line ${i}`);
    expect(lines).toEqual(["line 0", "line 1", "line 2"]);
    now += 1000;
    log("later");
    expect(lines[3]).toBe("later (997 earlier lines dropped by the rate limit)");
  });
});

describe("guest-triggerable log lines", () => {
  test("virtio-mmio: a flood of misaligned, unknown and refused register accesses logs a bounded number of lines", () => {
    const s = virtioSetup(new VirtioRng());
    for (let i = 0; i < 20_000; i++) {
      s.dev.write(0x1, new Uint8Array(2)); // misaligned
      s.dev.read(0xfc, new Uint8Array(4)); // unknown register
      s.driver.write32(V.VIRTIO_MMIO_QUEUE_NOTIFY, 0); // refused: not running
    }
    expect(s.logs.length).toBeGreaterThan(0);
    expect(s.logs.length).toBeLessThanOrEqual(GUEST_LOG_BURST + 5);
  });

  test("virtio-blk: a flood of failed requests logs a bounded number of lines", () => {
    const path = join(dir, "disk.img");
    writeFileSync(path, new Uint8Array(8 * 512));
    const lines: string[] = [];
    const backend = new FileBlockBackend(path, true);
    const blk = new VirtioBlock(backend, { queueSize: 16, log: (m) => lines.push(m) });
    const s = virtioSetup(blk);
    const [q] = s.driver.init();
    const status = s.alloc.alloc(1);
    for (let i = 0; i < 5000; i++) {
      // A write to a read-only disk: IOERR, and a log line each.
      const hdr = new Uint8Array(16);
      new DataView(hdr.buffer).setUint32(0, V.VIRTIO_BLK_T_OUT, true);
      const h = s.alloc.alloc(16);
      s.mem.write(h, hdr);
      q!.add([{ addr: h, len: 16 }, { addr: status, len: 1, write: true }]);
      q!.kick();
      q!.takeUsed();
    }
    expect(s.mem.readU8(status)).toBe(V.VIRTIO_BLK_S_IOERR);
    expect(lines.length).toBeGreaterThan(0);
    expect(lines.length).toBeLessThanOrEqual(GUEST_LOG_BURST + 5);
    backend.close();
  });

  test("the bus: unclaimed addresses are counted for the first few hundred, logged within the limit", () => {
    const lines: string[] = [];
    const bus = new Bus("mmio", (m) => lines.push(m));
    const data = new Uint8Array(4);
    for (let i = 0; i < 100_000; i++) bus.read(0xd0000000 + 4 * i, data);
    bus.write(0xd0000000, data);
    expect(bus.unclaimed.size).toBe(UNCLAIMED_TRACKED_MAX);
    expect(bus.unclaimed.get(0xd0000000)).toBe(2);
    expect(bus.unclaimedUntracked).toBe(100_000 - UNCLAIMED_TRACKED_MAX);
    expect(lines.length).toBeLessThanOrEqual(GUEST_LOG_BURST + 5);
    expect(data).toEqual(new Uint8Array(4).fill(0xff));
  });
});

describe("serial_out_path", () => {
  test("a guest printing without end fills the file only up to the token bucket's burst (and its refill)", async () => {
    const booted: FakeVm[] = [];
    const vm = fakeMicroVM({ "boot-source": { kernel_image_path: files.kernel } }, {}, booted);
    const out = join(dir, "serial.out");
    vm.setSerial({ serial_out_path: out });
    await vm.start();
    const line = "x".repeat(1023) + "\n";
    const started = performance.now();
    for (let i = 0; i < 8 * 1024; i++) booted[0]!.print(line); // 8 MiB
    const seconds = (performance.now() - started) / 1000;
    await vm.stop();
    const size = statSync(out).size;
    expect(size).toBeGreaterThanOrEqual(SERIAL_OUT_BURST_BYTES);
    expect(size).toBeLessThanOrEqual(SERIAL_OUT_BURST_BYTES + Math.ceil((seconds + 1) * 64 * 1024));
    expect(vm.serialOutDropped).toBe(8 * 1024 * 1024 - size);
  });
});
