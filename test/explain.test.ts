// src/explain.ts: the boot steps decoded with the struct layouts. The steps are built the way bootLinux
// builds them, from kindling's own setup code run against plain memory and a stand-in vCPU (no KVM).

import { describe, expect, test } from "bun:test";
import { StructView } from "../src/kvm/struct.ts";
import { kvm_fpu, kvm_lapic_state, kvm_regs, kvm_sregs } from "../src/kvm/uapi.ts";
import type { VcpuFd } from "../src/kvm/vcpu-fd.ts";
import type { CpuidEntry } from "../src/kvm/cpuid.ts";
import { GuestMemory } from "../src/memory.ts";
import { BOOT_STEPS, bootStep, type BootStep, type BootStepData, type BootStepNumber } from "../src/boot/steps.ts";
import { buildBootParams } from "../src/arch/x86_64/zero-page.ts";
import { e820Map } from "../src/arch/x86_64/e820.ts";
import { buildMptable } from "../src/arch/x86_64/mptable.ts";
import { setupLongMode } from "../src/arch/x86_64/regs.ts";
import { setupLapic } from "../src/arch/x86_64/lapic.ts";
import { bootMsrs } from "../src/arch/x86_64/msrs.ts";
import { KVM_CPUID_FEATURES, vcpuCpuid } from "../src/arch/x86_64/cpuid.ts";
import {
  BOOT_GDT_MAX_ENTRIES, BOOT_GDT_START, CMDLINE_START, EBDA_START, LEGACY_HOLE_START, MiB, PDE_START, PDPTE_START, PML4_START, ZERO_PAGE_START,
} from "../src/arch/x86_64/layout.ts";
import { explainStep, explainTo, formatStepJson, formatStepText } from "../src/explain.ts";

/** A vCPU whose registers live in StructViews: enough for setupLongMode and setupLapic. */
function fakeVcpu(): VcpuFd {
  const s = { regs: new StructView(kvm_regs), sregs: new StructView(kvm_sregs), fpu: new StructView(kvm_fpu), lapic: new StructView(kvm_lapic_state) };
  const copy = (v: StructView) => new StructView(v.layout, v.bytes.slice());
  return {
    getRegs: () => copy(s.regs), setRegs: (v: StructView) => (s.regs = copy(v)),
    getSregs: () => copy(s.sregs), setSregs: (v: StructView) => (s.sregs = copy(v)),
    getFpu: () => copy(s.fpu), setFpu: (v: StructView) => (s.fpu = copy(v)),
    getLapic: () => copy(s.lapic), setLapic: (v: StructView) => (s.lapic = copy(v)),
  } as unknown as VcpuFd;
}

const SUPPORTED: CpuidEntry[] = [
  { function: 1, index: 0, flags: 0, eax: 0x806f8, ebx: 0x20800, ecx: 0x80000000, edx: 0 },
  { function: KVM_CPUID_FEATURES, index: 0, flags: 0, eax: 0x1007efb, ebx: 0, ecx: 0, edx: 0 },
];

function bootSteps(): BootStep[] {
  const memSize = 128 * MiB;
  const mem = GuestMemory.plain([{ gpa: 0, size: 16 * MiB }]);
  const vcpu = fakeVcpu();
  setupLapic(vcpu);
  setupLongMode(vcpu, mem, { entry: 0x1000000, rsi: ZERO_PAGE_START });
  const initrd = { addr: 0x7e00000, size: 0x200000 };
  const cmdline = "console=ttyS0 reboot=k panic=1 pci=off noxsave";
  const bootParams = buildBootParams({ cmdline: { addr: CMDLINE_START, size: cmdline.length + 1 }, initrd, e820: e820Map(memSize) });
  const cpuids = [0, 1].map((i) => vcpuCpuid(SUPPORTED, { cpuIndex: i, cpuCount: 2, profile: "emulated-host" }));
  const d = <N extends BootStepNumber>(n: N, title: string, data: BootStepData[N]): BootStep => {
    expect(BOOT_STEPS[n].title).toBe(title);
    return bootStep(n, data);
  };
  return [
    d(1, "create the VM", { memSize, vcpus: 2, cpuidProfile: "emulated-host", slots: [{ slot: 0, gpa: 0, size: memSize, hostAddr: 0x7f0000000000 }], pio: [{ base: 0x3f8, size: 8, name: "8250" }] }),
    d(2, "add the boot-timer device", { addr: 0xc0000000, size: 4096 }),
    d(3, "load the kernel", { entry: 0x1000000, kind: "elf", kernelEnd: 0x1c18000, imageSize: 17 * MiB }),
    d(4, "load the initrd and add the virtio devices", { initrd, devices: [{ name: "virtio-rng", addr: 0xc0001000, size: 4096, irq: 5 }] }),
    d(5, "write the command line", { addr: CMDLINE_START, size: cmdline.length + 1, cmdline, additions: [{ arg: "noxsave", why: "the template says so" }] }),
    d(6, "write the zero page", { addr: ZERO_PAGE_START, e820: e820Map(memSize), bootParams }),
    d(7, "write the MP table", { addr: EBDA_START, bytes: (() => {
      const b = new Uint8Array(LEGACY_HOLE_START - EBDA_START);
      b.set(buildMptable(2, EBDA_START));
      return b;
    })() }),
    d(8, "set up the vCPUs", {
      cpuidChanges: cpuids.map((c) => c.changes), msrs: bootMsrs(),
      regs: vcpu.getRegs().bytes, sregs: vcpu.getSregs().bytes, fpu: vcpu.getFpu().bytes, lapic: vcpu.getLapic().bytes,
      gdt: mem.read(BOOT_GDT_START, BOOT_GDT_MAX_ENTRIES * 8),
      pml4: mem.read(PML4_START, 4096), pdpt: mem.read(PDPTE_START, 4096), pd0: mem.read(PDE_START, 4096),
    }),
    d(9, "start the vCPUs", { vcpus: 2 }),
  ];
}

const steps = bootSteps();
const text = (n: number) => formatStepText(explainStep(steps[n - 1]!));
/** Lines of a step's text with runs of spaces collapsed to one, so a check does not depend on column widths. */
const lines = (n: number) => text(n).split("\n").map((l) => l.trim().replace(/ +/g, " "));

describe("--explain text", () => {
  test("the zero page: nonzero boot_params fields by their boot-protocol names, and the e820 table", () => {
    const l = lines(6);
    expect(l).toContain("boot_params.hdr.type_of_loader = 0xff 0xff: a boot loader without an assigned ID");
    expect(l).toContain("boot_params.hdr.loadflags = 0x1 LOADED_HIGH");
    expect(l).toContain(`boot_params.hdr.cmd_line_ptr = 0x${CMDLINE_START.toString(16)} the command line (step 5)`);
    expect(l).toContain("boot_params.hdr.ramdisk_image = 0x7e00000 the initrd's address (step 4)");
    expect(l).toContain("1 0x0000000000100000 0x0000000007ffffff 127 MiB E820_RAM (usable)");
    // Only nonzero fields are listed: a zero field such as hdr.setup_sects never appears.
    expect(text(6)).not.toContain("setup_sects");
  });

  test("the MP table: floating pointer, processors, IOAPIC and interrupt wiring decoded", () => {
    const l = lines(7);
    expect(l).toContain('signature = "_MP_" at 0x9fc00');
    expect(l).toContain("MP_PROCESSOR local APIC id 0, CPU_ENABLED|CPU_BOOTPROCESSOR");
    expect(l).toContain("MP_PROCESSOR local APIC id 1, CPU_ENABLED");
    expect(l).toContain("MP_IOAPIC IOAPIC id 2 at 0xfec00000");
    expect(l).toContain("MP_LINTSRC LINT0 of local APIC 0 receives ExtINT");
    expect(l).toContain("MP_INTSRC ISA IRQ n -> IOAPIC pin n, for n = 0..23 (24 entries)");
  });

  test("the vCPUs: registers, segments, control registers, GDT and page tables decoded", () => {
    const l = lines(8);
    expect(l).toContain("rip = 0x1000000 the kernel's 64-bit entry");
    expect(l).toContain("rsi = 0x7000 the zero page (boot.rst: RSI holds its address)");
    expect(l).toContain("cs 0x10 0x0 0xffffffff code, execute/read/accessed 64-bit, DPL 0, present");
    expect(l.find((x) => x.startsWith("cr0 = 0x80000031"))).toContain("PE|ET|NE|PG");
    expect(l.find((x) => x.startsWith("efer = 0x500"))).toContain("LME|LMA");
    expect(l).toContain("2 0x10 0x00af9b000000ffff BOOT_CS (__BOOT_CS) code, execute/read/accessed, 64-bit, DPL 0, base 0x0 limit 0xffffffff");
    expect(l).toContain("PML4[0] 0x000000000000a003 P|RW PDPT at 0xa000");
    expect(l).toContain("PD0[1] 0x0000000000200083 P|RW|PS 2 MiB page at 0x200000");
    expect(l).toContain("LVT LINT0 = 0x00000700 the 8259 PIC's output: delivery mode ExtINT");
    expect(l).toContain("fcw = 0x37f x87 control word: every exception masked");
    expect(l).toContain("0x1a0 MSR_IA32_MISC_ENABLE 0x1");
  });

  test("CPUID: each change with before, after and why; other vCPUs show only how they differ", () => {
    const l = lines(8);
    expect(l.find((x) => x.startsWith("0x40000001.0 eax 0x01007efb 0x00000000"))).toContain("no KVM paravirt features");
    expect(l.find((x) => x.startsWith("0x00000001.0 edx 0x00000000 0x10000000"))).toContain("HTT");
    const vcpu1 = text(8).slice(text(8).indexOf("CPUID vCPU 1"));
    expect(vcpu1).toContain("initial APIC ID = vCPU index 1");
    expect(vcpu1.slice(0, vcpu1.indexOf("MSRs"))).not.toContain("no KVM paravirt features");
  });

  test("the command line: each argument with what it asks, the template's additions with their reason", () => {
    const l = lines(5);
    expect(l.find((x) => x.startsWith("reboot=k"))).toContain("keyboard controller");
    expect(l).toContain("noxsave the template says so");
    expect(lines(4)).toContain("virtio-rng 0xc0001000-0xc0001fff 5");
  });
});

describe("--explain=json", () => {
  test("one line per step: the decoded sections and the raw values, bytes as hex", () => {
    const out = formatStepJson(steps[5]!);
    expect(out.endsWith("\n")).toBe(true);
    expect(out.trimEnd()).not.toContain("\n");
    const j = JSON.parse(out);
    expect(j.n).toBe(6);
    expect(j.title).toBe("write the zero page");
    const fields = j.sections[0].fields as { name: string; value: string }[];
    expect(fields.find((f) => f.name === "boot_params.hdr.type_of_loader")?.value).toBe("0xff");
    expect(j.data.bootParams).toHaveLength(4096 * 2);
    const step6 = steps[5]!;
    if (step6.n !== 6) throw new Error("step 6 is not sixth");
    expect(j.data.bootParams).toBe(Buffer.from(step6.data.bootParams).toString("hex"));
  });

  test("explainTo narrates every step in order", () => {
    const out: string[] = [];
    const narrate = explainTo("text", (s) => out.push(s));
    for (const s of steps) narrate(s);
    expect(out[0]).toStartWith("How kindling takes an empty process to a running Linux guest");
    out[0] = out[0]!.slice(out[0]!.indexOf("[1/9]"));
    expect(out.map((s) => s.split("\n")[0])).toEqual(steps.map((s) => `[${s.n}/9] ${s.title}`));
  });
});
