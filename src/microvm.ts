// The library: one microVM, configured the way Firecracker's API configures one, then started, paused,
// resumed and stopped. The API server (src/api/) and the CLI (src/cli/run.ts, api.ts) are thin layers on it.
//
//   import { MicroVM } from "kindling";
//   const vm = new MicroVM({ "boot-source": { kernel_image_path: "vmlinux" }, "machine-config": { vcpu_count: 1, mem_size_mib: 128 } });
//   vm.on("serial", (bytes) => process.stdout.write(bytes));
//   await vm.start();
//   ...
//   await vm.stop();
//
// Configuration is checked by the same zod schemas as the API's bodies (src/config/schemas.ts); anything
// refused throws a MicroVMError whose message names the field and the rule.

import { closeSync, existsSync } from "node:fs";
import type { z } from "./zod.ts";
import { bootLinux, type LinuxBootOptions } from "./boot/linux.ts";
import { checkDeviceCount, type DeviceModels, type MachineDevices } from "./boot/machine.ts";
import { MiB } from "./arch/x86_64/layout.ts";
import { limitOutput, type RateLimiter } from "./devices/rate-limiter.ts";
import { MmdsError, MmdsStore } from "./mmds/store.ts";
import type { BootCompleteInfo } from "./devices/boot-timer.ts";
import type { SerialCounters } from "./devices/serial.ts";
import { Lifecycle, type VmEnd, type VmState } from "./lifecycle.ts";
import * as S from "./config/schemas.ts";
import { parseWith } from "./config/schemas.ts";
import { MicroVMError } from "./config/errors.ts";
import { parseConfig } from "./config/file.ts";
import { checkFile, VmResources } from "./config/resources.ts";
import { FileBlockBackend, VirtioBlock } from "./devices/virtio/block.ts";
import type { BalloonStatistics, VirtioBalloon } from "./devices/virtio/balloon.ts";
import type { StaticCpuTemplate } from "./arch/x86_64/cpu-templates.ts";
import { Logger, openAppend, writeQuietly } from "./config/logger.ts";
import { Metrics } from "./config/metrics.ts";
import { rateLimitedLog, SERIAL_OUT_BURST_BYTES, SERIAL_OUT_BYTES_PER_SECOND, TokenBucket } from "./rate-limit.ts";
import { loadSnapshotBody, snapshotMicroVm } from "./snapshot/api.ts";
import { SnapshotCreateParams, SnapshotLoadParams } from "./snapshot/params.ts";
import { SnapshotError } from "./snapshot/errors.ts";

export { MicroVMError, ValidationError } from "./config/errors.ts";
export type { VmEnd } from "./lifecycle.ts";
export type { BootCompleteInfo } from "./devices/boot-timer.ts";
export type { DeviceClass, DeviceModels } from "./boot/machine.ts";

/** Firecracker's InstanceInfo.state, plus the two moments it has no word for (src/lifecycle.ts). */
export type MicroVMState = VmState;

/** What MicroVM needs of a booted VM (src/vm.ts's Vm has all of it; tests pass a stand-in). */
export interface RunningVm {
  pause(): void;
  resume(): void;
  stop(message?: string): Promise<VmEnd>;
  readonly exited: Promise<VmEnd>;
  readonly serial: { queueInput(bytes: Uint8Array): number; readonly counters: Readonly<SerialCounters> };
  readonly vcpus: readonly { readonly exitCounts: ReadonlyMap<number, number> }[];
  /** The legacy devices; the i8042's keyboard types SendCtrlAltDel. */
  readonly legacy?: { readonly i8042: { sendCtrlAltDel(): boolean } };
}

/** How MicroVM boots a machine: bootLinux, or a stand-in (tests). Devices come back by name. */
export type BootFn = (opts: LinuxBootOptions) => Promise<{ vm: RunningVm; devices: Pick<MachineDevices, "virtio"> & Partial<Pick<MachineDevices, "drives" | "balloon">> }>;

export interface MicroVMOptions {
  /** The instance id (Firecracker's --id): in GET /, log lines and metrics. Default "anonymous-instance". */
  id?: string;
  /** How to boot; tests pass a stand-in that needs no KVM. Default: bootLinux (src/boot/linux.ts). */
  boot?: BootFn;
  /** Device models for network interfaces and the vsock (tests pass stand-ins). Default: VirtioNet and VirtioVsock. */
  deviceModels?: DeviceModels;
  /** What `boot` boots, recorded in snapshots (default "linux"; a test booting a probe names the probe). */
  guestKind?: string;
}

export interface MicroVMEvents {
  /** Bytes the guest wrote to its serial console. */
  serial: Uint8Array;
  /** The guest's init wrote to the boot-timer device: it is up. */
  "boot-complete": BootCompleteInfo;
  /** The VM ended; the same value `exited` resolves with. */
  exit: VmEnd;
}

/** At most this much console output waits in the `serial` stream for a slow reader; more is dropped. */
const SERIAL_STREAM_BUFFER = 1 * MiB;
const DEFAULT_ID = "anonymous-instance";

/** Firecracker's rule for --id: 1 to 64 letters, digits or hyphens. */
export function checkInstanceId(id: string): string {
  if (!/^[A-Za-z0-9-]{1,64}$/.test(id)) throw new MicroVMError(`id: ${JSON.stringify(id)} must be 1 to 64 letters, digits or -`);
  return id;
}

export class MicroVM {
  readonly id: string;
  /** kindling's log for this VM (PUT /logger configures it). */
  readonly logger: Logger;
  /** Metrics for this VM (PUT /metrics configures them); the API server counts its requests here. */
  readonly metrics: Metrics;
  /** Resolves with how the VM ended. */
  readonly exited: Promise<VmEnd>;
  private readonly resources = new VmResources();
  /** The MMDS data store (PUT/PATCH/GET /mmds), shared by every interface MMDS is configured on. */
  readonly mmds = new MmdsStore();
  private readonly bootFn: BootFn;
  private readonly models: NonNullable<MicroVMOptions["deviceModels"]>;
  private readonly guestKind: string;
  /** Not started -> Starting -> Running <-> Paused -> Stopped (src/lifecycle.ts), the same table as Vm's. */
  private readonly lifecycle = new Lifecycle();
  private starting?: Promise<void>;
  private vm?: RunningVm;
  /** The virtio devices by metric name (block_<id>, entropy, net_<id>, vsock), from the recipe. */
  private devices: readonly { name: string; device: unknown }[] = [];
  /** The devices runtime updates reach by name: drives (PATCH /drives), the balloon (PATCH /balloon ...). */
  private named: Partial<Pick<MachineDevices, "drives" | "balloon">> = {};
  private serialFd?: number;
  /** Guest console bytes to serial_out_path: a token bucket (src/rate-limit.ts); over it they are dropped. */
  private readonly serialOutBucket = new TokenBucket(SERIAL_OUT_BURST_BYTES, SERIAL_OUT_BYTES_PER_SECOND);
  /** Bytes the bucket did not let through. */
  serialOutDropped = 0;
  private readonly serialOutLog = rateLimitedLog((m) => this.logger.warn(m, "serial"));
  private serialStream?: { stream: ReadableStream<Uint8Array>; controller: ReadableStreamDefaultController<Uint8Array> };
  /** Console bytes dropped because the `serial` stream's reader fell more than 1 MiB behind. */
  serialDropped = 0;
  /** Console bytes dropped by the serial `rate_limiter`. */
  serialRateLimited = 0;
  private readonly listeners = new Map<keyof MicroVMEvents, Set<(arg: never) => void>>();
  private resolveExited!: (exit: VmEnd) => void;

  constructor(config: S.MicroVMConfig = {}, opts: MicroVMOptions = {}) {
    this.id = checkInstanceId(opts.id ?? DEFAULT_ID);
    this.bootFn = opts.boot ?? (bootLinux as BootFn);
    this.models = opts.deviceModels ?? {};
    this.guestKind = opts.guestKind ?? "linux";
    this.logger = new Logger(this.id);
    this.metrics = new Metrics(this.id, {
      exitCounts: () => this.vm?.vcpus.map((v) => v.exitCounts) ?? [],
      uart: () => this.vm?.serial.counters,
      devices: () => this.devices,
    });
    this.exited = new Promise((resolve) => (this.resolveExited = resolve));
    this.mmds.tokens.setAad(this.id);
    this.applyConfig(config);
  }

  // ---- configuration (pre-boot) ----

  /** Apply a whole FullVmConfiguration (the --config-file shape); errors name the field (`drives[0].path_on_host`). */
  private applyConfig(input: unknown): void {
    const c = parseConfig(input);
    const r = this.resources;
    if (c["machine-config"]) r.setMachineConfig(c["machine-config"]);
    if (c["boot-source"]) r.setBootSource(c["boot-source"]);
    const seen = new Set<string>();
    c.drives?.forEach((d, i) => {
      if (seen.has(d.drive_id)) throw new MicroVMError(`drives[${i}].drive_id: ${d.drive_id} is used twice`);
      seen.add(d.drive_id);
      r.putDrive(d, `drives[${i}]`);
    });
    c["network-interfaces"]?.forEach((n, i) => {
      if (r.nets.has(n.iface_id)) throw new MicroVMError(`network-interfaces[${i}].iface_id: ${n.iface_id} is used twice`);
      r.putNetworkInterface(n, `network-interfaces[${i}]`);
    });
    if (c.vsock) r.setVsock(c.vsock);
    if (c.entropy) r.setEntropy(c.entropy);
    if (c.balloon) r.setBalloon(c.balloon);
    // The schema transforms cpu-config's strings into numbers: the setter parses the original again.
    if (c["cpu-config"]) r.setCpuConfig((input as Record<string, unknown>)["cpu-config"]);
    // After the interfaces it names.
    if (c["mmds-config"]) this.applyMmdsConfig(r.setMmdsConfig(c["mmds-config"]));
    // Last: these two open their files.
    if (c.logger) this.logger.configure(c.logger);
    if (c.metrics) this.metrics.configure(c.metrics);
  }

  private preBoot(what: string): void {
    if (this.lifecycle.state === "Not started") return;
    const why = this.lifecycle.state === "Starting" ? "the microVM is starting" : this.lifecycle.state === "Stopped" ? "the microVM has stopped" : "the microVM is running";
    throw new MicroVMError(`${what} can only be configured before the microVM starts, and ${why}`);
  }

  setBootSource(b: z.input<typeof S.BootSource>): void {
    this.preBoot("boot-source");
    this.resources.setBootSource(b);
  }
  setMachineConfig(m: z.input<typeof S.MachineConfiguration>): void {
    this.preBoot("machine-config");
    this.resources.setMachineConfig(m);
  }
  patchMachineConfig(m: z.input<typeof S.MachineConfigurationUpdate>): void {
    this.preBoot("machine-config");
    this.resources.patchMachineConfig(m);
  }
  putDrive(d: z.input<typeof S.Drive>): void {
    this.preBoot("drives");
    this.resources.putDrive(d);
  }
  putNetworkInterface(n: z.input<typeof S.NetworkInterface>): void {
    this.preBoot("network-interfaces");
    this.resources.putNetworkInterface(n);
  }
  setVsock(v: z.input<typeof S.Vsock>): void {
    this.preBoot("vsock");
    this.resources.setVsock(v);
  }
  setEntropy(e: z.input<typeof S.EntropyDevice>): void {
    this.preBoot("entropy");
    this.resources.setEntropy(e);
  }
  /** PUT /balloon: before boot only, as in Firecracker. */
  putBalloon(b: z.input<typeof S.Balloon>): void {
    this.preBoot("balloon");
    this.resources.setBalloon(b);
  }
  /** PUT /cpu-config: Firecracker's custom CPU template (src/arch/x86_64/cpu-templates.ts). */
  putCpuConfig(c: z.input<typeof S.CpuConfig>): void {
    this.preBoot("cpu-config");
    this.resources.setCpuConfig(c);
  }
  setLogger(l: z.input<typeof S.Logger>): void {
    this.preBoot("logger");
    this.logger.configure(parseWith(S.Logger, l, "logger"));
  }
  setMetrics(m: z.input<typeof S.Metrics>): void {
    this.preBoot("metrics");
    this.metrics.configure(parseWith(S.Metrics, m, "metrics"));
  }
  /** Where console output goes besides the `serial` event and stream: a file or named pipe. */
  setSerial(s: z.input<typeof S.SerialDevice>): void {
    this.preBoot("serial");
    const checked = this.resources.checkSerial(s);
    const fd = checked.serial_out_path === undefined ? undefined : openAppend("serial.serial_out_path", checked.serial_out_path);
    if (this.serialFd !== undefined) closeSync(this.serialFd);
    this.serialFd = fd;
    this.resources.serial = checked;
  }

  /** PUT /mmds/config (pre-boot, as in Firecracker): which interfaces reach MMDS, the version, the address. */
  setMmdsConfig(m: z.input<typeof S.MmdsConfig>): void {
    this.preBoot("mmds-config");
    this.applyMmdsConfig(this.resources.setMmdsConfig(m));
  }

  private applyMmdsConfig(m: S.MmdsConfig): void {
    this.mmds.version = m.version ?? "V1";
    this.mmds.imdsCompat = m.imds_compat ?? false;
  }

  // ---- MMDS contents: any time ----

  /** PUT /mmds: replace the metadata. */
  putMmds(data: unknown): void {
    this.mmdsCall(() => this.mmds.put(data));
  }

  /** PATCH /mmds: merge into the metadata (RFC 7396). */
  patchMmds(patch: unknown): void {
    this.mmdsCall(() => this.mmds.patch(patch));
  }

  /** GET /mmds: the metadata ({} while empty). */
  getMmds(): unknown {
    // Re-parsed from the serialized form: keys in sorted order, as Firecracker (serde_json) writes them.
    return JSON.parse(this.mmds.serialized());
  }

  private mmdsCall(f: () => void): void {
    try {
      f();
    } catch (e) {
      if (!(e instanceof MmdsError)) throw e;
      // Firecracker's VmmActionError wording; over the size limit is its 413.
      if (e.kind === "DataStoreLimitExceeded") throw new MicroVMError(`MMDS limit exceeded error: ${e.message}`, 413);
      throw new MicroVMError(`MMDS error: ${e.message}`);
    }
  }

  // ---- runtime updates ----

  /**
   * PATCH /drives after start: a new `rate_limiter` at once, and a new backing file (path_on_host), as
   * firecracker-containerd and Kata swap a container's image into a placeholder drive. The guest sees a
   * configuration change and re-reads the size.
   */
  patchDrive(d: z.input<typeof S.PartialDrive>): void {
    const p = parseWith(S.PartialDrive, d, "drive");
    this.requireStarted("drive updates");
    const current = this.resources.drives.get(p.drive_id);
    if (!current) throw new MicroVMError(`drive.drive_id: no drive ${p.drive_id}`);
    if (p.rate_limiter !== undefined) {
      this.limiterOf(`block_${p.drive_id}`, "rateLimiter")?.update(p.rate_limiter);
      current.rate_limiter = mergeLimiter(current.rate_limiter, p.rate_limiter);
    }
    if (p.path_on_host === undefined || p.path_on_host === current.path_on_host) return;
    const readOnly = current.is_read_only ?? false;
    checkFile("drive.path_on_host", p.path_on_host, readOnly);
    const device = this.named.drives?.get(p.drive_id);
    if (!(device instanceof VirtioBlock)) throw new MicroVMError(`drive.drive_id: drive ${p.drive_id} has no block device to update`);
    try {
      device.replaceBackend(new FileBlockBackend(p.path_on_host, readOnly));
    } catch (e) {
      throw new MicroVMError(`drive.path_on_host: ${(e as Error).message}`);
    }
    this.resources.drives.set(p.drive_id, { ...current, path_on_host: p.path_on_host });
    this.logger.info(`drive ${p.drive_id} now reads ${p.path_on_host}`);
  }

  // ---- the balloon (PATCH /balloon, GET /balloon, /balloon/statistics) ----

  /** GET /balloon: the balloon's configuration with its current target. */
  get balloonConfig(): S.Balloon {
    const b = this.resources.balloon;
    if (!b) throw new MicroVMError("balloon: no balloon device is configured (PUT /balloon before InstanceStart)");
    return { ...b };
  }

  /** PATCH /balloon: a new target, before boot (stored) or after (the driver is told at once). */
  patchBalloon(u: z.input<typeof S.BalloonUpdate>): void {
    const { amount_mib } = parseWith(S.BalloonUpdate, u, "balloon");
    const b = this.resources.balloon;
    if (!b) throw new MicroVMError("balloon: no balloon device is configured (PUT /balloon before InstanceStart)");
    this.resources.checkBalloonSize(amount_mib, "balloon");
    if (this.lifecycle.state !== "Not started") this.balloonDevice("balloon updates").setTargetMib(amount_mib);
    this.resources.balloon = { ...b, amount_mib };
  }

  /** GET /balloon/statistics: after boot, with statistics enabled (a non-zero interval) at boot. */
  get balloonStatistics(): BalloonStatistics {
    const device = this.balloonDevice("balloon statistics");
    if (device.statsPollingIntervalS === 0) throw new MicroVMError("balloon statistics: not enabled (stats_polling_interval_s was 0 when the device was created)");
    return device.statistics();
  }

  /** PATCH /balloon/statistics: a new interval; after boot statistics cannot be turned on or off. */
  patchBalloonStatistics(u: z.input<typeof S.BalloonStatsUpdate>): void {
    const { stats_polling_interval_s } = parseWith(S.BalloonStatsUpdate, u, "balloon.statistics");
    const b = this.resources.balloon;
    if (!b) throw new MicroVMError("balloon: no balloon device is configured (PUT /balloon before InstanceStart)");
    if (this.lifecycle.state !== "Not started") {
      try {
        this.balloonDevice("balloon statistics").setStatsPollingInterval(stats_polling_interval_s);
      } catch (e) {
        throw new MicroVMError(`balloon.statistics.stats_polling_interval_s: ${(e as Error).message}`);
      }
    }
    this.resources.balloon = { ...b, stats_polling_interval_s };
  }

  private balloonDevice(what: string): VirtioBalloon {
    this.requireStarted(what);
    const device = this.named.balloon;
    if (!device) throw new MicroVMError(`${what}: no balloon device is configured (PUT /balloon before InstanceStart)`);
    return device;
  }

  /** PATCH /network-interfaces: new rx/tx rate limiters, at once. */
  patchNetworkInterface(n: z.input<typeof S.PartialNetworkInterface>): void {
    const p = parseWith(S.PartialNetworkInterface, n, "network-interface");
    this.requireStarted("network interface updates");
    const current = this.resources.nets.get(p.iface_id);
    if (!current) throw new MicroVMError(`network-interface.iface_id: no network interface ${p.iface_id}`);
    if (p.rx_rate_limiter !== undefined) {
      this.limiterOf(`net_${p.iface_id}`, "rxRateLimiter")?.update(p.rx_rate_limiter);
      current.rx_rate_limiter = mergeLimiter(current.rx_rate_limiter, p.rx_rate_limiter);
    }
    if (p.tx_rate_limiter !== undefined) {
      this.limiterOf(`net_${p.iface_id}`, "txRateLimiter")?.update(p.tx_rate_limiter);
      current.tx_rate_limiter = mergeLimiter(current.tx_rate_limiter, p.tx_rate_limiter);
    }
  }

  /** A running device's rate limiter, by the device's metrics name (a stand-in device may have none). */
  private limiterOf(name: string, field: "rateLimiter" | "rxRateLimiter" | "txRateLimiter"): RateLimiter | undefined {
    const device = this.devices.find((d) => d.name === name)?.device as Record<string, unknown> | undefined;
    const limiter = device?.[field] as RateLimiter | undefined;
    return typeof limiter?.update === "function" ? limiter : undefined;
  }

  private requireStarted(what: string): RunningVm {
    if (this.vm && (this.lifecycle.state === "Running" || this.lifecycle.state === "Paused")) return this.vm;
    const why = this.lifecycle.state === "Stopped" ? "the microVM has stopped" : "the microVM has not started (InstanceStart first)";
    throw new MicroVMError(`${what}: ${why}`);
  }

  // ---- what it is ----

  get state(): MicroVMState {
    return this.lifecycle.state;
  }

  /** The whole configuration, in the FullVmConfiguration shape (GET /vm/config). */
  get config(): S.FullVmConfiguration {
    const c = this.resources.toConfig();
    const logger = this.logger.current;
    const metrics = this.metrics.current;
    if (logger) c.logger = logger;
    if (metrics) c.metrics = metrics;
    return c;
  }

  /** The serial configuration (PUT /serial), if any. */
  get serialConfig(): S.SerialDevice | undefined {
    return this.resources.serial && { ...this.resources.serial };
  }

  get machineConfig(): S.MachineConfiguration {
    return { ...this.resources.machine };
  }

  // ---- life cycle ----

  /** Boot (InstanceStart). Resolves once the vCPUs run; the guest's boot goes on from there. */
  start(): Promise<void> {
    if (this.lifecycle.state !== "Not started") {
      return Promise.reject(new MicroVMError(this.lifecycle.state === "Starting" ? "InstanceStart: the microVM is already starting" : "InstanceStart: the microVM has already been started"));
    }
    this.starting = this.boot();
    return this.starting;
  }

  private async boot(): Promise<void> {
    const r = this.resources;
    if (!r.bootSource) throw new MicroVMError("InstanceStart: no boot source: configure boot-source (PUT /boot-source) first");
    const machine = this.bootOptions();
    // Count the devices before anything is opened: only VIRTIO_DEVICES_MAX fit (one IRQ each).
    try {
      checkDeviceCount(machine);
    } catch (e) {
      throw new MicroVMError(`InstanceStart: ${(e as Error).message}`);
    }
    this.lifecycle.to("Starting");
    try {
      const { vm, devices } = await this.bootFn(machine);
      // Firecracker's `mmds` metrics group too, when MMDS answers on some interface.
      this.devices = r.mmdsConfig ? [...devices.virtio, { name: "mmds", device: this.mmds }] : devices.virtio;
      this.named = { drives: devices.drives, balloon: devices.balloon };
      this.vm = vm;
      this.lifecycle.to("Running");
      this.logger.info(`microVM ${this.id} started`);
      void vm.exited.then((exit) => this.ended(exit));
    } catch (e) {
      this.lifecycle.to("Not started");
      if (e instanceof MicroVMError) throw e;
      throw new MicroVMError(`InstanceStart failed: ${(e as Error).message}`);
    }
  }

  /** The machine as configured (machine.ts's description), and where its output and events go. */
  private bootOptions(): LinuxBootOptions {
    const r = this.resources;
    const b = r.bootSource!;
    return {
      kernel: b.kernel_image_path,
      initrd: b.initrd_path,
      cmdline: b.boot_args,
      memSize: r.machine.mem_size_mib * MiB,
      vcpus: r.machine.vcpu_count,
      cpuidProfile: "auto",
      smt: r.machine.smt ?? false,
      // A custom template (PUT /cpu-config) wins over a static one named in machine-config.
      cpuTemplate: r.cpuConfig ? { custom: r.cpuConfig } : r.machine.cpu_template && r.machine.cpu_template !== "None" ? (r.machine.cpu_template as StaticCpuTemplate) : undefined,
      // The root drive first: it is /dev/vda. A partuuid finds it through its partition table instead.
      drives: r.orderedDrives().map((d) => ({
        id: d.drive_id, path: d.path_on_host!, readOnly: d.is_read_only ?? false, root: d.is_root_device, partuuid: d.partuuid,
        rateLimiter: d.rate_limiter,
      })),
      entropy: r.entropy !== undefined,
      entropyRateLimiter: r.entropy?.rate_limiter,
      nets: [...r.nets.values()].map((n) => ({
        id: n.iface_id, hostDevName: n.host_dev_name, guestMac: n.guest_mac, mtu: n.mtu,
        rxRateLimiter: n.rx_rate_limiter, txRateLimiter: n.tx_rate_limiter,
        // MMDS answers on the interfaces its configuration names (Firecracker's configure_mmds_network_stack).
        mmds: r.mmdsConfig?.network_interfaces.includes(n.iface_id) ? { store: this.mmds, ipv4: r.mmdsIpv4 } : undefined,
      })),
      vsock: r.vsock && { guestCid: r.vsock.guest_cid, udsPath: r.vsock.uds_path },
      balloon: r.balloon && {
        amountMib: r.balloon.amount_mib, deflateOnOom: r.balloon.deflate_on_oom,
        statsPollingIntervalS: r.balloon.stats_polling_interval_s, freePageReporting: r.balloon.free_page_reporting,
      },
      deviceModels: this.models,
      // The serial `rate_limiter` drops output over budget, as Firecracker's does (a UART cannot wait).
      consoleOutput: limitOutput(r.serial?.rate_limiter, (bytes) => this.consoleOutput(bytes), { onDrop: (n) => (this.serialRateLimited += n) }),
      log: (line) => this.logger.info(line),
      onBootComplete: (info) => this.emit("boot-complete", info),
    };
  }

  pause(): void {
    this.requireStarted("Paused").pause();
    this.lifecycle.to("Paused");
    this.logger.info(`microVM ${this.id} paused`);
  }

  resume(): void {
    this.requireStarted("Resumed").resume();
    this.lifecycle.to("Running");
    this.logger.info(`microVM ${this.id} resumed`);
  }

  // ---- snapshots (src/snapshot/api.ts) ----

  /** PUT /snapshot/create: only while Paused (Firecracker's rule). */
  async createSnapshot(body: unknown): Promise<void> {
    const p = parseWith(SnapshotCreateParams, body, "snapshot-create"); // a bad body is named before the state is
    const vm = this.requireStarted("snapshot/create");
    if (this.lifecycle.state !== "Paused") throw new MicroVMError('snapshot/create: the microVM must be Paused first (PATCH /vm {"state": "Paused"}); it is Running');
    try {
      const r = await snapshotMicroVm(vm, p, {
        config: this.config as Record<string, unknown>, machine: this.bootOptions(), names: this.devices.map((d) => d.name), kind: this.guestKind,
      });
      this.logger.info(`snapshot created: ${r.stateBytes} bytes of state, ${r.memoryBytes} bytes of guest memory written`);
    } catch (e) {
      throw snapshotFault("snapshot/create", e);
    }
  }

  /**
   * PUT /snapshot/load: only in a fresh microVM, with nothing configured but the logger and metrics (and
   * where the console goes). Without resume_vm the microVM comes up Paused. A failed load leaves it
   * "Not started", with nothing built.
   */
  async loadSnapshot(body: unknown): Promise<void> {
    const p = parseWith(SnapshotLoadParams, body, "snapshot-load");
    this.preBoot("snapshot/load");
    if (JSON.stringify(this.resources.toConfig()) !== JSON.stringify(new VmResources().toConfig())) {
      throw new MicroVMError("snapshot/load: the microVM has been configured (boot source, machine, devices); a snapshot can only be loaded before anything but the logger and metrics is");
    }
    this.lifecycle.to("Starting");
    try {
      const loaded = await loadSnapshotBody(p, {
        consoleOutput: (bytes) => this.consoleOutput(bytes), log: (line) => this.logger.info(line), models: this.models,
        onBootComplete: (info) => this.emit("boot-complete", info),
      });
      this.adoptSnapshotConfig(loaded.description?.config, p);
      this.devices = loaded.devices.virtio;
      this.named = { drives: loaded.devices.drives, balloon: loaded.devices.balloon };
      this.vm = loaded.vm;
      this.lifecycle.to("Running");
      if (!loaded.resumed) this.lifecycle.to("Paused");
      this.logger.info(`microVM ${this.id} loaded from a snapshot (${loaded.state.machine.kind}), ${this.lifecycle.state}`);
      void loaded.vm.exited.then((exit) => this.ended(exit));
    } catch (e) {
      this.lifecycle.to("Not started");
      throw snapshotFault("snapshot/load", e);
    }
  }

  /**
   * After a load: the snapshot's configuration becomes this microVM's (GET /vm/config), with the overrides
   * the load applied; its logger and metrics stay this process's own.
   */
  private adoptSnapshotConfig(config: Record<string, unknown> | undefined, p: { network_overrides?: { iface_id: string; host_dev_name: string }[]; vsock_override?: { uds_path: string } }): void {
    if (!config) return;
    const c = { ...(config as S.FullVmConfiguration), logger: undefined, metrics: undefined };
    c["network-interfaces"] = c["network-interfaces"]?.map((n) => ({ ...n, host_dev_name: p.network_overrides?.find((o) => o.iface_id === n.iface_id)?.host_dev_name ?? n.host_dev_name }));
    if (c.vsock && p.vsock_override) c.vsock = { ...c.vsock, uds_path: p.vsock_override.uds_path };
    try {
      this.applyConfig(c);
    } catch (e) {
      this.logger.warn(`the snapshot's configuration could not be adopted for GET /vm/config: ${(e as Error).message}`);
    }
  }

  /** Stop the VM (or, before start, mark it stopped). Resolves with how it ended. */
  async stop(message = "stopped by the VMM"): Promise<VmEnd> {
    if (this.lifecycle.state === "Starting") await this.starting?.catch(() => {});
    if (this.vm) return this.vm.stop(message).then(() => this.exited);
    if (this.lifecycle.state !== "Stopped") this.ended({ reason: "stopped", message: `${message} (before it started)` });
    return this.exited;
  }

  /**
   * PUT /actions SendCtrlAltDel: as in Firecracker, the i8042's keyboard presses and releases Ctrl+Alt+Del
   * and raises IRQ 1. A Linux guest with a keyboard driver and a VT reboots (reboot=k ends the VM).
   */
  sendCtrlAltDel(): void {
    const vm = this.requireStarted("SendCtrlAltDel");
    const i8042 = vm.legacy?.i8042;
    if (!i8042) throw new MicroVMError("SendCtrlAltDel: this VM has no i8042 keyboard");
    if (!i8042.sendCtrlAltDel()) throw new MicroVMError("SendCtrlAltDel: the keyboard's buffer is full (the guest has not read the keys sent before)");
    this.logger.info(`microVM ${this.id}: Ctrl+Alt+Del sent through the i8042 keyboard`);
  }

  /** PUT /actions FlushMetrics. */
  flushMetrics(): void {
    this.metrics.flush();
  }

  /** Type into the guest's serial console. Returns how many bytes fit (0 when not running). */
  writeSerial(bytes: Uint8Array): number {
    return this.vm && this.lifecycle.state !== "Stopped" ? this.vm.serial.queueInput(bytes) : 0;
  }

  // ---- output and events ----

  /**
   * The guest's console output as a stream, from the first time this is read. Read it steadily: more than
   * 1 MiB unread is dropped (counted in serialDropped). The same stream is returned each time; tee() it for two readers.
   */
  get serial(): ReadableStream<Uint8Array> {
    if (!this.serialStream) {
      let controller!: ReadableStreamDefaultController<Uint8Array>;
      const stream = new ReadableStream<Uint8Array>(
        // A reader that cancels (a `for await` that breaks) ends this stream; reading `serial` again starts another.
        { start: (c) => void (controller = c), cancel: () => void (this.serialStream = undefined) },
        new ByteLengthQueuingStrategy({ highWaterMark: SERIAL_STREAM_BUFFER }) as QueuingStrategy<Uint8Array>,
      );
      if (this.lifecycle.state === "Stopped") controller.close();
      this.serialStream = { stream, controller };
    }
    return this.serialStream.stream;
  }

  on<K extends keyof MicroVMEvents>(event: K, listener: (arg: MicroVMEvents[K]) => void): this {
    const set = this.listeners.get(event) ?? new Set();
    set.add(listener as (arg: never) => void);
    this.listeners.set(event, set);
    return this;
  }

  off<K extends keyof MicroVMEvents>(event: K, listener: (arg: MicroVMEvents[K]) => void): this {
    this.listeners.get(event)?.delete(listener as (arg: never) => void);
    return this;
  }

  private emit<K extends keyof MicroVMEvents>(event: K, arg: MicroVMEvents[K]): void {
    for (const l of this.listeners.get(event) ?? []) {
      try {
        (l as (a: MicroVMEvents[K]) => void)(arg);
      } catch (e) {
        this.logger.error(`a "${event}" listener threw: ${(e as Error).message}`);
      }
    }
  }

  private consoleOutput(bytes: Uint8Array): void {
    if (this.serialFd !== undefined) {
      // The guest decides how much it prints: the file gets what the token bucket allows, the rest is counted.
      const n = this.serialOutBucket.takeUpTo(bytes.byteLength);
      if (n > 0) writeQuietly(this.serialFd, bytes.subarray(0, n));
      if (n < bytes.byteLength) {
        this.serialOutDropped += bytes.byteLength - n;
        this.serialOutLog(`serial_out_path: ${this.serialOutDropped} bytes of guest console output dropped so far by the rate limit (${SERIAL_OUT_BYTES_PER_SECOND} bytes/s after a ${SERIAL_OUT_BURST_BYTES}-byte burst)`);
      }
    }
    const s = this.serialStream;
    if (s) {
      if ((s.controller.desiredSize ?? 0) >= bytes.byteLength) s.controller.enqueue(bytes);
      else this.serialDropped += bytes.byteLength;
    }
    this.emit("serial", bytes);
  }

  private ended(exit: VmEnd): void {
    this.lifecycle.to("Stopped");
    // The devices were closed with the VM (Vm.close); only devices never attached are closed here.
    if (this.serialFd !== undefined) closeSync(this.serialFd);
    this.serialFd = undefined;
    try {
      this.serialStream?.controller.close();
    } catch {
      // the reader cancelled the stream
    }
    this.metrics.close();
    this.logger.info(`microVM ${this.id} ended: ${exit.reason}: ${exit.message}`);
    this.logger.close();
    this.emit("exit", exit);
    this.resolveExited(exit);
  }
}

/**
 * A stored rate_limiter after a PATCH: the buckets the patch names replace the old ones (a bucket of size
 * or refill_time 0 removes it), the others stay, as the live limiter does (RateLimiter.update).
 */
function mergeLimiter(old: S.RateLimiter | undefined, patch: S.RateLimiter): S.RateLimiter {
  const out: S.RateLimiter = { bandwidth: old?.bandwidth, ops: old?.ops };
  for (const k of ["bandwidth", "ops"] as const) {
    const b = patch[k];
    if (b === undefined) continue;
    out[k] = b.size === 0 || b.refill_time === 0 ? undefined : { ...b };
  }
  return out;
}

/** A snapshot failure as the API's 400: the SnapshotError's code and message. */
function snapshotFault(what: string, e: unknown): MicroVMError {
  if (e instanceof MicroVMError) return e;
  if (e instanceof SnapshotError) return new MicroVMError(`${what}: ${e.code}: ${e.message}`);
  return new MicroVMError(`${what} failed: ${(e as Error).message}`);
}
