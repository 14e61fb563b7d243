// The nine steps of a Linux boot (src/boot/linux.ts), declared once: each step's title, the heading
// docs/boot-sequence.md gives it, the intro `kindling boot --explain` prints, and the type of the values
// the step hands to bootLinux's `explain` hook. linux.ts emits steps by number with data of that type,
// explain.ts decodes each with a function typed for it (no casts), and test/boot-steps.test.ts checks the
// document's headings and linux.ts's header against this list.

import type { E820Entry } from "../arch/x86_64/e820.ts";
import type { CmdlineAddition, CpuidChange, CpuidProfile } from "../arch/x86_64/cpuid.ts";
import type { LoadedKernel } from "../loader/kernel.ts";
import type { SetupHeader } from "../loader/bzimage.ts";

/** What each step hands to the `explain` hook: plain values, and byte arrays copied from guest memory or KVM. */
export interface BootStepData {
  1: {
    memSize: number;
    vcpus: number;
    cpuidProfile: CpuidProfile;
    /** KVM_SET_USER_MEMORY_REGION, one per slot. */
    slots: { slot: number; gpa: number; size: number; hostAddr?: number }[];
    /** The port-IO bus's devices. */
    pio: { base: number; size: number; name: string }[];
  };
  2: { addr: number; size: number };
  3: Omit<LoadedKernel, "setupHeader"> & {
    /** The setup header's fields without its raw bytes (bzImage only). */
    setupHeader?: Omit<SetupHeader, "raw">;
    imageSize: number;
  };
  4: {
    initrd?: { addr: number; size: number };
    devices: { name: string; addr: number; size: number; irq: number }[];
  };
  5: { addr: number; size: number; cmdline: string; additions: CmdlineAddition[] };
  6: {
    addr: number;
    e820: E820Entry[];
    /** struct boot_params as written (4096 bytes). */
    bootParams: Uint8Array;
    protocol?: "linux64" | "pvh";
    /** PVH: where hvm_start_info went. */
    startInfo?: number;
  };
  7: { addr: number; bytes: Uint8Array };
  8: {
    /** Per vCPU, what its cpuid profile and normalization changed. */
    cpuidChanges: CpuidChange[][];
    msrs: { index: number; data: number }[];
    /** The boot vCPU's kvm_regs, kvm_sregs, kvm_fpu and kvm_lapic_state. */
    regs: Uint8Array;
    sregs: Uint8Array;
    fpu: Uint8Array;
    lapic: Uint8Array;
    gdt: Uint8Array;
    pml4: Uint8Array;
    pdpt: Uint8Array;
    pd0: Uint8Array;
  };
  9: { vcpus: number };
}

export type BootStepNumber = keyof BootStepData;

/** One setup step and the values it wrote: `data`'s type follows from `n`. */
export type BootStep = { [N in BootStepNumber]: { n: N; title: string; data: BootStepData[N] } }[BootStepNumber];

export interface BootStepInfo {
  /** What --explain prints and linux.ts's header lists: "create the VM". */
  title: string;
  /** The step's heading in docs/boot-sequence.md: "## 1. Create the VM". */
  heading: string;
  /** What the step does and why, for --explain. */
  intro: string;
}

export const BOOT_STEPS: Readonly<Record<BootStepNumber, BootStepInfo>> = {
  1: {
    title: "create the VM",
    heading: "Create the VM",
    intro:
      "A VM is a file descriptor: open /dev/kvm, then KVM_CREATE_VM. KVM_CREATE_IRQCHIP and KVM_CREATE_PIT2 put the interrupt controllers (8259 PIC pair, IOAPIC, a local APIC per vCPU) and the 8254 timer inside the kernel. Guest RAM is ordinary host memory (mmap) that KVM_SET_USER_MEMORY_REGION maps at a guest-physical address, one slot per region. The devices kindling emulates itself sit on its port-IO bus: a guest `in` or `out` on their ports stops the vCPU with KVM_EXIT_IO. Code: src/vm.ts.",
  },
  2: {
    title: "add the boot-timer device",
    heading: "The boot-timer device",
    intro:
      "An MMIO device is a guest-physical range with no RAM behind it: a load or store there stops the vCPU with KVM_EXIT_MMIO and kindling answers it. The boot timer is one page; the guest's init writes 123 to it to say it is up. Code: src/devices/boot-timer.ts.",
  },
  3: {
    title: "load the kernel",
    heading: "Load the kernel",
    intro:
      "The kernel image is copied into guest RAM where the image asks to be: an ELF vmlinux by its PT_LOAD program headers (p_paddr), a bzImage's protected-mode part at 1 MiB. Nothing runs yet. Code: src/loader/.",
  },
  4: {
    title: "load the initrd and add the virtio devices",
    heading: "Load the initrd",
    intro:
      "The initramfs goes as high in RAM below the MMIO gap as the kernel allows; step 6 tells the kernel where. Each virtio device gets a 4 KiB MMIO window and an IRQ; its queue notifications become ioeventfds and its interrupt an irqfd. Code: src/loader/initrd.ts, Vm.addVirtioDevice in src/vm.ts.",
  },
  5: {
    title: "write the command line",
    heading: "The command line",
    intro:
      "The command line is a NUL-terminated string in guest memory; boot_params.hdr.cmd_line_ptr (step 6) points at it. A microVM has no bus to enumerate, so virtio devices are announced here too. Code: src/arch/x86_64/cmdline.ts.",
  },
  6: {
    title: "write the zero page",
    heading: "The zero page",
    intro:
      "struct boot_params, \"the zero page\", is everything a boot loader tells the kernel (Documentation/x86/boot.rst and zero-page.rst). kindling zeroes a page, copies a bzImage's setup header into it, then fills the loader's fields and the e820 memory map. Below: every field that is not zero. The kernel finds the page through RSI (step 8). Code: src/arch/x86_64/zero-page.ts, boot-params.ts, e820.ts.",
  },
  7: {
    title: "write the MP table",
    heading: "The MP table",
    intro:
      "Without ACPI, Linux learns its CPUs and interrupt wiring from the MP table (Intel MultiProcessor Specification 1.4): a floating pointer \"_MP_\" that it finds by scanning the EBDA, pointing at a \"PCMP\" configuration table of entries. Code: src/arch/x86_64/mptable.ts.",
  },
  8: {
    title: "set up the vCPUs",
    heading: "The vCPUs",
    intro:
      "Each vCPU gets its CPUID (KVM_SET_CPUID2), MSRs (KVM_SET_MSRS), local APIC wiring (KVM_SET_LAPIC) and FPU state (KVM_SET_FPU). The boot vCPU then skips real and protected mode: kindling writes a GDT and identity-mapping page tables into guest memory and loads registers that are already in 64-bit mode at the kernel's entry (KVM_SET_SREGS, KVM_SET_REGS), as boot.rst's \"64-bit Boot Protocol\" allows. Code: src/arch/x86_64/cpuid.ts, msrs.ts, lapic.ts, regs.ts, gdt.ts, paging.ts.",
  },
  9: {
    title: "start the vCPUs",
    heading: "Run",
    intro:
      "Each vCPU gets a worker thread that loops on KVM_RUN. The guest runs until it touches a port or an MMIO address kindling emulates; KVM_RUN then returns, the exit is described in the vCPU's shared kvm_run page, kindling handles it and enters again. Code: src/vcpu/vcpu.ts, src/vcpu/worker.ts. `kindling boot --trace FILE` records every exit.",
  },
};

export const BOOT_STEP_COUNT = Object.keys(BOOT_STEPS).length;

/** A step as the `explain` hook receives it, its title taken from the declaration. */
export function bootStep<N extends BootStepNumber>(n: N, data: BootStepData[N]): BootStep {
  return { n, title: BOOT_STEPS[n].title, data } as BootStep;
}
