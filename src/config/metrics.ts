// Firecracker-style metrics: one JSON object per line, appended to the metrics path (a file or named pipe)
// every 60 seconds, on PUT /actions FlushMetrics, and when the microVM ends.
//
// Like Firecracker's counters, each value is the change since the previous line, so a reader sums lines
// to get totals. A line looks like:
//
//   {"utc_timestamp_ms":1735732800000,
//    "put_api_requests":{"boot_source_count":1,"boot_source_fails":0, ...},
//    "vcpu":{"exit_io":5123,"exit_mmio":40, ...},
//    "uart":{"write_count":2048,"read_count":0,"missed_read_count":0,"interrupt_count":3},
//    "block_rootfs":{...the device's own counters, where it keeps any...}}

import { closeSync } from "node:fs";
import { KVM_EXIT_NAME } from "../kvm/uapi.ts";
import type { SerialCounters } from "../devices/serial.ts";
import { MicroVMError } from "./errors.ts";
import type { MetricsConfig } from "./schemas.ts";
import { openAppend, writeQuietly } from "./logger.ts";

/** Firecracker flushes its metrics every 60 s (METRICS_SYSTEM_FLUSH_INTERVAL). */
export const METRICS_FLUSH_INTERVAL_MS = 60_000;

/** Where the counters come from: the running VM, or nothing before it starts. */
export interface MetricsSource {
  /** Exits handled, by KVM_EXIT_* number, one map per vCPU. */
  exitCounts(): readonly ReadonlyMap<number, number>[];
  uart(): Readonly<SerialCounters> | undefined;
  /** Devices by metric name (block_rootfs, entropy, net_eth0, vsock); those with a `counters` object are reported. */
  devices(): readonly { name: string; device: unknown }[];
}

type Group = Record<string, number>;

export class Metrics {
  private config?: MetricsConfig;
  private fd?: number;
  private timer?: Timer;
  /** Cumulative API request counters: group ("put_api_requests") -> key ("drive_count") -> n. */
  private readonly api = new Map<string, Group>();
  /** The cumulative values written last, by "group.key", to turn totals into changes. */
  private readonly lastWritten = new Map<string, number>();
  /** Lines that could not be written (a full named pipe). */
  dropped = 0;

  constructor(
    private readonly instanceId: string,
    private readonly source: MetricsSource,
  ) {}

  get current(): MetricsConfig | undefined {
    return this.config && { ...this.config };
  }

  /** Start writing metrics to `config.metrics_path`. Firecracker allows this once per process. */
  configure(config: MetricsConfig, prefix = "metrics"): void {
    if (this.config) throw new MicroVMError(`${prefix}: the metrics system is already initialized (to ${this.config.metrics_path})`);
    this.fd = openAppend(`${prefix}.metrics_path`, config.metrics_path);
    this.config = { ...config };
    this.timer = setInterval(() => this.flush(), METRICS_FLUSH_INTERVAL_MS);
    this.timer.unref?.();
  }

  /** Count one API request: `method` GET/PUT/PATCH, `resource` the Firecracker metric name (drive, machine_cfg ...). */
  countRequest(method: string, resource: string, failed: boolean): void {
    const group = `${method.toLowerCase()}_api_requests`;
    const g = this.api.get(group) ?? {};
    this.api.set(group, g);
    g[`${resource}_count`] = (g[`${resource}_count`] ?? 0) + 1;
    if (method !== "GET") g[`${resource}_fails`] = (g[`${resource}_fails`] ?? 0) + (failed ? 1 : 0);
  }

  /** The cumulative counters now, by group. */
  totals(): Record<string, Group> {
    const out: Record<string, Group> = {};
    for (const [group, g] of this.api) out[group] = { ...g };
    const exits: Group = {};
    for (const counts of this.source.exitCounts()) {
      for (const [reason, n] of counts) {
        const name = `exit_${(KVM_EXIT_NAME[reason] ?? `KVM_EXIT_${reason}`).replace(/^KVM_EXIT_/, "").toLowerCase()}`;
        exits[name] = (exits[name] ?? 0) + n;
      }
    }
    out.vcpu = exits;
    const u = this.source.uart();
    if (u) out.uart = { write_count: u.bytesOut, read_count: u.bytesIn, missed_read_count: u.inputDropped, interrupt_count: u.interrupts };
    for (const { name, device } of this.source.devices()) {
      const counters = (device as { counters?: unknown }).counters;
      if (counters && typeof counters === "object") {
        out[name] = Object.fromEntries(Object.entries(counters).filter(([, v]) => typeof v === "number")) as Group;
      }
    }
    return out;
  }

  /** One metrics line: every counter's change since the previous line. */
  line(): Record<string, unknown> {
    const line: Record<string, unknown> = { utc_timestamp_ms: Date.now() };
    if (this.config?.emit_id) line.id = this.instanceId;
    if (this.config?.properties) line.properties = { ...this.config.properties };
    for (const [group, g] of Object.entries(this.totals())) {
      const changes: Group = {};
      for (const [key, total] of Object.entries(g)) {
        const id = `${group}.${key}`;
        changes[key] = total - (this.lastWritten.get(id) ?? 0);
        this.lastWritten.set(id, total);
      }
      line[group] = changes;
    }
    return line;
  }

  /** Write a line now (PUT /actions FlushMetrics). */
  flush(): void {
    if (this.fd === undefined) throw new MicroVMError("FlushMetrics: the metrics system is not initialized (PUT /metrics first)");
    if (!writeQuietly(this.fd, `${JSON.stringify(this.line())}\n`)) this.dropped++;
  }

  /** A last line, then stop the timer and close the file. */
  close(): void {
    if (this.fd === undefined) return;
    this.flush();
    clearInterval(this.timer);
    closeSync(this.fd);
    this.fd = undefined;
  }
}
