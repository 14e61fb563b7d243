// /dev/kvm: the system fd. From it kindling checks the API version and capabilities, learns the size of the
// kvm_run mapping, asks which CPUID leaves KVM supports, and creates VMs (api.rst 4.1 to 4.5, 4.88).

import { close, ioctl, open, O_RDWR, SysError, ERRNO } from "./libc.ts";
import { KVM } from "./ioctl.ts";
import { StructView } from "./struct.ts";
import { KVM_API_VERSION, KVM_CAP, kvm_cpuid2, kvm_cpuid_entry2, kvm_msr_list } from "./uapi.ts";
import { readCpuidEntries, type CpuidEntry } from "./cpuid.ts";
import { VmFd } from "./vm-fd.ts";

export type { CpuidEntry } from "./cpuid.ts";

export const KVM_DEVICE = "/dev/kvm";

/**
 * KVM_GET_SUPPORTED_CPUID's answer, asked once per process: it depends only on the host CPU and the KVM
 * module, and asking costs about 1 to 2 ms on a nested host. Callers get copies (they edit entries).
 */
let supportedCpuidOnce: CpuidEntry[] | undefined;

/** Device paths whose API version was checked, with their KVM_GET_VCPU_MMAP_SIZE. */
const checkedDevices = new Map<string, number>();

export class Kvm {
  readonly fd: number;
  readonly vcpuMmapSize: number;

  constructor(path = KVM_DEVICE) {
    this.fd = open(path, O_RDWR);
    // The module's answers do not change while the process runs: asked once per device path (two ioctls
    // fewer on the way to every VM after the first; a snapshot restore counts them).
    const known = checkedDevices.get(path);
    if (known !== undefined) {
      this.vcpuMmapSize = known;
      return;
    }
    const version = ioctl(this.fd, KVM.GET_API_VERSION);
    if (version !== KVM_API_VERSION) {
      close(this.fd);
      throw new Error(`${path}: KVM_GET_API_VERSION returned ${version}, kindling needs ${KVM_API_VERSION}`);
    }
    this.vcpuMmapSize = ioctl(this.fd, KVM.GET_VCPU_MMAP_SIZE);
    checkedDevices.set(path, this.vcpuMmapSize);
  }

  /** KVM_CHECK_EXTENSION: 0 when absent, otherwise a capability-specific positive value. */
  checkExtension(cap: number): number {
    return ioctl(this.fd, KVM.CHECK_EXTENSION, cap);
  }

  /** The capabilities kindling cannot work without, by name, with whether this host has them. */
  requiredCapabilities(): { name: string; present: boolean }[] {
    const needed = ["IRQCHIP", "HLT", "USER_MEMORY", "SET_TSS_ADDR", "EXT_CPUID", "PIT2", "IRQFD", "IOEVENTFD", "IMMEDIATE_EXIT", "VCPU_EVENTS"] as const;
    return needed.map((name) => ({ name: `KVM_CAP_${name}`, present: this.checkExtension(KVM_CAP[name]) > 0 }));
  }

  /** KVM_GET_SUPPORTED_CPUID: the leaves KVM can expose, with the host's values masked to what it emulates. */
  supportedCpuid(): CpuidEntry[] {
    supportedCpuidOnce ??= this.askSupportedCpuid();
    return supportedCpuidOnce.map((e) => ({ ...e }));
  }

  private askSupportedCpuid(): CpuidEntry[] {
    // The kernel fails with E2BIG if nent is too small; start at 128 and grow (api.rst 4.88).
    for (let nent = 128; nent <= 4096; nent *= 2) {
      const buf = new Uint8Array(kvm_cpuid2.size + nent * kvm_cpuid_entry2.size);
      new StructView(kvm_cpuid2, buf).set("nent", nent);
      try {
        ioctl(this.fd, KVM.GET_SUPPORTED_CPUID, buf);
      } catch (e) {
        if (e instanceof SysError && e.errno === ERRNO.E2BIG) continue;
        throw e;
      }
      return readCpuidEntries(buf);
    }
    throw new Error("KVM_GET_SUPPORTED_CPUID: more than 4096 entries");
  }

  /** KVM_GET_MSR_INDEX_LIST: every MSR KVM saves and restores for a guest (api.rst 4.3). */
  msrIndexList(): number[] {
    // With too small an `nmsrs` the kernel fails with E2BIG and writes the number it needs there.
    let n = 256;
    for (let tries = 0; tries < 4; tries++) {
      const buf = new Uint8Array(kvm_msr_list.size + n * 4);
      const head = new StructView(kvm_msr_list, buf).set("nmsrs", n);
      try {
        ioctl(this.fd, KVM.GET_MSR_INDEX_LIST, buf);
      } catch (e) {
        if (e instanceof SysError && e.errno === ERRNO.E2BIG) {
          n = head.get("nmsrs");
          continue;
        }
        throw e;
      }
      const count = head.get("nmsrs");
      return [...new Uint32Array(buf.buffer, kvm_msr_list.size, count)];
    }
    throw new Error("KVM_GET_MSR_INDEX_LIST: the list kept growing");
  }

  createVm(): VmFd {
    return new VmFd(ioctl(this.fd, KVM.CREATE_VM, 0), this);
  }

  close(): void {
    close(this.fd);
  }
}
