// QEMU command lines for the comparisons: Debian's qemu-system-x86_64 with the `microvm` machine (no PCI,
// no ACPI tables it would not need, qboot firmware), KVM only (`-accel kvm` fails instead of falling back
// to TCG emulation), nothing but what each benchmark needs.

import { MiB } from "../../src/arch/x86_64/layout.ts";

export const QEMU = "qemu-system-x86_64";

/**
 * The `-cpu` models the bench tries, in order, until QEMU runs the first probe: `host` passes what KVM
 * supports (as kindling does for probes); `max` is the same plus what QEMU can emulate; `qemu64` is a
 * fixed, old model. Some hosts make QEMU abort with the first two (on a nested AMD EPYC:
 * `kvm_buf_set_msrs: Assertion ... failed` after `failed to set MSR 0x10a`, which KVM refuses there).
 */
export const QEMU_CPU_MODELS = ["host", "max", "qemu64"] as const;

/** `qemu-system-x86_64 --version`'s first line, or undefined when QEMU is not installed. */
export function qemuVersion(): string | undefined {
  if (!Bun.which(QEMU)) return undefined;
  const r = Bun.spawnSync([QEMU, "--version"], { stdout: "pipe", stderr: "pipe" });
  return r.exitCode === 0 ? r.stdout.toString().split("\n")[0]!.trim() : undefined;
}

export interface QemuVmOptions {
  kernel: string;
  initrd?: string;
  append?: string;
  memSize: number;
  /** `-cpu` model: the one the bench found running here (QEMU_CPU_MODELS); "host" when not given. */
  cpu?: string;
  /** Add an i8042 so that the guest's reset (0xFE to port 0x64) ends QEMU under -no-reboot. */
  i8042?: boolean;
}

/** A 1-vCPU microvm whose serial console is QEMU's stdout; it exits when the guest resets. */
export function qemuCommand(o: QemuVmOptions): string[] {
  return [
    QEMU, "-M", "microvm", "-accel", "kvm", "-cpu", o.cpu ?? "host", "-smp", "1", "-m", `${o.memSize / MiB}M`,
    "-kernel", o.kernel, ...(o.initrd ? ["-initrd", o.initrd] : []), ...(o.append ? ["-append", o.append] : []),
    "-nodefaults", "-no-user-config", "-nographic", "-serial", "stdio",
    ...(o.i8042 ?? true ? ["-device", "i8042"] : []), "-no-reboot",
  ];
}
