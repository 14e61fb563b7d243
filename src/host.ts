// Facts about the machine kindling runs on: can it open /dev/kvm, does KVM offer what kindling needs, and
// does this host run guest kernel code natively or emulate it. `kindling doctor` prints these facts; tests
// and `kindling boot` use them to refuse early, or to warn that a Linux boot will be slow.

// node:fs, node:os and consola are loaded when a function needs them, not with this module: probe boots
// call hostEmulatesGuestKernel() on the way to their first instruction, and loading node:fs alone costs a
// process 2 to 15 ms here (bench/README.md, start to first instruction).
const existsSync = (path: string): boolean => (require("node:fs") as typeof import("node:fs")).existsSync(path);
const release = (): string => (require("node:os") as typeof import("node:os")).release();
import { Kvm, KVM_DEVICE } from "./kvm/system.ts";
import { SysError, close, open, read_, O_RDONLY } from "./kvm/libc.ts";
import { KVM_API_VERSION } from "./kvm/uapi.ts";

/** Where the facts are read from. Tests point these at files of their own. */
export interface HostPaths {
  kvmDevice: string;
  cpuinfo: string;
  /** Present when the kvm_pvm module is loaded: KVM on top of PVM, a paravirtualised nested hypervisor. */
  pvmModule: string;
}

export const DEFAULT_HOST_PATHS: HostPaths = {
  kvmDevice: KVM_DEVICE,
  cpuinfo: "/proc/cpuinfo",
  pvmModule: "/sys/module/kvm_pvm",
};

export interface KvmFacts {
  device: string;
  /** The device node exists. */
  present: boolean;
  /** open(O_RDWR) succeeded and KVM_GET_API_VERSION returned KVM_API_VERSION. */
  openable: boolean;
  /** KVM_GET_API_VERSION; null when the device could not be opened. */
  apiVersion: number | null;
  /** The capabilities from Kvm#requiredCapabilities(); empty when the device could not be opened. */
  capabilities: { name: string; present: boolean }[];
  /** Why KVM is unusable; null when it is usable. */
  error: string | null;
}

export type EmulationCause = "pvm" | "no-vmx-svm";

export interface HostFacts {
  kvm: KvmFacts;
  /** The first "model name" of /proc/cpuinfo. */
  cpuModel: string | null;
  /** uname -r */
  kernelRelease: string;
  /** The hardware virtualization flag the CPU reports: vmx (Intel VT-x), svm (AMD-V), or none. */
  virtualizationFlag: "vmx" | "svm" | null;
  /** /sys/module/kvm_pvm exists. */
  pvm: boolean;
  /** Guest CPL0 code is emulated instruction by instruction rather than run on the CPU. */
  emulatesGuestKernel: boolean;
  emulationCause: EmulationCause | null;
}

/** Opens the KVM device and asks it what kindling needs to know. Never throws. */
export function detectKvm(device = DEFAULT_HOST_PATHS.kvmDevice): KvmFacts {
  const facts: KvmFacts = { device, present: existsSync(device), openable: false, apiVersion: null, capabilities: [], error: null };
  if (!facts.present) {
    facts.error = `${device} does not exist: KVM is not loaded (modprobe kvm_intel or kvm_amd) or this machine has no virtualization`;
    return facts;
  }
  let kvm: Kvm;
  try {
    kvm = new Kvm(device); // opens the device and checks KVM_GET_API_VERSION
  } catch (e) {
    if (e instanceof SysError && (e.code === "EACCES" || e.code === "EPERM")) {
      facts.error = `${device}: permission denied: run as root or add this user to the group that owns ${device} (usually kvm)`;
    } else {
      facts.error = `${device}: ${e instanceof Error ? e.message : String(e)}`;
    }
    return facts;
  }
  try {
    facts.openable = true;
    facts.apiVersion = KVM_API_VERSION; // the Kvm constructor refuses any other version
    facts.capabilities = kvm.requiredCapabilities();
    const missing = facts.capabilities.filter((c) => !c.present).map((c) => c.name);
    if (missing.length > 0) facts.error = `${device}: KVM lacks capabilities kindling needs: ${missing.join(", ")}`;
  } catch (e) {
    facts.error = `${device}: ${e instanceof Error ? e.message : String(e)}`;
  } finally {
    kvm.close();
  }
  return facts;
}

/**
 * A file's text through libc (procfs files report size 0, so read until EOF), or, with `until`, only as far
 * as its first occurrence: procfs formats a file as it is read, so reading less costs less. Throws if it
 * cannot.
 */
function readSmallFile(path: string, until?: string): string {
  const fd = open(path, O_RDONLY);
  try {
    const chunks: Uint8Array[] = [];
    for (;;) {
      const buf = new Uint8Array(until === undefined ? 65536 : 4096);
      const n = read_(fd, buf);
      if (n === 0) break;
      chunks.push(buf.subarray(0, n));
      if (until !== undefined) {
        const text = new TextDecoder().decode(Buffer.concat(chunks));
        if (text.includes(until)) return text;
      }
    }
    return new TextDecoder().decode(Buffer.concat(chunks));
  } finally {
    close(fd);
  }
}

/** Whether a path exists and can be opened for reading (a directory too). */
function canOpen(path: string): boolean {
  try {
    close(open(path, O_RDONLY));
    return true;
  } catch {
    return false;
  }
}

/** The fields of the first processor in /proc/cpuinfo that kindling reports. */
function readCpuinfo(path: string): { model: string | null; flags: Set<string> } {
  let text = "";
  try {
    // The first processor's block ends at the first blank line: the kernel formats every processor's on
    // demand, which costs more the more cores the host has.
    text = readSmallFile(path, "\n\n");
  } catch {
    return { model: null, flags: new Set() };
  }
  const field = (name: string) => text.match(new RegExp(`^${name}\\s*:\\s*(.*)$`, "m"))?.[1]?.trim();
  return { model: field("model name") ?? null, flags: new Set((field("flags") ?? "").split(/\s+/)) };
}

export function detectHost(paths: Partial<HostPaths> = {}): HostFacts {
  const p = { ...DEFAULT_HOST_PATHS, ...paths };
  const cpu = readCpuinfo(p.cpuinfo);
  const virtualizationFlag = cpu.flags.has("vmx") ? "vmx" : cpu.flags.has("svm") ? "svm" : null;
  const pvm = existsSync(p.pvmModule);
  // PVM runs the guest kernel (CPL0) by emulation even when the CPU has vmx; without vmx/svm, a nested
  // KVM has nothing to run guest kernel code on but its instruction emulator.
  const emulationCause: EmulationCause | null = pvm ? "pvm" : virtualizationFlag === null ? "no-vmx-svm" : null;
  return {
    kvm: detectKvm(p.kvmDevice),
    cpuModel: cpu.model,
    kernelRelease: release(),
    virtualizationFlag,
    pvm,
    emulatesGuestKernel: emulationCause !== null,
    emulationCause,
  };
}

let emulatesCached: boolean | undefined;

/**
 * Whether this host emulates guest kernel code (detectHost().emulatesGuestKernel without opening /dev/kvm),
 * read once per process: boot code asks it to decide on the emulated-host CPU template and the assists.
 */
export function hostEmulatesGuestKernel(): boolean {
  if (emulatesCached === undefined) {
    // The PVM module first: where it is loaded, /proc/cpuinfo need not be read at all.
    if (canOpen(DEFAULT_HOST_PATHS.pvmModule)) emulatesCached = true;
    else {
      const flags = readCpuinfo(DEFAULT_HOST_PATHS.cpuinfo).flags;
      emulatesCached = !(flags.has("vmx") || flags.has("svm"));
    }
  }
  return emulatesCached;
}

/** Whether guests can run here at all; `reason` names what is missing. Tests under CI=true fail on !ok. */
export function kvmAvailability(device = DEFAULT_HOST_PATHS.kvmDevice): { ok: true } | { ok: false; reason: string } {
  const kvm = detectKvm(device);
  return kvm.error === null ? { ok: true } : { ok: false, reason: kvm.error };
}

/** What running on an emulating host means for a user, in plain words. */
export function emulatingHostWarning(host: Pick<HostFacts, "emulationCause"> = detectHost()): string {
  const why =
    host.emulationCause === "pvm"
      ? "KVM on this host is PVM-backed (/sys/module/kvm_pvm exists)"
      : "this CPU reports neither vmx nor svm, so KVM here is nested without hardware virtualization";
  return [
    `${why}:`,
    "guest kernel-mode (CPL0) code is emulated one instruction at a time, about 1.5 µs each, while guest",
    "user-mode code runs natively. A guest `syscall` stays at CPL3 here; kindling's syscall assist completes",
    "each one (src/arch/x86_64/syscall-assist.ts). Expect the default guest's shell prompt about 1.5 minutes",
    "after boot (about a minute of kernel start, then init), and each command to take a few hundred ms per",
    "system call-heavy step. On a host with hardware KVM the same VMM boots Linux to a shell in about 100 ms.",
  ].join("\n");
}

const warned = new Set<string>();

/** Prints `text` the first time `key` is seen in this process; returns whether it printed. */
export function warnOnce(
  key: string,
  text: string,
  print: (text: string) => void = (t) => (require("consola") as typeof import("consola")).consola.warn(t),
): boolean {
  if (warned.has(key)) return false;
  warned.add(key);
  print(text);
  return true;
}

/** Prints emulatingHostWarning() once per process if this host emulates guest kernel code. */
export function warnIfEmulatingHost(host: HostFacts = detectHost()): void {
  if (host.emulatesGuestKernel) warnOnce("emulating-host", emulatingHostWarning(host));
}
