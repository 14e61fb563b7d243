import {
  close, madvise, madviseRange, mmap, munmap, open, MADV_DONTDUMP, MADV_DONTNEED, MAP_ANONYMOUS, MAP_NORESERVE, MAP_PRIVATE,
  O_RDONLY, PROT_READ, PROT_WRITE, type Mapping,
} from "./kvm/libc.ts";

/** KVM's dirty log, and so the VMM's own, counts 4 KiB pages (api.rst 4.8: one bit per page of the slot). */
const DIRTY_PAGE_SIZE = 4096;

// Guest RAM: one or more regions of host memory, each mapped into the guest at a guest-physical address.
//
// Everything the VMM reads or writes in guest memory goes through GuestMemory, which checks that the whole
// range lies inside one region. A guest-supplied address out of range (a descriptor pointing past the end
// of RAM, a kernel too large for memory) is a GuestMemoryError, never an out-of-bounds access.

export class GuestMemoryError extends Error {
  constructor(
    readonly gpa: number,
    readonly length: number,
    message?: string,
  ) {
    super(message ?? `guest-physical range 0x${gpa.toString(16)}+0x${length.toString(16)} is not in guest RAM`);
    this.name = "GuestMemoryError";
  }
}

export interface MemoryRegion {
  /** Guest-physical address of the first byte. */
  readonly gpa: number;
  /** The bytes, as the host sees them (an mmap'd ArrayBuffer for a real VM, a plain one in unit tests). */
  readonly bytes: Uint8Array;
  /** Host virtual address of `bytes`, for KVM_SET_USER_MEMORY_REGION; absent for plain buffers. */
  readonly hostAddr?: number;
}

export class GuestMemory {
  readonly regions: readonly MemoryRegion[];

  constructor(regions: MemoryRegion[]) {
    this.regions = [...regions].sort((a, b) => a.gpa - b.gpa);
    for (let i = 1; i < this.regions.length; i++) {
      const prev = this.regions[i - 1]!;
      if (prev.gpa + prev.bytes.byteLength > this.regions[i]!.gpa) throw new Error("guest memory regions overlap");
    }
  }

  /** Plain ArrayBuffer-backed memory, for tests and tools that need no VM. */
  static plain(layout: { gpa: number; size: number }[]): GuestMemory {
    return new GuestMemory(layout.map((r) => ({ gpa: r.gpa, bytes: new Uint8Array(r.size) })));
  }

  /** Total bytes of RAM. */
  get size(): number {
    return this.regions.reduce((n, r) => n + r.bytes.byteLength, 0);
  }

  /** True when [gpa, gpa+length) lies inside one region. */
  contains(gpa: number, length: number): boolean {
    return this.find(gpa, length) !== undefined;
  }

  private find(gpa: number, length: number): MemoryRegion | undefined {
    if (!Number.isSafeInteger(gpa) || !Number.isSafeInteger(length) || gpa < 0 || length < 0) return undefined;
    for (const r of this.regions) {
      if (gpa >= r.gpa && gpa + length <= r.gpa + r.bytes.byteLength) return r;
    }
    return undefined;
  }

  /**
   * The bytes at [gpa, gpa+length) as a view into guest memory (no copy). The guest can change them at any
   * moment: copy what you validate before you use it (see the virtqueue code).
   */
  slice(gpa: number, length: number): Uint8Array {
    const r = this.find(gpa, length);
    if (!r) throw new GuestMemoryError(gpa, length);
    const at = gpa - r.gpa;
    if (this.vmmDirty) this.markVmmDirty(r, at, length);
    return r.bytes.subarray(at, at + length);
  }

  /**
   * Pages the VMM itself may have written (a device filling a buffer), one bit per page, per region: KVM's
   * dirty log sees only the guest's writes. Every slice() marks its pages (a read too: the VMM cannot tell a
   * view it will write through from one it only reads), so a diff snapshot may hold a few extra pages.
   */
  private vmmDirty?: Map<MemoryRegion, Uint8Array>;

  /** Start recording the pages the VMM touches (for diff snapshots). */
  trackVmmWrites(): void {
    this.vmmDirty = new Map(this.regions.map((r) => [r, dirtyBitmap(r.bytes.byteLength)]));
  }

  /** The VMM's dirty bitmap for region `index` (KVM_GET_DIRTY_LOG's format), cleared as it is taken. */
  takeVmmDirty(index: number): Uint8Array | undefined {
    const r = this.regions[index]!;
    const bitmap = this.vmmDirty?.get(r);
    if (!bitmap) return undefined;
    this.vmmDirty!.set(r, dirtyBitmap(r.bytes.byteLength));
    return bitmap;
  }

  private markVmmDirty(r: MemoryRegion, at: number, length: number): void {
    const bitmap = this.vmmDirty!.get(r)!;
    const last = Math.floor((at + Math.max(length, 1) - 1) / DIRTY_PAGE_SIZE);
    for (let p = Math.floor(at / DIRTY_PAGE_SIZE); p <= last; p++) bitmap[p >> 3]! |= 1 << (p & 7);
  }

  /** A DataView over [gpa, gpa+length). */
  view(gpa: number, length: number): DataView {
    const s = this.slice(gpa, length);
    return new DataView(s.buffer, s.byteOffset, s.byteLength);
  }

  read(gpa: number, length: number): Uint8Array {
    return this.slice(gpa, length).slice();
  }

  write(gpa: number, data: Uint8Array): void {
    this.slice(gpa, data.byteLength).set(data);
  }

  fill(gpa: number, length: number, value = 0): void {
    this.slice(gpa, length).fill(value);
  }

  /**
   * Give the host memory behind [gpa, gpa+length) back (the balloon's inflated pages): madvise(MADV_DONTNEED)
   * for mmap'd RAM, after which the range reads as zeros and no longer counts in the VMM's RSS; plain
   * buffers are zeroed. The range must be whole host pages (4 KiB) inside one region.
   */
  discard(gpa: number, length: number): void {
    const r = this.find(gpa, length);
    if (!r) throw new GuestMemoryError(gpa, length);
    const at = gpa - r.gpa;
    if (r.hostAddr === undefined) r.bytes.fill(0, at, at + length);
    else madviseRange(r.hostAddr + at, length, MADV_DONTNEED);
  }

  readU8(gpa: number): number { return this.view(gpa, 1).getUint8(0); }
  readU16(gpa: number): number { return this.view(gpa, 2).getUint16(0, true); }
  readU32(gpa: number): number { return this.view(gpa, 4).getUint32(0, true); }
  readU64(gpa: number): bigint { return this.view(gpa, 8).getBigUint64(0, true); }
  writeU8(gpa: number, v: number): void { this.view(gpa, 1).setUint8(0, v); }
  writeU16(gpa: number, v: number): void { this.view(gpa, 2).setUint16(0, v, true); }
  writeU32(gpa: number, v: number): void { this.view(gpa, 4).setUint32(0, v >>> 0, true); }
  writeU64(gpa: number, v: bigint | number): void { this.view(gpa, 8).setBigUint64(0, BigInt(v), true); }
}

/**
 * Anonymous, private host memory for a VM's RAM regions. MAP_NORESERVE: pages are only backed when the
 * guest touches them, so a 128 MiB guest that uses 20 MiB costs 20 MiB. MADV_DONTDUMP: a core dump of the
 * VMM leaves guest RAM out (it holds the guest's data, which the host's crash reports should not carry,
 * and would make every dump as large as the guest).
 */
export function allocateGuestMemory(layout: { gpa: number; size: number }[]): GuestMemory {
  const maps: Mapping[] = [];
  try {
    for (const r of layout) {
      const m = mmap(r.size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE);
      maps.push(m);
      madvise(m, MADV_DONTDUMP);
    }
  } catch (e) {
    // A later region that cannot be mapped must not leave the earlier ones behind.
    for (const m of maps) munmap(m);
    throw e;
  }
  return new GuestMemory(layout.map((r, i) => {
    const m = maps[i]!;
    return { gpa: r.gpa, bytes: new Uint8Array(m.buffer), hostAddr: m.addr, mapping: m };
  }));
}

/** A cleared dirty bitmap for `size` bytes: one bit per page, in whole 64-bit words as KVM writes them. */
export function dirtyBitmap(size: number): Uint8Array {
  return new Uint8Array(Math.ceil(size / DIRTY_PAGE_SIZE / 64) * 8);
}

/**
 * Guest RAM from a snapshot's memory file: the regions lie back to back in the file, in guest-physical
 * order. MAP_PRIVATE: pages are read from the file when first touched, and a write (by the guest or the
 * VMM) copies the page into this process's memory, so the file never changes and any number of VMs can map
 * it at once, sharing every page none of them wrote (the page cache holds one copy).
 */
export function mapGuestMemoryFile(layout: { gpa: number; size: number }[], path: string): GuestMemory {
  const fd = open(path, O_RDONLY);
  try {
    let offset = 0;
    return new GuestMemory(
      layout.map((r) => {
        const m = mmap(r.size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, fd, offset);
        offset += r.size;
        return { gpa: r.gpa, bytes: new Uint8Array(m.buffer), hostAddr: m.addr, mapping: m };
      }),
    );
  } finally {
    close(fd); // the mappings keep the file open
  }
}

/** Give allocated RAM back to the host (the GuestMemory must not be used afterwards). */
export function freeGuestMemory(mem: GuestMemory): void {
  for (const r of mem.regions) {
    const m = (r as { mapping?: Mapping }).mapping;
    if (m) munmap(m);
  }
}
