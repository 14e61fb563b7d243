// What a result was measured on: the host (CPU, kernel, how KVM runs guest kernel code, from detectHost()),
// the load on it, Bun's and QEMU's versions, and kindling's git revision (with a "-dirty" mark when the
// working tree has changes, so a figure is never attributed to a commit it did not come from).

import { readFileSync } from "node:fs";
import { availableParallelism, hostname, loadavg, totalmem } from "node:os";
import { detectHost } from "../../src/host.ts";
import { qemuVersion } from "../qemu/command.ts";

export interface Environment {
  date: string;
  hostname: string;
  cpu: string | null;
  /** /proc/cpuinfo's vendor_id, cpu family and model of the first processor (e.g. AuthenticAMD, 25, 1). */
  cpuVendor: string | null;
  cpuFamily: number | null;
  cpuModelNumber: number | null;
  /** One line naming the machine, for every table and chart: vendor, model name, cores, how KVM runs. */
  machine: string;
  cores: number;
  memoryMiB: number;
  kernel: string;
  kvm: { usable: boolean; error: string | null; virtualizationFlag: string | null; pvm: boolean; emulatesGuestKernel: boolean; emulationCause: string | null; description: string };
  /** 1, 5 and 15 minute load averages when the run started and when it ended. */
  load: { start: number[]; end?: number[] };
  bun: string;
  qemu: string | null;
  kindlingRevision: string;
}

function gitRevision(): string {
  const rev = Bun.spawnSync(["git", "rev-parse", "--short=12", "HEAD"], { cwd: import.meta.dir, stdout: "pipe", stderr: "pipe" });
  if (rev.exitCode !== 0) return "unknown (not a git checkout)";
  const dirty = Bun.spawnSync(["git", "status", "--porcelain", "--untracked-files=no"], { cwd: import.meta.dir, stdout: "pipe", stderr: "pipe" });
  return rev.stdout.toString().trim() + (dirty.stdout.toString().trim() ? "-dirty" : "");
}

/** A field of the first processor in /proc/cpuinfo. */
function cpuinfoField(text: string, name: string): string | null {
  return text.match(new RegExp(`^${name}\\s*:\\s*(.*)$`, "m"))?.[1]?.trim() ?? null;
}

/** The line that names the machine a result came from. */
export function machineLine(env: Pick<Environment, "cpu" | "cpuVendor" | "cores" | "kvm"> & { cpuFamily?: number | null; cpuModelNumber?: number | null }): string {
  const vendor = env.cpuVendor ? `${env.cpuVendor} ` : "";
  const fm = env.cpuFamily != null ? ` (family ${env.cpuFamily}, model ${env.cpuModelNumber ?? "?"})` : "";
  return `${vendor}${env.cpu ?? "unknown CPU"}${fm}, ${env.cores} cores, ${env.kvm.description}`;
}

export function describeEnvironment(): Environment {
  const h = detectHost();
  const description = h.emulatesGuestKernel
    ? h.emulationCause === "pvm"
      ? "PVM-backed KVM: guest kernel code (CPL0) emulated instruction by instruction, guest user code (CPL3) native"
      : "nested KVM without VMX/SVM: guest kernel code (CPL0) emulated, guest user code (CPL3) native"
    : `hardware KVM (${h.virtualizationFlag})`;
  let cpuinfo = "";
  try {
    cpuinfo = readFileSync("/proc/cpuinfo", "utf8");
  } catch {
    // not Linux, or /proc not mounted: the fields stay null
  }
  const num = (name: string) => {
    const v = cpuinfoField(cpuinfo, name);
    return v === null || !/^\d+$/.test(v) ? null : Number(v);
  };
  const kvm = {
    usable: h.kvm.error === null, error: h.kvm.error, virtualizationFlag: h.virtualizationFlag, pvm: h.pvm,
    emulatesGuestKernel: h.emulatesGuestKernel, emulationCause: h.emulationCause, description,
  };
  const cpu = { cpu: h.cpuModel, cpuVendor: cpuinfoField(cpuinfo, "vendor_id"), cpuFamily: num("cpu family"), cpuModelNumber: num("model"), cores: availableParallelism() };
  return {
    date: new Date().toISOString(),
    hostname: hostname(),
    ...cpu,
    machine: machineLine({ ...cpu, kvm }),
    memoryMiB: Math.round(totalmem() / 1024 / 1024),
    kernel: h.kernelRelease,
    kvm,
    load: { start: loadavg().map((x) => Math.round(x * 100) / 100) },
    bun: Bun.version,
    qemu: qemuVersion() ?? null,
    kindlingRevision: gitRevision(),
  };
}
