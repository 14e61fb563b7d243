// virtio-blk (virtio 1.2 §5.2): a disk backed by a host file.
//
// One queue. Each request is a chain: a device-readable header (struct virtio_blk_outhdr: type, ioprio,
// sector), then the data (device-readable for a write, device-writable for a read), then one
// device-writable status byte: the last writable byte of the chain. Sectors are 512 bytes whatever the
// host's block size. The used length is the number of bytes written into the chain: data and status.
//
// The guest controls every field: a header too short, a request past the end of the disk, a data length
// that is not whole sectors or a write to a read-only disk each get VIRTIO_BLK_S_IOERR; a type kindling
// does not implement gets VIRTIO_BLK_S_UNSUPP; a chain with no writable byte for the status cannot be
// answered and is returned with a used length of 0.
//
// Writes go to the host file with pwrite; VIRTIO_BLK_T_FLUSH is fsync. A driver that does not accept
// VIRTIO_BLK_F_FLUSH assumes there is no write cache (Linux's virtblk_get_cache_mode), so then every
// write is followed by fsync before it completes.

import { bool, checkKind, DeviceStateError, int } from "../state.ts";
import { closeSync, fsyncSync, readSync, writeSync } from "node:fs";
import { openDriveImage } from "../../host-file.ts";
import { rateLimitedLog } from "../../rate-limit.ts";
import { flock, LOCK_EX, LOCK_NB, LOCK_SH, SysError } from "../../kvm/libc.ts";
import { StructView } from "../../kvm/struct.ts";
import { RateLimiter, resumeOnUnblock, serveLimited, type RateLimiterConfig } from "../rate-limiter.ts";
import { readConfigBytes, type VirtioContext, type VirtioDevice, type VirtioDeviceState } from "./device.ts";
import type { DescriptorChain, Virtqueue } from "./queue.ts";
import {
  bit, SECTOR_SHIFT, SECTOR_SIZE, virtio_blk_config, virtio_blk_outhdr, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO,
  VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_ID_BYTES, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP,
  VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_ID_BLOCK,
} from "./uapi.ts";

/** Where the disk's bytes live. Calls are synchronous; a failure throws (the request gets IOERR). */
export interface BlockBackend {
  /** Size in bytes (the disk is the whole 512-byte sectors of it). */
  readonly size: number;
  readonly readOnly: boolean;
  /** Fill `buf` from byte `offset`, completely, or throw. */
  read(buf: Uint8Array, offset: number): void;
  /** Write all of `buf` at byte `offset`, or throw. */
  write(buf: Uint8Array, offset: number): void;
  /** Make completed writes durable (fsync). */
  flush(): void;
  close(): void;
}

/**
 * A regular host file as a disk, through positioned reads and writes (pread/pwrite) and fsync.
 *
 * Opened through host-file.ts (no symlink, a regular file, checked on the descriptor). An advisory lock
 * (flock) says who uses the image: exclusive for read-write, shared for read-only, both non-blocking, so two
 * VMs (or a VM and a tool that also takes flock, as QEMU's and util-linux's do) cannot use one image
 * read-write at once; a second opener gets a clear error instead of a corrupted filesystem.
 */
export class FileBlockBackend implements BlockBackend {
  readonly size: number;
  private fd: number;

  constructor(
    readonly path: string,
    readonly readOnly = false,
  ) {
    let opened;
    try {
      opened = openDriveImage("virtio-blk", path, readOnly);
    } catch (e) {
      throw new Error(`${(e as Error).message}${readOnly ? " (read-only)" : " (for reading and writing)"}`);
    }
    this.fd = opened.fd;
    this.size = opened.size;
    try {
      flock(this.fd, (readOnly ? LOCK_SH : LOCK_EX) | LOCK_NB);
    } catch (e) {
      closeSync(this.fd);
      const busy = e instanceof SysError && e.code === "EAGAIN";
      throw new Error(busy
        ? `virtio-blk: ${path} is in use by another VM or program${readOnly ? " read-write" : ""} (its flock is taken); two users may not write one image`
        : `virtio-blk: locking ${path}: ${(e as Error).message}`);
    }
  }

  read(buf: Uint8Array, offset: number): void {
    for (let done = 0; done < buf.byteLength;) {
      const n = readSync(this.fd, buf, done, buf.byteLength - done, offset + done);
      if (n === 0) throw new Error(`${this.path}: unexpected end of file at byte ${offset + done}`);
      done += n;
    }
  }

  write(buf: Uint8Array, offset: number): void {
    for (let done = 0; done < buf.byteLength;) {
      done += writeSync(this.fd, buf, done, buf.byteLength - done, offset + done);
    }
  }

  flush(): void {
    fsyncSync(this.fd);
  }

  close(): void {
    if (this.fd >= 0) closeSync(this.fd);
    this.fd = -1;
  }
}

/**
 * The most data one request may move. I/O runs synchronously on the main thread, so one request must not
 * take long: a guest could otherwise read its whole RAM in one chain. Linux sends at most max_sectors_kb
 * (1280 KiB by default) per request, well under this; a larger one gets VIRTIO_BLK_S_IOERR.
 */
export const BLK_MAX_REQUEST_BYTES = 16 << 20;

export interface VirtioBlockOptions {
  /** The GET_ID answer (the guest's /sys/block/vda/serial): printable ASCII, at most 20 bytes. */
  id?: string;
  /** QueueNumMax (default 256). */
  queueSize?: number;
  /** Firecracker's drive `rate_limiter`: requests over budget wait on the queue. */
  rateLimiter?: RateLimiterConfig;
  log?: (message: string) => void;
}

/** A request failed in a way the driver is told about with a status byte. */
class BlockRequestError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/**
 * Configuration (capacity, read-only), the serial GET_ID answers, and the write-cache mode the driver
 * chose. Requests are carried out as they are popped, so none is ever pending between exits.
 */
export type VirtioBlockState = { kind: "virtio-blk"; capacity: number; readOnly: boolean; id: string; writethrough: boolean };

export class VirtioBlock implements VirtioDevice {
  readonly name = "virtio-blk";
  readonly deviceId = VIRTIO_ID_BLOCK;
  readonly deviceFeatures: bigint;
  readonly queueMaxSizes: readonly number[];
  /** Disk size in 512-byte sectors (config space `capacity`). */
  capacity: number;
  private readonly id: Uint8Array;
  private readonly config = new StructView(virtio_blk_config);
  private readonly log: (message: string) => void;
  private queue: Virtqueue | undefined;
  private ctx: VirtioContext | undefined;
  /** Bandwidth (data bytes) and ops (requests) limits; PATCH /drives updates them with update(). */
  readonly rateLimiter: RateLimiter;
  /** VIRTIO_BLK_F_FLUSH not negotiated: the driver expects every write to be durable when it completes. */
  private writethrough = true;

  constructor(
    /** Where the bytes are; replaceBackend() swaps it (PATCH /drives path_on_host). */
    public backend: BlockBackend,
    opts: VirtioBlockOptions = {},
  ) {
    const queueSize = opts.queueSize ?? 256;
    this.queueMaxSizes = [queueSize];
    // Failed requests are the guest's doing: rate-limited.
    this.log = rateLimitedLog(opts.log ?? (() => {}));
    this.rateLimiter = new RateLimiter(opts.rateLimiter);
    this.rateLimiter.onUnblocked = resumeOnUnblock(() => this.ctx, () => this.process(0));
    const id = opts.id ?? "kindling";
    if (!/^[\x20-\x7e]*$/.test(id) || id.length > VIRTIO_BLK_ID_BYTES) {
      throw new Error(`virtio-blk: id ${JSON.stringify(id)} must be printable ASCII of at most ${VIRTIO_BLK_ID_BYTES} bytes`);
    }
    this.id = new Uint8Array(VIRTIO_BLK_ID_BYTES);
    this.id.set(new TextEncoder().encode(id));
    // SEG_MAX: the header and the status take two descriptors of a chain no longer than the queue.
    this.deviceFeatures = bit(VIRTIO_BLK_F_FLUSH) | bit(VIRTIO_BLK_F_SEG_MAX) | (backend.readOnly ? bit(VIRTIO_BLK_F_RO) : 0n);
    this.config.set("seg_max", Math.max(1, queueSize - 2));
    this.capacity = 0;
    this.updateCapacity();
  }

  /**
   * Re-read the backend's size into `capacity`. Returns true if it changed; the VM then calls the
   * transport's configChanged() so the guest re-reads it.
   */
  updateCapacity(): boolean {
    const sectors = Math.floor(this.backend.size / SECTOR_SIZE);
    if (this.backend.size % SECTOR_SIZE) {
      this.log(`${this.name}: ${this.backend.size % SECTOR_SIZE} bytes past the last whole sector are not visible to the guest`);
    }
    const changed = sectors !== this.capacity;
    this.capacity = sectors;
    this.config.set("capacity", sectors);
    return changed;
  }

  /**
   * Firecracker's drive update (PATCH /drives/{id} with path_on_host): the disk's bytes come from `backend`
   * from the next request on; the old one is closed. firecracker-containerd and Kata attach placeholder
   * drives at boot and put a container's image into one this way. The guest gets a configuration change
   * interrupt, as Firecracker sends, so it re-reads `capacity` (§5.2.4).
   */
  replaceBackend(backend: BlockBackend): void {
    if (backend.readOnly !== this.backend.readOnly) {
      backend.close();
      throw new Error(`${this.name}: the new file must be ${this.backend.readOnly ? "read-only" : "writable"} like the old one (VIRTIO_BLK_F_RO was offered at boot)`);
    }
    const old = this.backend;
    this.backend = backend;
    old.close();
    this.updateCapacity();
    this.ctx?.configChanged();
  }

  readConfig(offset: number, data: Uint8Array): void {
    readConfigBytes(this.config.bytes, offset, data);
  }

  writeConfig(offset: number, _data: Uint8Array): void {
    // Only `writeback` is writable, and only with VIRTIO_BLK_F_CONFIG_WCE, which kindling does not offer.
    this.log(`${this.name}: write to read-only config offset ${offset} ignored`);
  }

  activate(ctx: VirtioContext): void {
    const q = ctx.queues[0];
    if (!q) throw new Error("queue 0 (requestq) is not ready");
    this.queue = q;
    this.ctx = ctx;
    this.writethrough = (ctx.features & bit(VIRTIO_BLK_F_FLUSH)) === 0n;
  }

  /** The VM has ended: close the backing file. */
  close(): void {
    this.rateLimiter.close();
    this.backend.close();
  }

  reset(): void {
    this.ctx = undefined;
    this.queue = undefined;
  }

  describe(): VirtioBlockState {
    return {
      kind: "virtio-blk", capacity: this.capacity, readOnly: this.backend.readOnly,
      id: new TextDecoder().decode(this.id).replace(/\0+$/, ""), writethrough: this.writethrough,
    };
  }

  /** The backing file is wiring: it must be the same kind (read-only or not); its size is taken as described. */
  restore(s: VirtioDeviceState): void {
    const D = this.name;
    checkKind(D, s, "virtio-blk");
    const capacity = int(D, "capacity", s.capacity, 0, Number.MAX_SAFE_INTEGER);
    if (bool(D, "readOnly", s.readOnly) !== this.backend.readOnly) throw new DeviceStateError(D, `readOnly: ${s.readOnly}, but the backing file given is ${this.backend.readOnly ? "" : "not "}read-only`);
    if (typeof s.id !== "string" || s.id.length > VIRTIO_BLK_ID_BYTES || !/^[\x20-\x7e]*$/.test(s.id)) throw new DeviceStateError(D, "id: not printable ASCII of at most 20 bytes");
    const writethrough = bool(D, "writethrough", s.writethrough);
    this.id.fill(0);
    this.id.set(new TextEncoder().encode(s.id));
    this.capacity = capacity;
    this.config.set("capacity", capacity);
    this.writethrough = writethrough;
  }

  process(_queueIndex: number): boolean {
    const q = this.queue;
    if (!q) return false;
    if (this.rateLimiter.unlimited) return q.serve((chain) => this.handle(chain));
    // A request costs one op and its data bytes (the buffers between the header and the status byte).
    const cost = (c: DescriptorChain) => Math.max(0, c.readableLength - virtio_blk_outhdr.size) + Math.max(0, c.writableLength - 1);
    return serveLimited(q, this.rateLimiter, cost, (chain) => this.handle(chain));
  }

  /** Carry out one request; returns the used length. */
  private handle(chain: DescriptorChain): number {
    if (chain.writableLength === 0) {
      this.log(`${this.name}: request ${chain.head} has no device-writable status byte; returned unanswered`);
      return 0;
    }
    // The status is the last writable byte; the writable bytes before it are a read's data buffer.
    const statusAt = chain.writableLength - 1;
    let status = VIRTIO_BLK_S_OK;
    let written = 0;
    try {
      written = this.execute(chain, statusAt);
    } catch (e) {
      status = e instanceof BlockRequestError ? e.status : VIRTIO_BLK_S_IOERR;
      this.log(`${this.name}: request ${chain.head}: ${(e as Error).message}`);
      // Only the status byte is reported as written (an underestimate is allowed, §2.7.8.2).
      written = 0;
    }
    chain.write(statusAt, Uint8Array.of(status));
    return written + 1;
  }

  /** Returns the data bytes written into the chain; throws BlockRequestError for a status other than OK. */
  private execute(chain: DescriptorChain, dataIn: number): number {
    if (chain.readableLength < virtio_blk_outhdr.size) {
      throw new BlockRequestError(VIRTIO_BLK_S_IOERR, `header is ${chain.readableLength} bytes, needs ${virtio_blk_outhdr.size}`);
    }
    const hdr = new StructView(virtio_blk_outhdr, chain.read(0, virtio_blk_outhdr.size));
    const type = hdr.get("type");
    const sector = hdr.getBig("sector");
    switch (type) {
      case VIRTIO_BLK_T_IN: {
        this.checkSize(dataIn, "read");
        const at = this.checkRange(sector, dataIn, "read");
        let pos = at;
        for (const s of chain.writableSlices(0, dataIn)) {
          this.backend.read(s, pos);
          pos += s.byteLength;
        }
        return dataIn;
      }
      case VIRTIO_BLK_T_OUT: {
        if (this.backend.readOnly) throw new BlockRequestError(VIRTIO_BLK_S_IOERR, "write to a read-only disk");
        const len = chain.readableLength - virtio_blk_outhdr.size;
        this.checkSize(len, "write");
        let pos = this.checkRange(sector, len, "write");
        for (const s of chain.readableSlices(virtio_blk_outhdr.size, len)) {
          this.backend.write(s, pos);
          pos += s.byteLength;
        }
        if (this.writethrough) this.backend.flush();
        return 0;
      }
      case VIRTIO_BLK_T_FLUSH:
        this.backend.flush();
        return 0;
      case VIRTIO_BLK_T_GET_ID: {
        // Up to VIRTIO_BLK_ID_BYTES, as much as the buffer holds.
        const n = Math.min(dataIn, VIRTIO_BLK_ID_BYTES);
        chain.write(0, this.id.subarray(0, n));
        return n;
      }
      default:
        throw new BlockRequestError(VIRTIO_BLK_S_UNSUPP, `request type ${type} is not supported`);
    }
  }

  private checkSize(len: number, what: string): void {
    if (len > BLK_MAX_REQUEST_BYTES) {
      throw new BlockRequestError(VIRTIO_BLK_S_IOERR, `${what} of ${len} bytes is over the ${BLK_MAX_REQUEST_BYTES}-byte limit per request`);
    }
  }

  /** Byte offset of `sector`, after checking that `len` bytes from it are whole sectors inside the disk. */
  private checkRange(sector: bigint, len: number, what: string): number {
    if (len % SECTOR_SIZE !== 0) {
      throw new BlockRequestError(VIRTIO_BLK_S_IOERR, `${what} of ${len} bytes is not a whole number of ${SECTOR_SIZE}-byte sectors`);
    }
    const start = sector << BigInt(SECTOR_SHIFT);
    if (start + BigInt(len) > BigInt(this.capacity) << BigInt(SECTOR_SHIFT)) {
      throw new BlockRequestError(VIRTIO_BLK_S_IOERR,
        `${what} of ${len / SECTOR_SIZE} sectors at sector ${sector} is past the end of the ${this.capacity}-sector disk`);
    }
    return Number(start);
  }
}
