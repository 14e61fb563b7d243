// `kindling boot --explain`: the boot narrated step by step, with the values actually written.
//
// bootLinux() (src/boot/linux.ts) calls its `explain` hook after each of its nine steps with the raw values:
// numbers, and bytes copied from guest memory or from KVM (kvm_regs, kvm_sregs ...). This file decodes
// those bytes with the same struct layouts kindling wrote them with (src/kvm/uapi.ts, boot-params.ts,
// mptable.ts), so every name printed is the kernel's or the spec's, and renders the result as text for a
// terminal or as one JSON object per step for tools.

import { BOOT_STEP_COUNT, BOOT_STEPS, type BootStep, type BootStepData, type BootStepNumber } from "./boot/steps.ts";
import { StructView, type Layout } from "./kvm/struct.ts";
import { kvm_fpu, kvm_lapic_state, kvm_regs, kvm_sregs } from "./kvm/uapi.ts";
import * as BP from "./arch/x86_64/boot-params.ts";
import * as E820 from "./arch/x86_64/e820.ts";
import * as MP from "./arch/x86_64/mptable.ts";
import * as MSR from "./arch/x86_64/msrs.ts";
import * as R from "./arch/x86_64/regs.ts";
import { BOOT_CS, BOOT_DS, BOOT_TSS, USER_CS, USER_DS, segmentFromGdt } from "./arch/x86_64/gdt.ts";
import { PTE_P, PTE_PS, PTE_RW, PTE_US } from "./arch/x86_64/paging.ts";
import { APIC_LVT0, APIC_LVT1 } from "./arch/x86_64/lapic.ts";
import type { CpuidChange } from "./arch/x86_64/cpuid.ts";
import { APIC_START, COM1_IRQ, COM1_PORT, IOAPIC_START, PDE_START, PDPTE_START, PML4_START } from "./arch/x86_64/layout.ts";

export interface Field { name: string; value: string; note?: string }
export interface Table { columns: string[]; rows: string[][] }
export interface Section { heading: string; fields?: Field[]; table?: Table; lines?: string[] }
export interface ExplainedStep { n: number; title: string; intro: string; sections: Section[] }


// ---- number formatting ----

const hex = (n: number | bigint, width = 0) => `0x${n.toString(16).padStart(width, "0")}`;
const hex64 = (n: number | bigint) => hex(n, 16);
function size(n: number): string {
  for (const [unit, b] of [["GiB", 2 ** 30], ["MiB", 2 ** 20], ["KiB", 2 ** 10]] as const) {
    if (n >= b && n % b === 0) return `${n / b} ${unit}`;
  }
  return n >= 2 ** 20 ? `${(n / 2 ** 20).toFixed(1)} MiB` : `${n} bytes`;
}
/** Names of the set bits from a list, and any bits left over in hex: "PE|ET|NE|PG". */
function bits(value: number | bigint, names: [number | bigint, string][]): string {
  let rest = BigInt(value);
  const set: string[] = [];
  for (const [bit, name] of names) {
    if (rest & BigInt(bit)) {
      set.push(name);
      rest &= ~BigInt(bit);
    }
  }
  if (rest) set.push(hex(rest));
  return set.length ? set.join("|") : "0";
}
const ascii = (b: Uint8Array) => new TextDecoder().decode(b).replace(/\0+$/, "");
const u32s = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength);

// ---- the steps ----

/** One decoder per step (src/boot/steps.ts), typed by the step's data. */
const DECODERS: { [N in BootStepNumber]: (d: BootStepData[N]) => Section[] } = {
  1: (d) => [
    {
      heading: `${d.vcpus} vCPU(s), ${size(d.memSize)} of RAM, cpuid profile ${d.cpuidProfile}`,
      table: {
        columns: ["slot", "guest_phys_addr", "memory_size", "userspace_addr"],
        rows: d.slots.map((s) => [
          String(s.slot), hex64(s.gpa), `${hex(s.size)} (${size(s.size)})`, s.hostAddr === undefined ? "-" : hex(s.hostAddr),
        ]),
      },
      lines: ["struct kvm_userspace_memory_region per slot: the host memory at userspace_addr is the guest's RAM at guest_phys_addr."],
    },
    {
      heading: "port-IO devices kindling emulates (KVM_EXIT_IO)",
      table: {
        columns: ["ports", "device", "IRQ"],
        rows: d.pio.map((p) => [
          p.size === 1 ? hex(p.base) : `${hex(p.base)}-${hex(p.base + p.size - 1)}`, p.name, p.name === "8250" ? String(COM1_IRQ) : "-",
        ]),
      },
    },
    {
      heading: "devices inside KVM (no exit to kindling)",
      lines: [
        `8259 PIC pair and 8254 PIT on their legacy ports; IOAPIC at ${hex(IOAPIC_START)}; local APIC at ${hex(APIC_START)} in each vCPU.`,
      ],
    },
  ],
  2: (d) => [{ heading: "MMIO device", fields: [
    { name: "boot-timer", value: `${hex(d.addr)}-${hex(d.addr + d.size - 1)}`, note: size(d.size) },
  ] }],
  3: (d) => {
    const f: Field[] = [
      { name: "kind", value: String(d.kind), note: d.kind === "elf" ? "an uncompressed vmlinux: no decompressor runs in the guest" : "a bzImage" },
      { name: "image size", value: size(d.imageSize) },
      { name: "entry", value: hex(d.entry), note: "the 64-bit entry point: RIP in step 8" },
      { name: "kernelEnd", value: hex(d.kernelEnd), note: "first byte after the kernel; the initrd goes above" },
    ];
    if (d.pvhEntry !== undefined) f.push({ name: "pvhEntry", value: hex(d.pvhEntry), note: "the PVH entry (XEN_ELFNOTE_PHYS32_ENTRY), not used by this boot" });
    if (d.loadAddr !== undefined) f.push({ name: "loadAddr", value: hex(d.loadAddr), note: "where the protected-mode part went: hdr.code32_start" });
    const sections: Section[] = [{ heading: "loaded", fields: f }];
    const h = d.setupHeader;
    if (h) {
      sections.push({ heading: "its setup header (boot.rst)", fields: Object.entries(h).filter(([, v]) => typeof v === "number").map(([k, v]) => ({
        name: `hdr.${k}`, value: hex(v), note: BP_NOTE[`hdr.${k}`]?.(BigInt(v)),
      })) });
    }
    return sections;
  },
  4: (d) => {
    const { initrd, devices } = d;
    return [
      { heading: "initrd", fields: [initrd
        ? { name: "initrd", value: `${hex(initrd.addr)}-${hex(initrd.addr + initrd.size - 1)}`, note: size(initrd.size) }
        : { name: "initrd", value: "none" }] },
      devices.length
        ? { heading: "virtio-mmio devices", table: { columns: ["device", "MMIO window", "IRQ (GSI)"], rows: devices.map((v) => [v.name, `${hex(v.addr)}-${hex(v.addr + v.size - 1)}`, String(v.irq)]) } }
        : { heading: "virtio-mmio devices", lines: ["none: this boot asked for no disks and no entropy device (bootLinux's `drives` and `entropy` options)"] },
    ];
  },
  5: (d) => {
    const why = new Map(d.additions.map((a) => [a.arg, a.why]));
    return [
      { heading: "where", fields: [{ name: "address", value: hex(d.addr) }, { name: "size", value: `${d.size} bytes`, note: "with the NUL" }] },
      { heading: "the arguments", table: { columns: ["argument", "what it asks"], rows: d.cmdline.split(" ").map((a) => [a, why.get(a) ?? cmdlineMeaning(a)]) } },
    ];
  },
  6: (d) => {
    const bp = new StructView(BP.boot_params, d.bootParams);
    const n = bp.get("e820_entries");
    const rows: string[][] = [];
    for (let i = 0; i < n && i < BP.E820_MAX_ENTRIES_ZEROPAGE; i++) {
      const [addr, len, type] = [bp.get(`e820_table.${i}.addr`), bp.get(`e820_table.${i}.size`), bp.get(`e820_table.${i}.type`)];
      rows.push([String(i), hex64(addr), hex64(addr + len - 1), size(len), `${E820_NAME[type] ?? type} (${E820.e820TypeName(type)})`]);
    }
    const fields: Field[] = [];
    nonzeroFields(bp, BP.boot_params, "", fields);
    return [
      { heading: `struct boot_params at ${hex(d.addr)}: its nonzero fields`, fields },
      { heading: "boot_params.e820_table: the memory map (the kernel prints it as BIOS-e820 lines)", table: { columns: ["#", "addr", "last byte", "size", "type"], rows } },
    ];
  },
  7: (d) => decodeMptable(d.addr, d.bytes),
  8: (d) => [
    ...cpuidSections(d.cpuidChanges),
    { heading: "MSRs (KVM_SET_MSRS, struct kvm_msr_entry each)", table: { columns: ["index", "name", "data"], rows: d.msrs.map((m) => [hex(m.index), MSR_NAME[m.index] ?? "?", hex(m.data)]) } },
    lapicSection(d.lapic),
    fpuSection(d.fpu),
    regsSection(d.regs),
    ...sregsSections(d.sregs),
    gdtSection(d.gdt),
    pageTableSection(d.pml4, d.pdpt, d.pd0),
  ],
  9: (d) => [{ heading: "go", lines: [`${d.vcpus} vCPU thread(s) enter KVM_RUN; vCPU 0 starts at the entry above, the others wait in the kernel for INIT/SIPI from vCPU 0.`] }],
};

// ---- command line ----

const CMDLINE_MEANING: Record<string, string> = {
  console: `send the kernel log to this device (ttyS0: the 8250 UART at port ${hex(COM1_PORT)})`,
  reboot: "how to reboot: k = through the keyboard controller (the i8042 reset, which ends the VM)",
  panic: "reboot this many seconds after a panic instead of hanging",
  pci: "off: do not probe for a PCI bus (a microVM has none)",
  root: "the root filesystem device",
  rw: "mount the root filesystem read-write",
  ro: "mount the root filesystem read-only",
  "virtio_mmio.device": "a virtio-mmio device: <window size>@<address>:<IRQ>",
};
function cmdlineMeaning(arg: string): string {
  return CMDLINE_MEANING[arg.split("=")[0]!] ?? "";
}

// ---- the zero page ----

const E820_NAME: Record<number, string> = Object.fromEntries(
  Object.entries(E820).filter(([k, v]) => /^E820_[A-Z_]+$/.test(k) && typeof v === "number").map(([k, v]) => [v as number, k]),
);

/** Why a boot_params field has its value (boot.rst's field descriptions, shortened). */
const BP_NOTE: Record<string, (v: bigint) => string> = {
  "hdr.boot_flag": () => "0xAA55, the boot-sector signature",
  "hdr.header": () => "\"HdrS\": a setup header follows (protocol 2.00+)",
  "hdr.version": (v) => `boot protocol ${v >> 8n}.${String(v & 0xffn).padStart(2, "0")}`,
  "hdr.type_of_loader": () => "0xff: a boot loader without an assigned ID",
  "hdr.loadflags": (v) => bits(v, [[BP.LOADED_HIGH, "LOADED_HIGH"], [BP.KASLR_FLAG, "KASLR_FLAG"], [BP.QUIET_FLAG, "QUIET_FLAG"], [BP.KEEP_SEGMENTS, "KEEP_SEGMENTS"], [BP.CAN_USE_HEAP, "CAN_USE_HEAP"]]),
  "hdr.xloadflags": (v) => bits(v, [[BP.XLF_KERNEL_64, "XLF_KERNEL_64"], [BP.XLF_CAN_BE_LOADED_ABOVE_4G, "XLF_CAN_BE_LOADED_ABOVE_4G"], [BP.XLF_EFI_HANDOVER_32, "XLF_EFI_HANDOVER_32"], [BP.XLF_EFI_HANDOVER_64, "XLF_EFI_HANDOVER_64"], [BP.XLF_EFI_KEXEC, "XLF_EFI_KEXEC"], [BP.XLF_5LEVEL, "XLF_5LEVEL"], [BP.XLF_5LEVEL_ENABLED, "XLF_5LEVEL_ENABLED"]]),
  "hdr.vid_mode": () => "0xffff: NORMAL_VGA, keep the video mode",
  "hdr.cmd_line_ptr": () => "the command line (step 5)",
  "hdr.cmdline_size": (v) => `the longest command line the kernel takes: ${v} bytes without the NUL`,
  "hdr.ramdisk_image": () => "the initrd's address (step 4)",
  "hdr.ramdisk_size": (v) => `the initrd's size: ${size(Number(v))}`,
  "hdr.code32_start": () => "where the protected-mode kernel was loaded",
  "hdr.kernel_alignment": (v) => `a relocatable kernel is aligned to ${size(Number(v))}`,
  "hdr.init_size": (v) => `the kernel needs ${size(Number(v))} from its load address to start`,
  e820_entries: (v) => `${v} valid entries in e820_table (below)`,
  sentinel: () => "0xff from the image: the loader copied more than the setup header",
};

/** Every nonzero scalar (and nonzero byte array) of a struct, by path: `hdr.type_of_loader`. */
function nonzeroFields(view: StructView, layout: Layout, prefix: string, out: Field[]): void {
  for (const f of layout.fields) {
    const path = prefix ? `${prefix}.${f.name}` : f.name;
    if (path === "e820_table") continue; // shown as a table
    const t = f.type;
    if (typeof t === "string") {
      const v = view.getBig(path);
      if (v !== 0n) out.push({ name: `boot_params.${path}`, value: hex(v), note: BP_NOTE[path]?.(v) });
    } else if ("kind" in t) {
      nonzeroFields(view, t, path, out);
    } else if (t.of === "u8") {
      const b = view.slice(path);
      if (b.some((x) => x !== 0)) out.push({ name: `boot_params.${path}`, value: `${b.filter((x) => x !== 0).length} nonzero bytes` });
    } else {
      for (let i = 0; i < t.length; i++) {
        if (typeof t.of === "string") {
          const v = view.getBig(`${path}.${i}`);
          if (v !== 0n) out.push({ name: `boot_params.${path}.${i}`, value: hex(v) });
        } else nonzeroFields(view, t.of, `${path}.${i}`, out);
      }
    }
  }
}

// ---- the MP table ----

function decodeMptable(addr: number, bytes: Uint8Array): Section[] {
  const mpf = new StructView(MP.mpf_intel, bytes);
  const at = mpf.get("physptr") - addr;
  if (at < 0 || at + MP.mpc_table.size > bytes.byteLength) return [{ heading: "MP table", lines: ["the floating pointer does not point inside the EBDA"] }];
  const table = new StructView(MP.mpc_table, bytes, at);
  const entries: string[][] = [];
  const irqs: number[] = [];
  let off = at + MP.mpc_table.size;
  for (let i = 0; i < table.get("oemcount") && off < bytes.byteLength; i++) {
    const type = bytes[off]!;
    if (type === MP.MP_PROCESSOR) {
      const e = new StructView(MP.mpc_cpu, bytes, off);
      const flags = bits(e.get("cpuflag"), [[MP.CPU_ENABLED, "CPU_ENABLED"], [MP.CPU_BOOTPROCESSOR, "CPU_BOOTPROCESSOR"]]);
      entries.push(["MP_PROCESSOR", `local APIC id ${e.get("apicid")}, ${flags}`]);
      off += MP.mpc_cpu.size;
    } else if (type === MP.MP_BUS) {
      const e = new StructView(MP.mpc_bus, bytes, off);
      entries.push(["MP_BUS", `bus ${e.get("busid")} is "${ascii(e.slice("bustype")).trim()}"`]);
      off += MP.mpc_bus.size;
    } else if (type === MP.MP_IOAPIC) {
      const e = new StructView(MP.mpc_ioapic, bytes, off);
      entries.push(["MP_IOAPIC", `IOAPIC id ${e.get("apicid")} at ${hex(e.get("apicaddr"))}`]);
      off += MP.mpc_ioapic.size;
    } else if (type === MP.MP_INTSRC) {
      const e = new StructView(MP.mpc_intsrc, bytes, off);
      if (e.get("srcbusirq") === e.get("dstirq")) irqs.push(e.get("dstirq"));
      else entries.push(["MP_INTSRC", `bus IRQ ${e.get("srcbusirq")} -> IOAPIC pin ${e.get("dstirq")}`]);
      off += MP.mpc_intsrc.size;
    } else if (type === MP.MP_LINTSRC) {
      const e = new StructView(MP.mpc_lintsrc, bytes, off);
      const kind = { [MP.mp_INT]: "INT", [MP.mp_NMI]: "NMI", [MP.mp_ExtINT]: "ExtINT" }[e.get("irqtype")] ?? String(e.get("irqtype"));
      const cpu = e.get("destapic") === MP.MP_APIC_ALL ? "every local APIC" : `local APIC ${e.get("destapic")}`;
      entries.push(["MP_LINTSRC", `LINT${e.get("destapiclint")} of ${cpu} receives ${kind}`]);
      off += MP.mpc_lintsrc.size;
    } else break;
  }
  if (irqs.length) entries.push(["MP_INTSRC", `ISA IRQ n -> IOAPIC pin n, for n = ${irqs[0]}..${irqs[irqs.length - 1]} (${irqs.length} entries)`]);
  return [
    { heading: "the floating pointer (struct mpf_intel)", fields: [
      { name: "signature", value: `"${ascii(mpf.slice("signature"))}"`, note: `at ${hex(addr)}` },
      { name: "physptr", value: hex(mpf.get("physptr")), note: "the configuration table" },
      { name: "specification", value: String(mpf.get("specification")), note: "MP spec 1.4" },
    ] },
    { heading: "the configuration table (struct mpc_table) and its entries", fields: [
      { name: "signature", value: `"${ascii(table.slice("signature"))}"` },
      { name: "oem / productid", value: `"${ascii(table.slice("oem")).trim()}" / "${ascii(table.slice("productid")).trim()}"` },
      { name: "length", value: `${table.get("length")} bytes` },
      { name: "oemcount", value: String(table.get("oemcount")), note: "entries" },
      { name: "lapic", value: hex(table.get("lapic")), note: "local APIC address" },
    ], table: { columns: ["entry", "says"], rows: entries } },
  ];
}

// ---- the vCPUs ----

function cpuidSections(perVcpu: CpuidChange[][]): Section[] {
  const row = (c: CpuidChange) => [`${hex(c.leaf, 8)}.${c.subleaf}`, c.register, hex(c.before, 8), hex(c.after, 8), c.why];
  const key = (c: CpuidChange) => `${c.leaf}.${c.subleaf}.${c.register}.${c.after}`;
  const first = new Set((perVcpu[0] ?? []).map(key));
  return perVcpu.map((changes, i) => {
    const shown = i === 0 ? changes : changes.filter((c) => !first.has(key(c)));
    return {
      heading: i === 0
        ? "CPUID vCPU 0: what kindling changed in KVM_GET_SUPPORTED_CPUID's answer (KVM_SET_CPUID2)"
        : `CPUID vCPU ${i}: as vCPU 0, except`,
      table: { columns: ["leaf.subleaf", "reg", "before", "after", "why"], rows: shown.map(row) },
    };
  });
}

const MSR_NAME: Record<number, string> = Object.fromEntries(
  Object.entries(MSR).filter(([k, v]) => typeof v === "number" && !k.endsWith("_FAST_STRING")).map(([k, v]) => [v as number, k]),
);

/** LVT delivery modes, bits 8-10 (Intel SDM vol. 3A 11.5.1). */
const DELIVERY_MODE: Record<number, string> = { 0: "Fixed", 2: "SMI", 4: "NMI", 5: "INIT", 7: "ExtINT" };
/** LVT bit 16 masks the entry (SDM vol. 3A Figure 11-8). */
const LVT_MASKED = 1 << 16;

function lapicSection(bytes: Uint8Array): Section {
  const regs = u32s(new StructView(kvm_lapic_state, bytes).slice("regs"));
  const lvt = (name: string, off: number, pin: string): Field => {
    const v = regs.getUint32(off, true);
    return { name, value: hex(v, 8), note: `${pin}: delivery mode ${DELIVERY_MODE[(v >> 8) & 7] ?? (v >> 8) & 7}${v & LVT_MASKED ? ", masked" : ""}` };
  };
  return { heading: "local APIC (struct kvm_lapic_state: the APIC's register page)", fields: [
    lvt("LVT LINT0", APIC_LVT0, "the 8259 PIC's output"),
    lvt("LVT LINT1", APIC_LVT1, "NMI"),
  ] };
}

/** Exception mask bits: x87 FCW bits 0-5, MXCSR bits 7-12 (Intel SDM vol. 1 8.1.5, 10.2.3). */
const X87_MASKS = 0x3f;
const MXCSR_MASKS = 0x3f << 7;

function fpuSection(bytes: Uint8Array): Section {
  const f = new StructView(kvm_fpu, bytes);
  const masked = (v: number, m: number) => ((v & m) === m ? "every exception masked" : "some exceptions unmasked");
  return { heading: "FPU (struct kvm_fpu, as KVM_GET_FPU reads it back)", fields: [
    { name: "fcw", value: hex(f.get("fcw")), note: `x87 control word: ${masked(f.get("fcw"), X87_MASKS)}` },
    { name: "mxcsr", value: hex(f.get("mxcsr")), note: `SSE control and status: ${masked(f.get("mxcsr"), MXCSR_MASKS)}` },
  ] };
}

const RFLAGS_BITS: [number, string][] = [[R.X86_EFLAGS_FIXED, "reserved bit 1 (always 1)"], [R.X86_EFLAGS_IF, "IF"]];

function regsSection(bytes: Uint8Array): Section {
  const r = new StructView(kvm_regs, bytes);
  const notes: Record<string, string> = {
    rip: "the kernel's 64-bit entry", rsi: "the zero page (boot.rst: RSI holds its address)", rsp: "boot stack", rbp: "boot stack",
  };
  const names = kvm_regs.fields.map((f) => f.name);
  const fields = names.filter((n) => n === "rip" || r.getBig(n) !== 0n).map((n) => ({
    name: n, value: hex(r.getBig(n)), note: n === "rflags" ? bits(r.getBig(n), RFLAGS_BITS) : notes[n],
  }));
  const zero = names.filter((n) => n !== "rip" && r.getBig(n) === 0n);
  return { heading: "general registers (struct kvm_regs)", fields, lines: [`zero: ${zero.join(" ")}`] };
}

/** The type field of a segment descriptor (Intel SDM vol. 3A Table 3-1 and 3-2). */
function segmentType(s: number, type: number): string {
  if (!s) return { 0x2: "LDT", 0x9: "64-bit TSS (available)", 0xb: "64-bit TSS (busy)" }[type] ?? `system type ${type}`;
  const code = type & 8;
  const extra = [type & 2 ? (code ? "read" : "write") : "", type & 4 ? (code ? "conforming" : "expand-down") : "", type & 1 ? "accessed" : ""].filter(Boolean);
  return `${code ? "code, execute" : "data, read"}${extra.length ? `/${extra.join("/")}` : ""}`;
}

/** A code segment's mode: L = 64-bit, else D = 32-bit (SDM vol. 3A 3.4.5); data and system segments have none. */
const width = (s: number, type: number, l: number, db: number) => (s && type & 8 ? (l ? "64-bit" : db ? "32-bit" : "16-bit") : "");

const SEGMENT_REGISTERS = ["cs", "ds", "es", "fs", "gs", "ss", "tr", "ldt"];

function sregsSections(bytes: Uint8Array): Section[] {
  const s = new StructView(kvm_sregs, bytes);
  const seg = (r: string) => {
    const g = (f: string) => s.get(`${r}.${f}`);
    const mode = g("unusable") ? "unusable" : [width(g("s"), g("type"), g("l"), g("db")), `DPL ${g("dpl")}`, g("present") ? "present" : "not present"].filter(Boolean).join(", ");
    return [r, hex(g("selector")), hex(s.getBig(`${r}.base`)), hex(g("limit")), segmentType(g("s"), g("type")), mode];
  };
  const cr0: [number, string][] = [[R.X86_CR0_PE, "PE"], [R.X86_CR0_ET, "ET"], [R.X86_CR0_NE, "NE"], [R.X86_CR0_PG, "PG"]];
  const cr4: [number, string][] = [[R.X86_CR4_PAE, "PAE"], [R.X86_CR4_OSFXSR, "OSFXSR"], [R.X86_CR4_OSXMMEXCPT, "OSXMMEXCPT"]];
  const efer: [number, string][] = [[R.EFER_LME, "LME"], [R.EFER_LMA, "LMA"]];
  // IA32_APIC_BASE bit 8 = this is the bootstrap processor, bit 11 = APIC enabled (SDM vol. 3A 11.4.4).
  const apicBase: [bigint, string][] = [[1n << 8n, "BSP"], [1n << 11n, "enabled"], [~0xfffn, "base"]];
  return [
    { heading: "segment registers (struct kvm_segment each, decoded from the GDT below)", table: {
      columns: ["reg", "selector", "base", "limit", "type", "mode"], rows: SEGMENT_REGISTERS.map(seg),
    } },
    { heading: "control registers and descriptor tables (struct kvm_sregs)", fields: [
      { name: "cr0", value: hex(s.getBig("cr0")), note: `${bits(s.getBig("cr0"), cr0)}: protected mode with paging` },
      { name: "cr3", value: hex(s.getBig("cr3")), note: "the PML4: root of the page tables below" },
      { name: "cr4", value: hex(s.getBig("cr4")), note: `${bits(s.getBig("cr4"), cr4)}: PAE paging is required for long mode` },
      { name: "efer", value: hex(s.getBig("efer")), note: `${bits(s.getBig("efer"), efer)}: long mode enabled and active` },
      { name: "apic_base", value: hex(s.getBig("apic_base")), note: bits(s.getBig("apic_base") & 0xfffn, apicBase) + ` at ${hex(s.getBig("apic_base") & ~0xfffn)}` },
      { name: "gdt", value: `${hex(s.getBig("gdt.base"))} limit ${hex(s.get("gdt.limit"))}`, note: `${(s.get("gdt.limit") + 1) / 8} descriptors` },
      { name: "idt", value: `${hex(s.getBig("idt.base"))} limit ${hex(s.get("idt.limit"))}`, note: "empty: interrupts stay off until Linux loads its own IDT" },
    ] },
  ];
}

const SELECTOR_NAME: Record<number, string> = {
  [BOOT_CS >> 3]: "BOOT_CS (__BOOT_CS)", [BOOT_DS >> 3]: "BOOT_DS (__BOOT_DS)", [USER_DS >> 3]: "USER_DS (probes' CPL3)",
  [USER_CS >> 3]: "USER_CS (probes' CPL3)", [BOOT_TSS >> 3]: "BOOT_TSS",
};

function gdtSection(bytes: Uint8Array): Section {
  const dv = u32s(bytes);
  const rows: string[][] = [];
  for (let i = 0; i * 8 < bytes.byteLength; i++) {
    const e = dv.getBigUint64(i * 8, true);
    const name = SELECTOR_NAME[i] ?? "";
    if (i > 0 && rows[i - 1]?.[4]?.includes("TSS")) {
      rows.push([String(i), hex(i * 8), hex(e, 16), "", "(upper half of the TSS descriptor: base bits 63:32)"]);
      continue;
    }
    if (e === 0n) {
      rows.push([String(i), hex(i * 8), hex(e, 16), name, i === 0 ? "null descriptor" : "unused"]);
      continue;
    }
    const seg = segmentFromGdt(e, i * 8);
    const g = (f: string) => seg.get(f);
    const what = [segmentType(g("s"), g("type")), width(g("s"), g("type"), g("l"), g("db")), `DPL ${g("dpl")}`, `base ${hex(g("base"))} limit ${hex(g("limit"))}`].filter(Boolean).join(", ");
    rows.push([String(i), hex(i * 8), hex(e, 16), name, what]);
  }
  return { heading: "the GDT in guest memory (8-byte descriptors, Intel SDM vol. 3A 3.4.5)", table: { columns: ["#", "selector", "descriptor", "name", "decoded"], rows } };
}

const PTE_BITS: [bigint, string][] = [[PTE_P, "P"], [PTE_RW, "RW"], [PTE_US, "US"], [PTE_PS, "PS"]];
/** Bits 51:12 of an entry: the physical address of the next table or of the page. */
const PTE_ADDR = 0x000ffffffffff000n;

function pageTableSection(pml4: Uint8Array, pdpt: Uint8Array, pd0: Uint8Array): Section {
  const entry = (b: Uint8Array, i: number) => u32s(b).getBigUint64(i * 8, true);
  const present = (b: Uint8Array) => Array.from({ length: b.byteLength / 8 }, (_, i) => entry(b, i)).filter((e) => e & PTE_P).length;
  const row = (table: string, b: Uint8Array, i: number, points: string): string[] => {
    const e = entry(b, i);
    const flags = bits(e & 0xfffn, PTE_BITS);
    return [`${table}[${i}]`, hex(e, 16), flags, e & PTE_PS ? `2 MiB page at ${hex(e & PTE_ADDR)}` : `${points} at ${hex(e & PTE_ADDR)}`];
  };
  return {
    heading: `identity-mapping page tables (Intel SDM vol. 3A 4.5): PML4 at ${hex(PML4_START)}, PDPT at ${hex(PDPTE_START)}, page directories from ${hex(PDE_START)}`,
    table: { columns: ["entry", "value", "flags", "points to"], rows: [
      row("PML4", pml4, 0, "PDPT"),
      ...[0, 1, 2, 3].filter((i) => entry(pdpt, i) & PTE_P).map((i) => row("PDPT", pdpt, i, `page directory for GiB ${i}`)),
      row("PD0", pd0, 0, ""), row("PD0", pd0, 1, ""), row("PD0", pd0, 511, ""),
    ] },
    lines: [
      `present entries: PML4 ${present(pml4)}, PDPT ${present(pdpt)}, PD0 ${present(pd0)} of 512. Virtual address = physical address for the low 4 GiB.`,
      "P present, RW writable, US user (CPL3) may use it, PS this entry maps a 2 MiB page.",
    ],
  };
}

// ---- rendering ----

/** The decoder for a step, applied to its data (a function per step keeps `data`'s type tied to `n`). */
function decodeStep(step: BootStep): Section[] {
  switch (step.n) {
    case 1: return DECODERS[1](step.data);
    case 2: return DECODERS[2](step.data);
    case 3: return DECODERS[3](step.data);
    case 4: return DECODERS[4](step.data);
    case 5: return DECODERS[5](step.data);
    case 6: return DECODERS[6](step.data);
    case 7: return DECODERS[7](step.data);
    case 8: return DECODERS[8](step.data);
    case 9: return DECODERS[9](step.data);
  }
}

export function explainStep(step: BootStep): ExplainedStep {
  let sections: Section[] = [];
  try {
    sections = decodeStep(step);
  } catch (e) {
    // The narration must never stop a boot: say what could not be decoded instead.
    sections = [{ heading: "could not decode this step's values", lines: [(e as Error).message] }];
  }
  return { n: step.n, title: step.title, intro: BOOT_STEPS[step.n].intro, sections };
}

function wrap(text: string, indent: string, width = 100): string[] {
  const lines: string[] = [];
  let line = "";
  for (const word of text.split(/\s+/)) {
    if (line && indent.length + line.length + 1 + word.length > width) {
      lines.push(indent + line);
      line = word;
    } else line = line ? `${line} ${word}` : word;
  }
  if (line) lines.push(indent + line);
  return lines;
}

/** Cells longer than this do not widen their column: they get a line of their own (see tableLines). */
const MAX_PADDED_CELL = 48;

function tableLines(t: Table, indent: string): string[] {
  const all = [t.columns, ...t.rows];
  // The last column is free text: never padded, so a long explanation does not widen the others.
  const widths = t.columns.map((_, c) => Math.max(0, ...all.map((r) => (r[c] ?? "").length).filter((n) => n <= MAX_PADDED_CELL)));
  const line = (r: string[]) => indent + r.map((cell, c) => (c === r.length - 1 ? cell : cell.padEnd(widths[c]!))).join("  ").trimEnd();
  return all.flatMap((r) => {
    // A cell too long for its column ends the first line; the rest of the row follows on the next, aligned.
    const long = r.findIndex((cell, c) => c < r.length - 1 && cell.length > widths[c]!);
    if (long < 0) return [line(r)];
    return [line(r.slice(0, long + 1)), line([...r.slice(0, long + 1).map(() => ""), ...r.slice(long + 1)])];
  });
}

/** One step as text for a terminal: a heading, the intro, then each section. */
export function formatStepText(e: ExplainedStep): string {
  const out = [`[${e.n}/${BOOT_STEP_COUNT}] ${e.title}`, ...wrap(e.intro, "    ")];
  for (const s of e.sections) {
    out.push("", `  ${s.heading}`);
    if (s.fields?.length) {
      const w = Math.max(...s.fields.map((f) => f.name.length));
      const v = Math.max(...s.fields.map((f) => f.value.length));
      for (const f of s.fields) out.push(`    ${f.name.padEnd(w)} = ${f.note ? `${f.value.padEnd(v)}  ${f.note}` : f.value}`);
    }
    if (s.table) out.push(...tableLines(s.table, "    "));
    for (const l of s.lines ?? []) out.push(...wrap(l, "    "));
  }
  return out.join("\n") + "\n\n";
}

/** One step as a JSON line: the decoded sections and the raw values (bytes as hex strings). */
export function formatStepJson(step: BootStep): string {
  const raw = (_k: string, v: unknown) =>
    v instanceof Uint8Array ? Buffer.from(v).toString("hex") : typeof v === "bigint" ? hex(v) : v;
  return JSON.stringify({ ...explainStep(step), data: step.data }, raw) + "\n";
}

/** What the text starts with: how to read the steps. */
export const PREFACE =
  "How kindling takes an empty process to a running Linux guest, in the nine steps of bootLinux() (src/boot/linux.ts; " +
  "docs/boot-sequence.md says which document asks for each value). Each step says what it does, then shows the values " +
  "it wrote, read back from guest memory or from KVM and decoded with the kernel's own struct layouts and field names. " +
  "Addresses are guest-physical unless they say otherwise; numbers starting with 0x are hexadecimal.";

/** A receiver for bootLinux's `explain` option that writes each step as it happens (text starts with PREFACE). */
export function explainTo(format: "text" | "json", write: (s: string) => void): (step: BootStep) => void {
  return (step) => {
    if (format === "json") return write(formatStepJson(step));
    write((step.n === 1 ? `${wrap(PREFACE, "").join("\n")}\n\n` : "") + formatStepText(explainStep(step)));
  };
}
