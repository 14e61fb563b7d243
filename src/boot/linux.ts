// Boot a Linux kernel: the steps from an empty VM to the kernel's first instruction, in order.
// src/boot/steps.ts declares them (title, --explain intro, the values each hands to `explain`);
// docs/boot-sequence.md walks through the same numbered steps and what each writes where.
//
//   1. create the VM: KVM objects, RAM, irqchip, PIT, UART, i8042, CMOS RTC (vm.ts)
//   2. add the boot-timer device (Firecracker's "boot complete" signal)
//   3. load the kernel: ELF vmlinux or bzImage (src/loader/)
//   4. load the initrd and add the virtio devices: the initrd above the kernel (src/loader/initrd.ts), each
//      device in an MMIO window on an IRQ (vm.ts, devices/virtio/)
//   5. write the command line (cmdline.ts), with what the cpuid profile must add
//   6. write the zero page with the e820 map (zero-page.ts, e820.ts)
//   7. write the MP table so the kernel finds every vCPU and the IOAPIC (mptable.ts)
//   8. set up the vCPUs: CPUID, MSRs, LAPIC LINT0/LINT1; the boot vCPU also gets 64-bit mode (regs.ts)
//   9. start the vCPUs; the other vCPUs wait in the kernel for the boot vCPU's INIT/SIPI

import { INITRD_MAX_BYTES, KERNEL_MAX_BYTES, readImage } from "../host-file.ts";
import { Vm, type VmOptions } from "../vm.ts";
import { loadKernel, type LoadedKernel } from "../loader/kernel.ts";
import { loadInitrd } from "../loader/initrd.ts";
import { buildCmdline, rootArgs, writeCmdline } from "../arch/x86_64/cmdline.ts";
import { e820Map, type E820Entry } from "../arch/x86_64/e820.ts";
import { writeZeroPage } from "../arch/x86_64/zero-page.ts";
import { writeMptable } from "../arch/x86_64/mptable.ts";
import { vcpuCpuid, type CpuidChange, type CpuidProfile, type CmdlineAddition } from "../arch/x86_64/cpuid.ts";
import { bootMsrs, setupMsrs } from "../arch/x86_64/msrs.ts";
import {
  applyCpuidTemplate, applyMsrTemplate, hostCpuOf, staticCpuTemplate, type CpuTemplateDefinition,
} from "../arch/x86_64/cpu-templates.ts";
import type { CpuidEntry } from "../kvm/cpuid.ts";
import { setupLapic } from "../arch/x86_64/lapic.ts";
import { setupFpu, setupLongMode, setupPvhEntry } from "../arch/x86_64/regs.ts";
import { writePvhStartInfo } from "../arch/x86_64/pvh.ts";
import {
  BOOT_GDT_MAX_ENTRIES, BOOT_GDT_START, BOOT_TIMER_SIZE, BOOT_TIMER_START, EBDA_START, LEGACY_HOLE_START, MiB, PDE_START,
  PDPTE_START, PML4_START,
} from "../arch/x86_64/layout.ts";
import { BootTimer, bootTimerStart, type BootCompleteInfo } from "../devices/boot-timer.ts";
import { detectHost } from "../host.ts";
import {
  attachVirtioDevices, checkDeviceCount, createVirtioDevices, type DeviceModels, type MachineConfig, type MachineDevices,
} from "./machine.ts";
import { bootStep, type BootStep, type BootStepData, type BootStepNumber } from "./steps.ts";

/** A machine (machine.ts) and how to boot it: where output goes, hooks for --explain, tracing and tests. */
export interface LinuxBootOptions extends MachineConfig {
  consoleOutput?: VmOptions["consoleOutput"];
  log?: (line: string) => void;
  /** Called when the guest writes 123 to the boot-timer device. */
  onBootComplete?: (info: BootCompleteInfo) => void;
  /** Substitute net and vsock device models (tests). */
  deviceModels?: DeviceModels;
  /**
   * Called after each numbered step with what it wrote (for `kindling boot --explain`): the values, not
   * prose. The receiver formats them (src/explain.ts).
   */
  explain?: (step: BootStep) => void;
  /** Called after setup, just before the vCPUs start: attach tracers or test devices here. */
  beforeStart?: (vm: Vm) => void;
  /** false: set everything up but do not start the vCPUs (`--explain-only`); the caller stops the VM. */
  start?: boolean;
  /**
   * How to enter the kernel: "linux64" (default), the 64-bit Linux boot protocol with a zero page; or
   * "pvh", the PVH direct boot ABI with hvm_start_info (an ELF vmlinux with a XEN_ELFNOTE_PHYS32_ENTRY note).
   */
  protocol?: "linux64" | "pvh";
}

/** What bootLinux returns: the VM, what each step wrote, and the machine's devices by name. */
export interface BootedLinux {
  vm: Vm;
  plan: BootPlan;
  devices: MachineDevices;
}

export type { BootStep } from "./steps.ts";

/** What the boot wrote, step by step: for --explain, logs and tests. */
export interface BootPlan {
  kernel: LoadedKernel;
  initrd?: { addr: number; size: number };
  cmdline: string;
  cmdlineAdditions: CmdlineAddition[];
  e820: E820Entry[];
  zeroPage: number;
  cpuidProfile: CpuidProfile;
  cpuidChanges: CpuidChange[];
  /** The virtio devices, in window order. */
  devices: { name: string; addr: number; irq: number }[];
}

/** A path is read through host-file.ts: no symlink, a regular file, at most `max` bytes, from one descriptor. */
const bytesOf = (field: string, x: string | Uint8Array, max: number) => (typeof x === "string" ? readImage(field, x, max) : x);

export function resolveCpuidProfile(t: CpuidProfile | "auto" | undefined): CpuidProfile {
  if (t && t !== "auto") return t;
  return detectHost().emulatesGuestKernel ? "emulated-host" : "default";
}

/** The template a machine asks for: a static one checked against the host's CPU, or a custom one. */
function resolveCpuTemplate(t: NonNullable<MachineConfig["cpuTemplate"]>, supported: CpuidEntry[]): { name: string; definition: CpuTemplateDefinition } {
  if (typeof t === "object") return { name: "custom (cpu-config)", definition: t.custom };
  return { name: t, definition: staticCpuTemplate(t, hostCpuOf(supported)) };
}

export async function bootLinux(opts: LinuxBootOptions): Promise<BootedLinux> {
  const log = opts.log ?? (() => {});
  const started = bootTimerStart();
  const memSize = opts.memSize ?? 128 * MiB;
  const vcpus = opts.vcpus ?? 1;
  const cpuidProfile = resolveCpuidProfile(opts.cpuidProfile);
  const kernelImage = bytesOf("kernel", opts.kernel, KERNEL_MAX_BYTES);
  const initrdImage = opts.initrd === undefined ? undefined : bytesOf("initrd", opts.initrd, Math.min(INITRD_MAX_BYTES, memSize));
  // Every device must fit before anything is opened (one IRQ each: VIRTIO_DEVICES_MAX).
  checkDeviceCount(opts);

  // 1. The VM.
  // The syscall assist goes with the emulated-host template: only hosts that need it pay for its exits.
  const vm = new Vm({ memSize, vcpus, consoleOutput: opts.consoleOutput, log, syscallAssist: cpuidProfile === "emulated-host" });
  // The values for --explain are gathered only when someone listens: some take ioctls and copies.
  const explain = <N extends BootStepNumber>(n: N, data: () => BootStepData[N]) => opts.explain?.(bootStep(n, data()));
  try {
    explain(1, () => ({
      memSize, vcpus, cpuidProfile,
      slots: vm.memory.regions.map((r, slot) => ({ slot, gpa: r.gpa, size: r.bytes.byteLength, hostAddr: r.hostAddr })),
      pio: vm.pio.list(),
    }));
    // 2. The boot timer: the guest's init writes 123 to it when it is up.
    const timer = opts.bootTimer === false ? undefined : new BootTimer(started, (info) => {
      log(`boot complete: the guest wrote 123 to the boot timer ${info.wallMs.toFixed(1)} ms after VM creation started (CPU: ${((info.cpuUserUs + info.cpuSystemUs) / 1000).toFixed(1)} ms)`);
      opts.onBootComplete?.(info);
    });
    if (timer) vm.mmio.register(BOOT_TIMER_START, BOOT_TIMER_SIZE, timer);
    explain(2, () => ({ addr: BOOT_TIMER_START, size: BOOT_TIMER_SIZE }));

    // 3. The kernel.
    const kernel = loadKernel(vm.memory, kernelImage);
    explain(3, () => ({ ...kernel, setupHeader: kernel.setupHeader && { ...kernel.setupHeader, raw: undefined }, imageSize: kernelImage.byteLength }));

    // 4. The initrd, as high as the kernel allows.
    const initrd = initrdImage ? loadInitrd(vm.memory, initrdImage, kernel.kernelEnd, kernel.setupHeader) : undefined;

    // 4b. virtio devices (machine.ts): each in the next MMIO window on the next IRQ, found later by name.
    const devices = createVirtioDevices(opts, { models: opts.deviceModels, log });
    devices.bootTimer = timer;
    const attached = attachVirtioDevices(vm, devices);
    explain(4, () => ({
      initrd, devices: attached.map((a) => ({ name: a.transport.name, addr: a.addr, size: a.size, irq: a.irq })),
    }));

    // 8 (first half). CPUID per vCPU: the profile may need kernel command-line additions (step 5).
    const supported = vm.kvm.supportedCpuid();
    const threadsPerCore = opts.smt ? 2 : 1;
    const cpuids = vm.vcpus.map((_, i) => vcpuCpuid(supported, { cpuIndex: i, cpuCount: vcpus, profile: cpuidProfile, threadsPerCore }));
    // A Firecracker CPU template on top of the profile (cpu-templates.ts): refused here, at start, as
    // Firecracker refuses it, when the host's CPU is not one the template was made for.
    const template = opts.cpuTemplate === undefined ? undefined : resolveCpuTemplate(opts.cpuTemplate, supported);
    if (template) {
      for (const c of cpuids) {
        const applied = applyCpuidTemplate(c.entries, template.definition, { emulatingHost: detectHost().emulatesGuestKernel, name: template.name });
        c.entries = applied.entries;
        c.changes.push(...applied.changes);
      }
    }
    const additions = cpuids[0]!.cmdline;

    // 5. The command line.
    const cmdline = buildCmdline({
      base: opts.cmdline,
      extra: [...rootArgs(opts.drives ?? []), ...additions.map((a) => a.arg)],
      devices: attached.map((a) => ({ addr: a.addr, size: a.size, irq: a.irq })),
      hdrCmdlineSize: kernel.setupHeader?.cmdline_size,
    });
    const cmdlineAt = writeCmdline(vm.memory, cmdline, kernel.setupHeader?.cmdline_size);
    for (const a of additions) log(`cpuid profile ${cpuidProfile}: added "${a.arg}" to the command line (${a.why})`);
    explain(5, () => ({ ...cmdlineAt, cmdline, additions }));

    // 6. The zero page, with the e820 map (for PVH: hvm_start_info, with the same map).
    const e820 = e820Map(memSize);
    const protocol = opts.protocol ?? "linux64";
    if (protocol === "pvh" && kernel.pvhEntry === undefined) {
      throw new Error(`the kernel has no PVH entry (no XEN_ELFNOTE_PHYS32_ENTRY note${kernel.kind === "bzimage" ? "; a bzImage never has one, use the ELF vmlinux" : ""})`);
    }
    const zeroPage = writeZeroPage(vm.memory, {
      setupHeader: kernel.setupHeader?.raw,
      kernelLoadAddr: kernel.loadAddr,
      cmdline: cmdlineAt,
      initrd,
      e820,
    });
    const startInfo = protocol === "pvh" ? writePvhStartInfo(vm.memory, { cmdline: cmdlineAt, e820, initrd }) : undefined;
    explain(6, () => ({ addr: zeroPage, e820, bootParams: vm.memory.read(zeroPage, 4096), protocol, startInfo }));

    // 7. The MP table.
    writeMptable(vm.memory, vcpus);
    explain(7, () => ({ addr: EBDA_START, bytes: vm.memory.read(EBDA_START, LEGACY_HOLE_START - EBDA_START) }));

    // 8. The vCPUs.
    vm.vcpus.forEach((v, i) => {
      v.fd.setCpuid(cpuids[i]!.entries);
      setupMsrs(v.fd);
      if (template?.definition.msr_modifiers.length) {
        v.fd.setMsrs(applyMsrTemplate(v.fd.getMsrs(template.definition.msr_modifiers.map((m) => m.addr >>> 0)), template.definition));
      }
      setupLapic(v.fd);
      setupFpu(v.fd);
    });
    // The boot vCPU enters 64-bit mode at the kernel's entry, RSI pointing at the zero page
    // (Documentation/x86/boot.rst, "64-bit Boot Protocol"); or, for PVH, 32-bit protected mode at the
    // note's entry with EBX pointing at hvm_start_info.
    if (startInfo !== undefined) setupPvhEntry(vm.vcpus[0]!.fd, vm.memory, { entry: kernel.pvhEntry!, startInfo });
    else setupLongMode(vm.vcpus[0]!.fd, vm.memory, { entry: kernel.entry, rsi: zeroPage });
    const boot = vm.vcpus[0]!.fd;
    explain(8, () => ({
      cpuidChanges: cpuids.map((c) => c.changes),
      msrs: bootMsrs(),
      regs: boot.getRegs().bytes, sregs: boot.getSregs().bytes, fpu: boot.getFpu().bytes,
      lapic: boot.getLapic().bytes,
      gdt: vm.memory.read(BOOT_GDT_START, BOOT_GDT_MAX_ENTRIES * 8),
      pml4: vm.memory.read(PML4_START, 4096), pdpt: vm.memory.read(PDPTE_START, 4096), pd0: vm.memory.read(PDE_START, 4096),
    }));

    // 9. Go.
    explain(9, () => ({ vcpus }));
    opts.beforeStart?.(vm);
    if (opts.start !== false) await vm.start();
    return {
      vm,
      devices,
      plan: {
        kernel, initrd, cmdline, cmdlineAdditions: additions, e820, zeroPage, cpuidProfile, cpuidChanges: cpuids[0]!.changes,
        devices: attached.map((a) => ({ name: a.transport.name, addr: a.addr, irq: a.irq })),
      },
    };
  } catch (e) {
    await vm.stop(`boot setup failed: ${(e as Error).message}`);
    throw e;
  }
}
