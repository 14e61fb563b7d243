// The pre-boot configuration of one microVM, as Firecracker's API builds it up: a boot source, a machine
// configuration, drives and network interfaces by id, a vsock, an entropy device, a serial console.
//
// Each setter takes an untrusted value (a request body, a config-file entry, a library call), checks its
// shape against the schemas (schemas.ts), then what kindling can do with it and what the host says (does the
// kernel file exist), and only then replaces the stored value, so a refused update changes nothing. What
// kindling does not implement of a valid body is refused by name, never silently ignored.

import { accessSync, constants, lstatSync, statSync } from "node:fs";
import { isLinkLocalValid, MMDS_DEFAULT_IPV4 } from "../mmds/stack.ts";
import * as S from "./schemas.ts";
import { MicroVMError } from "./errors.ts";
import { parseWith } from "./schemas.ts";
import { cpuTemplateFromConfig, CpuTemplateError, type CpuTemplateDefinition } from "../arch/x86_64/cpu-templates.ts";

/** Firecracker's defaults: "vCPU count (=1), memory size (=128 MiB)", SMT off, no CPU template. */
export const DEFAULT_MACHINE: S.MachineConfiguration = { vcpu_count: 1, mem_size_mib: 128, smt: false, track_dirty_pages: false, huge_pages: "None" };

function unsupported(field: string, what: string): MicroVMError {
  return new MicroVMError(`${field}: ${what} is not supported by kindling yet`);
}

/**
 * `path` is a regular file this process can read (and write, unless `readOnly`), and not a symbolic link:
 * an early answer to the request. The file is checked again, on its descriptor, when it is opened
 * (src/host-file.ts), which is the check that counts.
 */
export function checkFile(field: string, path: string, readOnly = true): void {
  let st;
  try {
    st = lstatSync(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new MicroVMError(`${field}: ${path}: ${code === "ENOENT" ? "no such file" : (e as Error).message}`);
  }
  if (st.isSymbolicLink()) throw new MicroVMError(`${field}: ${path} is a symbolic link (kindling opens host paths with O_NOFOLLOW; name the file itself)`);
  if (!st.isFile()) throw new MicroVMError(`${field}: ${path} is not a regular file`);
  try {
    accessSync(path, readOnly ? constants.R_OK : constants.R_OK | constants.W_OK);
  } catch {
    throw new MicroVMError(`${field}: ${path}: permission denied (${readOnly ? "needs read" : "needs read and write; or set is_read_only"})`);
  }
}

export class VmResources {
  bootSource?: S.BootSource;
  machine: S.MachineConfiguration = { ...DEFAULT_MACHINE };
  readonly drives = new Map<string, S.Drive>();
  readonly nets = new Map<string, S.NetworkInterface>();
  vsock?: S.Vsock;
  entropy?: S.EntropyDevice;
  serial?: S.SerialDevice;
  mmdsConfig?: S.MmdsConfig;
  balloon?: S.Balloon;
  /** PUT /cpu-config: a custom CPU template; at boot it is applied instead of machine-config's cpu_template. */
  cpuConfig?: CpuTemplateDefinition;

  setBootSource(input: unknown, prefix = "boot-source"): void {
    const b = parseWith(S.BootSource, input, prefix);
    checkFile(`${prefix}.kernel_image_path`, b.kernel_image_path);
    if (b.initrd_path !== undefined) checkFile(`${prefix}.initrd_path`, b.initrd_path);
    this.bootSource = b;
  }

  setMachineConfig(input: unknown, prefix = "machine-config"): void {
    const m = parseWith(S.MachineConfiguration, input, prefix);
    // "All parameters that are optional and are not specified are set to their default values."
    this.machine = this.checkMachine({ ...DEFAULT_MACHINE, ...m }, prefix);
  }

  patchMachineConfig(input: unknown, prefix = "machine-config"): void {
    const m = parseWith(S.MachineConfigurationUpdate, input, prefix);
    const merged = { ...this.machine, ...m };
    // The merged whole must hold too (smt set by this patch, an odd vcpu_count set by an earlier one).
    this.machine = this.checkMachine(parseWith(S.MachineConfiguration, merged, prefix), prefix);
  }

  private checkMachine(m: S.MachineConfiguration, prefix: string): S.MachineConfiguration {
    // T2, T2S, T2CL, T2A and C3 are checked against the host's CPU at InstanceStart, as Firecracker does
    // (src/arch/x86_64/cpu-templates.ts); V1N1 is Firecracker's aarch64 template.
    if (m.cpu_template === "V1N1") throw new MicroVMError(`${prefix}.cpu_template: V1N1 is an aarch64 (Neoverse V1) template; this is x86_64`);
    if (this.balloon && this.balloon.amount_mib > m.mem_size_mib) {
      throw new MicroVMError(`${prefix}.mem_size_mib: ${m.mem_size_mib} MiB is less than the balloon's ${this.balloon.amount_mib} MiB`);
    }
    if (m.huge_pages !== undefined && m.huge_pages !== "None") throw unsupported(`${prefix}.huge_pages`, `huge pages (${m.huge_pages})`);
    return m;
  }

  putDrive(input: unknown, prefix = "drive"): S.Drive {
    const d = parseWith(S.Drive, input, prefix);
    if (d.socket !== undefined) throw unsupported(`${prefix}.socket`, "vhost-user-block");
    if (d.io_engine === "Async") throw unsupported(`${prefix}.io_engine`, "the Async (io_uring) engine");
    if (d.path_on_host === undefined) throw new MicroVMError(`${prefix}.path_on_host: required (kindling's drives are virtio-block devices backed by a file)`);
    checkFile(`${prefix}.path_on_host`, d.path_on_host, d.is_read_only ?? false);
    const otherRoot = [...this.drives.values()].find((o) => o.is_root_device && o.drive_id !== d.drive_id);
    if (d.is_root_device && otherRoot) throw new MicroVMError(`${prefix}.is_root_device: drive ${otherRoot.drive_id} is already the root device`);
    this.drives.set(d.drive_id, d);
    return d;
  }

  putNetworkInterface(input: unknown, prefix = "network-interface"): S.NetworkInterface {
    const n = parseWith(S.NetworkInterface, input, prefix);
    for (const o of this.nets.values()) {
      if (o.iface_id === n.iface_id) continue;
      if (o.host_dev_name === n.host_dev_name) throw new MicroVMError(`${prefix}.host_dev_name: ${n.host_dev_name} is already used by ${o.iface_id}`);
      if (n.guest_mac !== undefined && o.guest_mac?.toLowerCase() === n.guest_mac.toLowerCase()) {
        throw new MicroVMError(`${prefix}.guest_mac: ${n.guest_mac} is already used by ${o.iface_id}`);
      }
    }
    this.nets.set(n.iface_id, n);
    return n;
  }

  setVsock(input: unknown, prefix = "vsock"): void {
    this.vsock = parseWith(S.Vsock, input, prefix);
  }

  setEntropy(input: unknown, prefix = "entropy"): void {
    this.entropy = parseWith(S.EntropyDevice, input, prefix);
  }

  /**
   * PUT /balloon before boot. Firecracker refuses a balloon larger than guest memory ("Amount of pages
   * requested is too large"). Free page hinting is not implemented; free page reporting is.
   */
  setBalloon(input: unknown, prefix = "balloon"): void {
    const b = parseWith(S.Balloon, input, prefix);
    if (b.free_page_hinting) throw unsupported(`${prefix}.free_page_hinting`, "free page hinting");
    this.checkBalloonSize(b.amount_mib, prefix);
    this.balloon = { stats_polling_interval_s: 0, ...b };
  }

  checkBalloonSize(amountMib: number, prefix: string): void {
    if (amountMib > this.machine.mem_size_mib) {
      throw new MicroVMError(`${prefix}.amount_mib: ${amountMib} MiB is more than the guest's ${this.machine.mem_size_mib} MiB (Firecracker: amount of pages requested is too large)`);
    }
  }

  /** PUT /cpu-config before boot: Firecracker's custom CPU template JSON. */
  setCpuConfig(input: unknown, prefix = "cpu-config"): void {
    const body = parseWith(S.CpuConfig, input, prefix);
    try {
      this.cpuConfig = cpuTemplateFromConfig(body);
    } catch (e) {
      if (e instanceof CpuTemplateError) throw new MicroVMError(e.message);
      throw e;
    }
  }

  /** Checks a serial configuration; the caller opens serial_out_path and then stores it. */
  checkSerial(input: unknown, prefix = "serial"): S.SerialDevice {
    return parseWith(S.SerialDevice, input, prefix);
  }

  /**
   * PUT /mmds/config, with Firecracker's rules and messages (its MmdsConfigError): a link-local address,
   * at least one interface, every one already configured.
   */
  setMmdsConfig(input: unknown, prefix = "mmds-config"): S.MmdsConfig {
    const m = parseWith(S.MmdsConfig, input, prefix);
    if (m.ipv4_address !== undefined && !isLinkLocalValid(m.ipv4_address)) throw new MicroVMError(`${prefix}.ipv4_address: The MMDS IPv4 address is not link local.`);
    if (m.network_interfaces.length === 0) throw new MicroVMError(`${prefix}.network_interfaces: The list of network interface IDs that allow forwarding MMDS requests is empty.`);
    const unknown = m.network_interfaces.filter((id) => !this.nets.has(id));
    if (unknown.length) {
      throw new MicroVMError(`${prefix}.network_interfaces: The list of network interface IDs provided contains at least one ID that does not correspond to any existing network interface (${unknown.join(", ")}).`);
    }
    this.mmdsConfig = m;
    return m;
  }

  /** The MMDS address the configuration gives (Firecracker's default without one). */
  get mmdsIpv4(): string {
    return this.mmdsConfig?.ipv4_address ?? MMDS_DEFAULT_IPV4;
  }

  /** Drives in the order the guest sees them: the root device first (/dev/vda), then the others as added. */
  orderedDrives(): S.Drive[] {
    const all = [...this.drives.values()];
    return [...all.filter((d) => d.is_root_device), ...all.filter((d) => !d.is_root_device)];
  }

  /** The FullVmConfiguration keys this object holds (logger and metrics live elsewhere). */
  toConfig(): S.FullVmConfiguration {
    const c: S.FullVmConfiguration = { "machine-config": { ...this.machine } };
    if (this.bootSource) c["boot-source"] = { ...this.bootSource };
    if (this.drives.size) c.drives = this.orderedDrives().map((d) => ({ ...d }));
    if (this.nets.size) c["network-interfaces"] = [...this.nets.values()].map((n) => ({ ...n }));
    if (this.vsock) c.vsock = { ...this.vsock };
    if (this.entropy) c.entropy = { ...this.entropy };
    if (this.mmdsConfig) c["mmds-config"] = { ...this.mmdsConfig, network_interfaces: [...this.mmdsConfig.network_interfaces] };
    if (this.balloon) c.balloon = { ...this.balloon };
    return c;
  }
}
