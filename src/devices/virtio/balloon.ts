// virtio-balloon, the traditional memory balloon (virtio 1.2 §5.5): the host sets a target number of pages
// (`num_pages` in configuration space); the guest's driver allocates that many pages and hands their page
// frame numbers to the device on the inflate queue, promising not to touch them. The device gives the host
// memory behind them back with madvise(MADV_DONTNEED) (GuestMemory.discard), so the VMM's RSS shrinks.
// Lowering the target makes the driver take pages back on the deflate queue; with MUST_TELL_HOST not
// offered it may use them before telling, and a released page simply reads back as zeros.
//
// Queues, in the order the driver numbers them (Linux's virtio_balloon.c numbers them inflate, deflate,
// stats, free page, reporting and skips the ones whose feature was not negotiated, so the MMIO queue index
// of a later queue depends on the features; see `queueRoles`):
//   inflateq    device-readable buffers of le32 PFNs of 4 KiB pages (VIRTIO_BALLOON_PFN_SHIFT)
//   deflateq    the same, for pages the guest takes back
//   statsq      VIRTIO_BALLOON_F_STATS_VQ: one buffer of virtio_balloon_stat entries. The device keeps it;
//               returning it (every stats polling interval) asks the driver to refill it and add it again
//               (§5.5.6.3). Firecracker's stats_polling_interval_s.
//   reporting   VIRTIO_BALLOON_F_PAGE_REPORTING: device-writable buffers covering free guest memory; the
//               device releases it like inflated pages and returns the buffers.
// VIRTIO_BALLOON_F_DEFLATE_ON_OOM is offered when asked for: it changes only what the guest driver does.
// Free page hinting (VIRTIO_BALLOON_F_FREE_PAGE_HINT) is not offered.
//
// Guest input is hostile: a PFN outside guest RAM is counted and skipped, never released; a buffer that is
// not a whole number of PFNs has its tail ignored; reported ranges release only the whole pages inside.

import { PAGE_SIZE } from "../../arch/x86_64/layout.ts";
import { StructView } from "../../kvm/struct.ts";
import type { GuestMemory } from "../../memory.ts";
import { checkKind, DeviceStateError, int } from "../state.ts";
import { readConfigBytes, type VirtioContext, type VirtioDevice, type VirtioDeviceState } from "./device.ts";
import type { DescriptorChain, Virtqueue } from "./queue.ts";
import {
  bit, virtio_balloon_config, virtio_balloon_stat, VIRTIO_BALLOON_F_DEFLATE_ON_OOM, VIRTIO_BALLOON_F_PAGE_REPORTING,
  VIRTIO_BALLOON_F_STATS_VQ, VIRTIO_BALLOON_PFN_SHIFT, VIRTIO_BALLOON_S_ALLOC_STALL, VIRTIO_BALLOON_S_ASYNC_RECLAIM,
  VIRTIO_BALLOON_S_ASYNC_SCAN, VIRTIO_BALLOON_S_AVAIL, VIRTIO_BALLOON_S_CACHES, VIRTIO_BALLOON_S_DIRECT_RECLAIM,
  VIRTIO_BALLOON_S_DIRECT_SCAN, VIRTIO_BALLOON_S_HTLB_PGALLOC, VIRTIO_BALLOON_S_HTLB_PGFAIL, VIRTIO_BALLOON_S_MAJFLT,
  VIRTIO_BALLOON_S_MEMFREE, VIRTIO_BALLOON_S_MEMTOT, VIRTIO_BALLOON_S_MINFLT, VIRTIO_BALLOON_S_OOM_KILL,
  VIRTIO_BALLOON_S_SWAP_IN, VIRTIO_BALLOON_S_SWAP_OUT, VIRTIO_ID_BALLOON,
} from "./uapi.ts";

/** A balloon page: 4 KiB whatever the guest's page size (§5.5.6). */
export const BALLOON_PAGE_SIZE = 1 << VIRTIO_BALLOON_PFN_SHIFT;
/** Firecracker counts the balloon in MiB: 256 balloon pages each. */
export const BALLOON_PAGES_PER_MIB = (1 << 20) / BALLOON_PAGE_SIZE;
const PFN_BYTES = 4;

/** Firecracker's names for the statistics (its BalloonStats), by virtio tag. */
export const BALLOON_STAT_NAMES: Record<number, string> = {
  [VIRTIO_BALLOON_S_SWAP_IN]: "swap_in",
  [VIRTIO_BALLOON_S_SWAP_OUT]: "swap_out",
  [VIRTIO_BALLOON_S_MAJFLT]: "major_faults",
  [VIRTIO_BALLOON_S_MINFLT]: "minor_faults",
  [VIRTIO_BALLOON_S_MEMFREE]: "free_memory",
  [VIRTIO_BALLOON_S_MEMTOT]: "total_memory",
  [VIRTIO_BALLOON_S_AVAIL]: "available_memory",
  [VIRTIO_BALLOON_S_CACHES]: "disk_caches",
  [VIRTIO_BALLOON_S_HTLB_PGALLOC]: "hugetlb_allocations",
  [VIRTIO_BALLOON_S_HTLB_PGFAIL]: "hugetlb_failures",
  [VIRTIO_BALLOON_S_OOM_KILL]: "oom_kill",
  [VIRTIO_BALLOON_S_ALLOC_STALL]: "alloc_stall",
  [VIRTIO_BALLOON_S_ASYNC_SCAN]: "async_scan",
  [VIRTIO_BALLOON_S_DIRECT_SCAN]: "direct_scan",
  [VIRTIO_BALLOON_S_ASYNC_RECLAIM]: "async_reclaim",
  [VIRTIO_BALLOON_S_DIRECT_RECLAIM]: "direct_reclaim",
};

/** GET /balloon/statistics: the target and actual size, and the guest's latest statistics. */
export interface BalloonStatistics {
  target_pages: number;
  actual_pages: number;
  target_mib: number;
  actual_mib: number;
  [stat: string]: number;
}

export interface VirtioBalloonOptions {
  /** Target size in MiB (Firecracker's amount_mib). */
  amountMib: number;
  /** Offer VIRTIO_BALLOON_F_DEFLATE_ON_OOM. */
  deflateOnOom: boolean;
  /** Seconds between statistics requests; non-zero offers the stats queue (it cannot be added later). */
  statsPollingIntervalS?: number;
  /** Offer VIRTIO_BALLOON_F_PAGE_REPORTING. */
  freePageReporting?: boolean;
  queueSize?: number;
  log?: (message: string) => void;
}

type QueueRole = "inflate" | "deflate" | "stats" | "reporting";

/**
 * The target and the driver's answer (configuration space), the statistics interval and the latest
 * statistics, and the counters. A stats buffer held at the time is not part of it: the restored device
 * gets fresh statistics only once the driver adds a buffer again.
 */
export type VirtioBalloonState = {
  kind: "virtio-balloon";
  numPages: number;
  actual: number;
  statsPollingIntervalS: number;
  stats: Record<string, number>;
  inflatedPages: number;
  deflatedPages: number;
  reportedBytes: number;
  invalidPfns: number;
};

export class VirtioBalloon implements VirtioDevice {
  readonly name = "virtio-balloon";
  readonly deviceId = VIRTIO_ID_BALLOON;
  readonly deviceFeatures: bigint;
  readonly queueMaxSizes: readonly number[];
  /** Pages released on the host through the inflate queue, and taken back through the deflate queue. */
  inflatedPages = 0;
  deflatedPages = 0;
  /** Bytes released through free page reporting. */
  reportedBytes = 0;
  /** PFNs the guest sent that are not in guest RAM (skipped). */
  invalidPfns = 0;
  /** Requests served per queue and statistics buffers read, for the metrics' "balloon" group. */
  private readonly counts = { inflate_count: 0, deflate_count: 0, stats_updates_count: 0, free_page_report_count: 0 };
  private readonly config = new StructView(virtio_balloon_config);
  private readonly log: (message: string) => void;
  private statsIntervalS: number;
  private latestStats: Record<string, number> = {};
  private ctx: VirtioContext | undefined;
  /** MMIO queue index -> what the queue is, fixed at activation by the negotiated features. */
  private roles: (QueueRole | undefined)[] = [];
  private queues: (Virtqueue | undefined)[] = [];
  /** The stats buffer the device holds until it wants fresh statistics. */
  private heldStats: DescriptorChain | undefined;
  private statsTimer: ReturnType<typeof setInterval> | undefined;

  constructor(opts: VirtioBalloonOptions) {
    const queueSize = opts.queueSize ?? 256;
    this.log = opts.log ?? (() => {});
    this.statsIntervalS = opts.statsPollingIntervalS ?? 0;
    let features = 0n;
    if (opts.deflateOnOom) features |= bit(VIRTIO_BALLOON_F_DEFLATE_ON_OOM);
    if (this.statsIntervalS > 0) features |= bit(VIRTIO_BALLOON_F_STATS_VQ);
    if (opts.freePageReporting) features |= bit(VIRTIO_BALLOON_F_PAGE_REPORTING);
    this.deviceFeatures = features;
    this.queueMaxSizes = queueRoles(features).map(() => queueSize);
    this.setTargetMib(opts.amountMib);
  }

  // ---- what the VMM asks of it (the API's /balloon endpoints) ----

  /** The target, in 4 KiB pages (num_pages). */
  get targetPages(): number {
    return this.config.get("num_pages");
  }

  /** How many pages the driver says the balloon holds (it writes `actual`). */
  get actualPages(): number {
    return this.config.get("actual");
  }

  get statsPollingIntervalS(): number {
    return this.statsIntervalS;
  }

  /** A new target (PATCH /balloon): num_pages changes and the driver gets a configuration interrupt. */
  setTargetMib(amountMib: number): void {
    if (!Number.isSafeInteger(amountMib) || amountMib < 0 || amountMib * BALLOON_PAGES_PER_MIB > 0xffffffff) {
      throw new RangeError(`balloon amount_mib ${amountMib} is not a size the device can hold`);
    }
    this.config.set("num_pages", amountMib * BALLOON_PAGES_PER_MIB);
    this.ctx?.configChanged();
  }

  /**
   * A new statistics interval (PATCH /balloon/statistics). Statistics cannot be turned on or off once the
   * device exists (the stats queue is a feature fixed at creation); a new interval asks for fresh
   * statistics at once.
   */
  setStatsPollingInterval(seconds: number): void {
    if (!Number.isSafeInteger(seconds) || seconds < 0) throw new RangeError(`stats_polling_interval_s ${seconds} is not a whole number of seconds`);
    if ((seconds === 0) !== (this.statsIntervalS === 0)) {
      throw new Error("balloon statistics cannot be turned on or off once the device exists (the stats queue is negotiated at boot)");
    }
    this.statsIntervalS = seconds;
    if (this.ctx) {
      this.startStatsTimer();
      this.requestStats();
    }
  }

  /** Firecracker's balloon metrics (cumulative; the metrics writer reports the change per line). */
  get counters(): Readonly<Record<string, number>> {
    return { ...this.counts, inflated_pages: this.inflatedPages, deflated_pages: this.deflatedPages, invalid_pfns: this.invalidPfns };
  }

  /** GET /balloon/statistics. */
  statistics(): BalloonStatistics {
    const target = this.targetPages;
    const actual = this.actualPages;
    return {
      target_pages: target,
      actual_pages: actual,
      target_mib: Math.floor(target / BALLOON_PAGES_PER_MIB),
      actual_mib: Math.floor(actual / BALLOON_PAGES_PER_MIB),
      ...this.latestStats,
    };
  }

  // ---- the virtio device ----

  describe(): VirtioBalloonState {
    return {
      kind: "virtio-balloon", numPages: this.targetPages, actual: this.actualPages, statsPollingIntervalS: this.statsIntervalS,
      stats: { ...this.latestStats }, inflatedPages: this.inflatedPages, deflatedPages: this.deflatedPages,
      reportedBytes: this.reportedBytes, invalidPfns: this.invalidPfns,
    };
  }

  restore(s: VirtioDeviceState): void {
    const D = this.name;
    checkKind(D, s, "virtio-balloon");
    const n = (f: string) => int(D, f, s[f], 0, Number.MAX_SAFE_INTEGER);
    const interval = n("statsPollingIntervalS");
    if ((interval === 0) !== (this.statsIntervalS === 0)) throw new DeviceStateError(D, "statsPollingIntervalS: statistics on or off must match the device's stats queue");
    const stats = s.stats;
    if (!stats || typeof stats !== "object" || Array.isArray(stats)) throw new DeviceStateError(D, "stats: not an object");
    const names = new Set(Object.values(BALLOON_STAT_NAMES));
    const latest: Record<string, number> = {};
    for (const [k, v] of Object.entries(stats)) {
      if (!names.has(k)) throw new DeviceStateError(D, `stats.${k}: not a balloon statistic`);
      latest[k] = int(D, `stats.${k}`, v, 0, Number.MAX_SAFE_INTEGER);
    }
    this.config.set("num_pages", int(D, "numPages", s.numPages, 0, 0xffffffff));
    this.config.set("actual", int(D, "actual", s.actual, 0, 0xffffffff));
    this.statsIntervalS = interval;
    this.latestStats = latest;
    this.inflatedPages = n("inflatedPages");
    this.deflatedPages = n("deflatedPages");
    this.reportedBytes = n("reportedBytes");
    this.invalidPfns = n("invalidPfns");
  }

  readConfig(offset: number, data: Uint8Array): void {
    readConfigBytes(this.config.bytes, offset, data);
  }

  /** The driver writes `actual` (§5.5.6: "the driver updates actual"); every other field is the device's. */
  writeConfig(offset: number, data: Uint8Array): void {
    const at = virtio_balloon_config.offsetOf("actual");
    if (offset !== at || data.byteLength !== 4) return;
    this.config.set("actual", new DataView(data.buffer, data.byteOffset, 4).getUint32(0, true));
  }

  activate(ctx: VirtioContext): void {
    this.roles = queueRoles(ctx.features);
    this.queues = this.roles.map((_, i) => ctx.queues[i]);
    for (const [i, role] of this.roles.entries()) {
      if (!this.queues[i]) throw new Error(`queue ${i} (${role}q) is not ready`);
    }
    this.ctx = ctx;
    if (this.roles.includes("stats")) this.startStatsTimer();
  }

  reset(): void {
    this.stopStatsTimer();
    this.ctx = undefined;
    this.roles = [];
    this.queues = [];
    this.heldStats = undefined;
    this.config.set("actual", 0);
  }

  close(): void {
    this.stopStatsTimer();
  }

  process(queueIndex: number): boolean {
    const q = this.queues[queueIndex];
    const mem = this.ctx?.mem;
    if (!q || !mem) return false;
    switch (this.roles[queueIndex]) {
      case "inflate":
        return q.serve((chain) => {
          this.counts.inflate_count++;
          this.inflatedPages += this.forEachPfn(chain, mem, (pfns) => releasePages(mem, pfns));
          return 0;
        });
      case "deflate":
        return q.serve((chain) => {
          this.counts.deflate_count++;
          this.deflatedPages += this.forEachPfn(chain, mem, () => {});
          return 0;
        });
      case "reporting":
        return q.serve((chain) => {
          this.counts.free_page_report_count++;
          for (const b of chain.writable) this.reportedBytes += releaseRange(mem, b.addr, b.len);
          return 0;
        });
      case "stats":
        return this.receiveStats(q);
      default:
        return false;
    }
  }

  // ---- inflate and deflate ----

  /** Reads a chain's PFNs, keeps those inside guest RAM, hands them on; returns how many were valid. */
  private forEachPfn(chain: DescriptorChain, mem: GuestMemory, use: (pfns: number[]) => void): number {
    const count = Math.floor(chain.readableLength / PFN_BYTES);
    const bytes = chain.read(0, count * PFN_BYTES); // one copy: the guest may rewrite the array meanwhile
    const dv = new DataView(bytes.buffer);
    const pfns: number[] = [];
    for (let i = 0; i < count; i++) {
      const pfn = dv.getUint32(i * PFN_BYTES, true);
      if (mem.contains(pfn * BALLOON_PAGE_SIZE, BALLOON_PAGE_SIZE)) pfns.push(pfn);
      else this.invalidPfns++;
    }
    if (this.invalidPfns > 0 && pfns.length < count) this.log(`${count - pfns.length} PFNs outside guest RAM skipped`);
    use(pfns);
    return pfns.length;
  }

  // ---- statistics (§5.5.6.3) ----

  /** The driver (re)filled the stats buffer: read it, and keep the buffer until the next request. */
  private receiveStats(q: Virtqueue): boolean {
    for (let chain = q.pop(); chain; chain = q.pop()) {
      // A driver has one stats buffer; if it somehow offers another, the older one goes back at once.
      if (this.heldStats) q.push(this.heldStats, 0);
      this.heldStats = chain;
      this.counts.stats_updates_count++;
      const n = Math.floor(chain.readableLength / virtio_balloon_stat.size);
      const bytes = chain.read(0, n * virtio_balloon_stat.size);
      for (let i = 0; i < n; i++) {
        const stat = new StructView(virtio_balloon_stat, bytes, i * virtio_balloon_stat.size);
        const name = BALLOON_STAT_NAMES[stat.get("tag")];
        const value = stat.getBig("val");
        if (name) this.latestStats[name] = value > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(value);
      }
    }
    return false;
  }

  /** Return the held stats buffer: the driver refills it with fresh statistics and adds it again. */
  requestStats(): void {
    const i = this.roles.indexOf("stats");
    const q = this.queues[i];
    if (!this.heldStats || !q || !this.ctx?.running()) return;
    q.push(this.heldStats, 0);
    this.heldStats = undefined;
    this.ctx.signalUsed();
  }

  private startStatsTimer(): void {
    this.stopStatsTimer();
    if (this.statsIntervalS <= 0) return;
    this.statsTimer = setInterval(() => this.requestStats(), this.statsIntervalS * 1000);
    this.statsTimer.unref?.();
  }

  private stopStatsTimer(): void {
    if (this.statsTimer) clearInterval(this.statsTimer);
    this.statsTimer = undefined;
  }
}

/** The queues a driver with these features sets up, in MMIO queue order (Linux's init_vqs skips absent ones). */
export function queueRoles(features: bigint): QueueRole[] {
  const roles: QueueRole[] = ["inflate", "deflate"];
  if (features & bit(VIRTIO_BALLOON_F_STATS_VQ)) roles.push("stats");
  if (features & bit(VIRTIO_BALLOON_F_PAGE_REPORTING)) roles.push("reporting");
  return roles;
}

/** Releases the pages, one madvise per run of consecutive PFNs. */
function releasePages(mem: GuestMemory, pfns: number[]): void {
  const sorted = [...pfns].sort((a, b) => a - b);
  let start = 0;
  for (let i = 1; i <= sorted.length; i++) {
    if (i < sorted.length && sorted[i]! <= sorted[i - 1]! + 1) continue;
    const first = sorted[start]!;
    const pages = sorted[i - 1]! - first + 1;
    const gpa = first * BALLOON_PAGE_SIZE;
    const len = pages * BALLOON_PAGE_SIZE;
    // A run crossing from one RAM region into the next is not contiguous on the host: page by page then.
    if (mem.contains(gpa, len)) mem.discard(gpa, len);
    else for (let p = first; p < first + pages; p++) mem.discard(p * BALLOON_PAGE_SIZE, BALLOON_PAGE_SIZE);
    start = i;
  }
}

/** Releases the whole host pages inside [addr, addr+len) (already checked to be guest RAM); returns the bytes. */
function releaseRange(mem: GuestMemory, addr: number, len: number): number {
  const start = Math.ceil(addr / PAGE_SIZE) * PAGE_SIZE;
  const end = Math.floor((addr + len) / PAGE_SIZE) * PAGE_SIZE;
  if (end <= start) return 0;
  mem.discard(start, end - start);
  return end - start;
}
