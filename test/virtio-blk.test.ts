// virtio-blk against a temporary file: reads, writes, flush, GET_ID, read-only disks, requests past the end
// and malformed requests, through the test driver and the virtio-mmio transport.

import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BLK_MAX_REQUEST_BYTES, FileBlockBackend, VirtioBlock, type BlockBackend } from "../src/devices/virtio/block.ts";
import { GuestMemory } from "../src/memory.ts";
import { StructView } from "../src/kvm/struct.ts";
import * as V from "../src/devices/virtio/uapi.ts";
import { virtioSetup, type Buf, type TestQueue } from "./support/virtio-driver.ts";

const dir = mkdtempSync(join(tmpdir(), "kindling-blk-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let files = 0;

/** A disk image of `sectors` sectors (plus `extra` bytes) where every byte of sector n is n & 0xff. */
function image(sectors: number, extra = 0): string {
  const path = join(dir, `disk${files++}.img`);
  const bytes = new Uint8Array(sectors * V.SECTOR_SIZE + extra);
  for (let s = 0; s < sectors; s++) bytes.fill(s & 0xff, s * V.SECTOR_SIZE, (s + 1) * V.SECTOR_SIZE);
  writeFileSync(path, bytes);
  return path;
}

/** Wraps a backend to count flushes. */
class CountingBackend implements BlockBackend {
  flushes = 0;
  writes = 0;
  constructor(private readonly inner: BlockBackend) {}
  get size() { return this.inner.size; }
  get readOnly() { return this.inner.readOnly; }
  read(buf: Uint8Array, offset: number) { this.inner.read(buf, offset); }
  write(buf: Uint8Array, offset: number) { this.writes++; this.inner.write(buf, offset); }
  flush() { this.flushes++; this.inner.flush(); }
  close() { this.inner.close(); }
}

function setupBlk(path: string, opts: { readOnly?: boolean; id?: string; accept?: (f: bigint) => bigint } = {}) {
  const backend = new CountingBackend(new FileBlockBackend(path, opts.readOnly ?? false));
  const blk = new VirtioBlock(backend, { id: opts.id, queueSize: 16 });
  const s = virtioSetup(blk);
  const [q] = s.driver.init({ accept: opts.accept });
  return { ...s, blk, backend, q: q! };
}

type Setup = ReturnType<typeof setupBlk>;

function header(s: Setup, type: number, sector: bigint | number): number {
  const addr = s.alloc.alloc(V.virtio_blk_outhdr.size);
  const v = new StructView(V.virtio_blk_outhdr).assign({ type, ioprio: 0, sector: BigInt(sector) });
  s.mem.write(addr, v.bytes);
  return addr;
}

/** Submit a request built from `bufs`, notify, and return the used element and status byte. */
function submit(s: Setup, q: TestQueue, bufs: Buf[], statusAddr: number, indirect = false) {
  s.mem.writeU8(statusAddr, 0xee);
  q.add(bufs, { indirect });
  q.kick();
  const used = q.takeUsed();
  expect(used.length).toBe(1);
  return { len: used[0]!.len, status: s.mem.readU8(statusAddr) };
}

function read(s: Setup, sector: bigint | number, bytes: number, segments = 1, indirect = false) {
  const data = s.alloc.alloc(bytes);
  const status = s.alloc.alloc(1);
  const per = bytes / segments;
  const bufs: Buf[] = [{ addr: header(s, V.VIRTIO_BLK_T_IN, sector), len: V.virtio_blk_outhdr.size }];
  for (let i = 0; i < segments; i++) bufs.push({ addr: data + i * per, len: per, write: true });
  bufs.push({ addr: status, len: 1, write: true });
  const r = submit(s, s.q, bufs, status, indirect);
  return { ...r, data: s.mem.read(data, bytes) };
}

function write(s: Setup, sector: bigint | number, payload: Uint8Array, segments = 1, indirect = false) {
  const data = s.alloc.alloc(payload.byteLength);
  s.mem.write(data, payload);
  const status = s.alloc.alloc(1);
  const per = payload.byteLength / segments;
  const bufs: Buf[] = [{ addr: header(s, V.VIRTIO_BLK_T_OUT, sector), len: V.virtio_blk_outhdr.size }];
  for (let i = 0; i < segments; i++) bufs.push({ addr: data + i * per, len: per });
  bufs.push({ addr: status, len: 1, write: true });
  return submit(s, s.q, bufs, status, indirect);
}

function simple(s: Setup, type: number, dataLen = 0) {
  const data = s.alloc.alloc(Math.max(1, dataLen));
  const status = s.alloc.alloc(1);
  const bufs: Buf[] = [{ addr: header(s, type, 0), len: V.virtio_blk_outhdr.size }];
  if (dataLen) bufs.push({ addr: data, len: dataLen, write: true });
  bufs.push({ addr: status, len: 1, write: true });
  return { ...submit(s, s.q, bufs, status), data: s.mem.read(data, dataLen) };
}

const pattern = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => (i * 7 + seed) & 0xff);

describe("configuration", () => {
  test("capacity in 512-byte sectors, features offered", () => {
    const s = setupBlk(image(100, 300));
    const config = new StructView(V.virtio_blk_config, s.driver.readConfig(0, V.virtio_blk_config.size));
    expect(config.get("capacity")).toBe(100);
    expect(config.get("seg_max")).toBe(14);
    const offered = s.dev.offeredFeatures;
    expect(offered & V.bit(V.VIRTIO_BLK_F_FLUSH)).not.toBe(0n);
    expect(offered & V.bit(V.VIRTIO_BLK_F_RO)).toBe(0n);
    expect(s.driver.read32(V.VIRTIO_MMIO_DEVICE_ID)).toBe(V.VIRTIO_ID_BLOCK);
  });

  test("a read-only disk offers VIRTIO_BLK_F_RO", () => {
    const s = setupBlk(image(8), { readOnly: true });
    expect(s.dev.driverFeatures & V.bit(V.VIRTIO_BLK_F_RO)).not.toBe(0n);
  });

  test("a missing file or a bad id is a clear error", () => {
    expect(() => new FileBlockBackend(join(dir, "nope.img"))).toThrow(/cannot open .*nope\.img/);
    expect(() => new FileBlockBackend(dir, true)).toThrow("not a regular file");
    expect(() => new VirtioBlock(new FileBlockBackend(image(1)), { id: "x".repeat(21) })).toThrow("at most 20 bytes");
  });
});

describe("I/O", () => {
  test("read sectors, in one buffer, several, and through an indirect table", () => {
    const s = setupBlk(image(64));
    const one = read(s, 5, 2 * V.SECTOR_SIZE);
    expect(one.status).toBe(V.VIRTIO_BLK_S_OK);
    expect(one.len).toBe(2 * V.SECTOR_SIZE + 1);
    expect(one.data.subarray(0, 512).every((b) => b === 5)).toBe(true);
    expect(one.data.subarray(512).every((b) => b === 6)).toBe(true);
    const four = read(s, 60, 4 * V.SECTOR_SIZE, 8);
    expect(four.status).toBe(V.VIRTIO_BLK_S_OK);
    expect([...four.data.filter((_, i) => i % 512 === 0)]).toEqual([60, 61, 62, 63]);
    const ind = read(s, 10, 3 * V.SECTOR_SIZE, 3, true);
    expect(ind.status).toBe(V.VIRTIO_BLK_S_OK);
    expect([...ind.data.filter((_, i) => i % 512 === 0)]).toEqual([10, 11, 12]);
  });

  test("data and status in one writable buffer", () => {
    const s = setupBlk(image(4));
    const buf = s.alloc.alloc(V.SECTOR_SIZE + 1);
    const r = submit(s, s.q, [
      { addr: header(s, V.VIRTIO_BLK_T_IN, 3), len: V.virtio_blk_outhdr.size },
      { addr: buf, len: V.SECTOR_SIZE + 1, write: true },
    ], buf + V.SECTOR_SIZE);
    expect(r.status).toBe(V.VIRTIO_BLK_S_OK);
    expect(s.mem.read(buf, V.SECTOR_SIZE).every((b) => b === 3)).toBe(true);
  });

  test("written data is in the file, as a separate read of it sees", () => {
    const path = image(32);
    const s = setupBlk(path);
    const a = pattern(3 * V.SECTOR_SIZE, 1);
    expect(write(s, 7, a, 3).status).toBe(V.VIRTIO_BLK_S_OK);
    const b = pattern(2 * V.SECTOR_SIZE, 99);
    const w = write(s, 20, b, 2, true);
    expect(w.status).toBe(V.VIRTIO_BLK_S_OK);
    expect(w.len).toBe(1);
    const f = simple(s, V.VIRTIO_BLK_T_FLUSH);
    expect(f.status).toBe(V.VIRTIO_BLK_S_OK);
    const disk = readFileSync(path);
    expect([...disk.subarray(7 * 512, 10 * 512)]).toEqual([...a]);
    expect([...disk.subarray(20 * 512, 22 * 512)]).toEqual([...b]);
    expect(disk[6 * 512 + 511]).toBe(6);
    expect(disk[10 * 512]).toBe(10);
    // And the device reads back what it wrote.
    expect([...read(s, 7, 3 * V.SECTOR_SIZE).data]).toEqual([...a]);
  });

  test("FLUSH is fsync; with VIRTIO_BLK_F_FLUSH negotiated writes do not flush", () => {
    const s = setupBlk(image(8));
    write(s, 1, pattern(512, 3));
    expect(s.backend.flushes).toBe(0);
    expect(simple(s, V.VIRTIO_BLK_T_FLUSH).status).toBe(V.VIRTIO_BLK_S_OK);
    expect(s.backend.flushes).toBe(1);
  });

  test("without VIRTIO_BLK_F_FLUSH every write is durable before it completes", () => {
    const s = setupBlk(image(8), { accept: (f) => f & ~V.bit(V.VIRTIO_BLK_F_FLUSH) });
    write(s, 1, pattern(512, 3));
    write(s, 2, pattern(512, 4));
    expect(s.backend.flushes).toBe(2);
  });

  test("GET_ID returns the 20-byte id", () => {
    const s = setupBlk(image(1), { id: "disk-serial-42" });
    const r = simple(s, V.VIRTIO_BLK_T_GET_ID, V.VIRTIO_BLK_ID_BYTES);
    expect(r.status).toBe(V.VIRTIO_BLK_S_OK);
    expect(r.len).toBe(V.VIRTIO_BLK_ID_BYTES + 1);
    const expected = new Uint8Array(20);
    expected.set(new TextEncoder().encode("disk-serial-42"));
    expect([...r.data]).toEqual([...expected]);
  });
});

describe("refused requests", () => {
  test("read-only: writes get IOERR and the file is unchanged", () => {
    const path = image(8);
    const before = readFileSync(path);
    const s = setupBlk(path, { readOnly: true });
    const w = write(s, 2, pattern(512, 5));
    expect(w.status).toBe(V.VIRTIO_BLK_S_IOERR);
    expect(w.len).toBe(1);
    expect(s.backend.writes).toBe(0);
    expect(readFileSync(path).equals(before)).toBe(true);
    expect(read(s, 2, 512).status).toBe(V.VIRTIO_BLK_S_OK);
  });

  test("a request over BLK_MAX_REQUEST_BYTES gets IOERR without touching the disk (I/O runs on the main thread)", () => {
    const path = join(dir, `big${files++}.img`);
    writeFileSync(path, "");
    truncateSync(path, BLK_MAX_REQUEST_BYTES + (1 << 20)); // sparse
    const backend = new CountingBackend(new FileBlockBackend(path, false));
    const blk = new VirtioBlock(backend, { queueSize: 16 });
    const s = { ...virtioSetup(blk, GuestMemory.plain([{ gpa: 0, size: 3 * BLK_MAX_REQUEST_BYTES + (4 << 20) }])), blk, backend };
    const [q] = s.driver.init();
    const t = { ...s, q: q! } as unknown as Setup;
    const over = BLK_MAX_REQUEST_BYTES + V.SECTOR_SIZE;
    expect(read(t, 0, over).status).toBe(V.VIRTIO_BLK_S_IOERR);
    expect(write(t, 0, new Uint8Array(over)).status).toBe(V.VIRTIO_BLK_S_IOERR);
    expect(backend.writes).toBe(0);
    expect(read(t, 0, BLK_MAX_REQUEST_BYTES).status).toBe(V.VIRTIO_BLK_S_OK);
    backend.close();
  });

  test("past the end: IOERR, also for sectors that would overflow 64 bits", () => {
    const s = setupBlk(image(16));
    expect(read(s, 15, 512).status).toBe(V.VIRTIO_BLK_S_OK);
    expect(read(s, 16, 512).status).toBe(V.VIRTIO_BLK_S_IOERR);
    expect(read(s, 15, 1024).status).toBe(V.VIRTIO_BLK_S_IOERR);
    expect(write(s, 16, pattern(512, 1)).status).toBe(V.VIRTIO_BLK_S_IOERR);
    expect(read(s, 0xffffffffffffffffn, 512).status).toBe(V.VIRTIO_BLK_S_IOERR);
    expect(read(s, 1n << 55n, 512).status).toBe(V.VIRTIO_BLK_S_IOERR);
    expect(s.driver.status() & V.VIRTIO_CONFIG_S_NEEDS_RESET).toBe(0);
  });

  test("data that is not whole sectors: IOERR", () => {
    const s = setupBlk(image(16));
    expect(read(s, 0, 100).status).toBe(V.VIRTIO_BLK_S_IOERR);
    expect(write(s, 0, pattern(700, 1)).status).toBe(V.VIRTIO_BLK_S_IOERR);
  });

  test("unknown request types: UNSUPP", () => {
    const s = setupBlk(image(16));
    expect(simple(s, V.VIRTIO_BLK_T_DISCARD).status).toBe(V.VIRTIO_BLK_S_UNSUPP);
    expect(simple(s, 0xdead).status).toBe(V.VIRTIO_BLK_S_UNSUPP);
  });

  test("malformed requests: short header, no status byte, readable status", () => {
    const s = setupBlk(image(16));
    // A header of 8 bytes.
    const status = s.alloc.alloc(1);
    const short = submit(s, s.q, [
      { addr: header(s, V.VIRTIO_BLK_T_IN, 0), len: 8 },
      { addr: status, len: 1, write: true },
    ], status);
    expect(short.status).toBe(V.VIRTIO_BLK_S_IOERR);
    // No writable byte at all: returned unanswered, the device keeps going.
    const lone = s.alloc.alloc(1);
    const none = submit(s, s.q, [
      { addr: header(s, V.VIRTIO_BLK_T_IN, 0), len: 16 },
      { addr: lone, len: 1 },
    ], lone);
    expect(none.len).toBe(0);
    expect(none.status).toBe(0xee);
    expect(read(s, 1, 512).status).toBe(V.VIRTIO_BLK_S_OK);
    expect(s.driver.status() & V.VIRTIO_CONFIG_S_NEEDS_RESET).toBe(0);
    // A readable status after writable data breaks the ring's rules: the device needs a reset.
    const data = s.alloc.alloc(512);
    s.q.add([
      { addr: header(s, V.VIRTIO_BLK_T_IN, 0), len: 16 },
      { addr: data, len: 512, write: true },
      { addr: status, len: 1 },
    ]);
    s.q.kick();
    expect(s.q.takeUsed()).toEqual([]);
    expect(s.driver.status() & V.VIRTIO_CONFIG_S_NEEDS_RESET).toBe(V.VIRTIO_CONFIG_S_NEEDS_RESET);
    expect(s.errors[0]).toContain("device-readable after a device-writable");
  });
});

describe("drive update (PATCH /drives path_on_host)", () => {
  test("replaceBackend: later requests read the new file, the new capacity is a configuration change, the old file is closed", () => {
    const s = setupBlk(image(4));
    expect(read(s, 3, V.SECTOR_SIZE).data[0]).toBe(3);
    const before = s.irq.count;
    const generation = s.driver.read32(V.VIRTIO_MMIO_CONFIG_GENERATION);
    const old = s.blk.backend;
    let closed = false;
    const wrapped = { ...old, get size() { return old.size; }, readOnly: old.readOnly, read: old.read.bind(old), write: old.write.bind(old), flush: old.flush.bind(old), close: () => { closed = true; old.close(); } };
    s.blk.backend = wrapped;
    s.blk.replaceBackend(new FileBlockBackend(image(64), false));
    expect(closed).toBe(true);
    expect(s.blk.capacity).toBe(64);
    expect(new DataView(s.driver.readConfig(0, 8).buffer).getBigUint64(0, true)).toBe(64n);
    expect(s.irq.count).toBe(before + 1);
    expect(s.driver.read32(V.VIRTIO_MMIO_CONFIG_GENERATION)).not.toBe(generation);
    const r = read(s, 40, V.SECTOR_SIZE);
    expect([r.status, r.data[0]]).toEqual([V.VIRTIO_BLK_S_OK, 40]);
  });

  test("a read-only drive stays read-only: a writable replacement is refused and closed", () => {
    const s = setupBlk(image(4), { readOnly: true });
    expect(() => s.blk.replaceBackend(new FileBlockBackend(image(8), false))).toThrow("must be read-only like the old one");
    expect(s.blk.capacity).toBe(4);
  });
});
