// What a result was measured on: the host (CPU, kernel, how KVM runs guest kernel code, from detectHost()),
// the load on it, Bun's and QEMU's versions, and kindling's git revision (with a "-dirty" mark when the
// working tree has changes, so a figure is never attributed to a commit it did not come from).

import { availableParallelism, hostname, loadavg, totalmem } from "node:os";
import { detectHost } from "../../src/host.ts";
import { qemuVersion } from "../qemu/command.ts";

export interface Environment {
  date: string;
  hostname: string;
  cpu: string | null;
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

export function describeEnvironment(): Environment {
  const h = detectHost();
  const description = h.emulatesGuestKernel
    ? h.emulationCause === "pvm"
      ? "PVM-backed KVM: guest kernel code (CPL0) emulated instruction by instruction, guest user code (CPL3) native"
      : "nested KVM without VMX/SVM: guest kernel code (CPL0) emulated, guest user code (CPL3) native"
    : `hardware KVM (${h.virtualizationFlag})`;
  return {
    date: new Date().toISOString(),
    hostname: hostname(),
    cpu: h.cpuModel,
    cores: availableParallelism(),
    memoryMiB: Math.round(totalmem() / 1024 / 1024),
    kernel: h.kernelRelease,
    kvm: {
      usable: h.kvm.error === null, error: h.kvm.error, virtualizationFlag: h.virtualizationFlag, pvm: h.pvm,
      emulatesGuestKernel: h.emulatesGuestKernel, emulationCause: h.emulationCause, description,
    },
    load: { start: loadavg().map((x) => Math.round(x * 100) / 100) },
    bun: Bun.version,
    qemu: qemuVersion() ?? null,
    kindlingRevision: gitRevision(),
  };
}
