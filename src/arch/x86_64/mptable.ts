// The MP table: how a kindling guest learns its CPUs and interrupt wiring without ACPI.
//
// Intel MultiProcessor Specification 1.4: a 16-byte "MP floating pointer structure" (signature "_MP_") in
// the EBDA points at an "MP configuration table" (signature "PCMP"): a header, then entries. Linux looks
// for the floating pointer in the last KiB of base memory (smp_scan_config(639 * 0x400, ...) in
// arch/x86/kernel/mpparse.c), which is where EBDA_START is. Kindling's table says:
//
//   one processor entry per vCPU   local APIC id = vCPU index; vCPU 0 is the bootstrap processor
//   one bus entry                  bus 0 is ISA
//   one I/O APIC entry             id = vCPU count (the first id no CPU uses), at IOAPIC_START
//   I/O interrupt entries          ISA IRQ n is wired to I/O APIC pin n, for n = 0..IRQ_MAX: the legacy
//                                  IRQs 0-15 and the GSIs virtio devices use (IRQ_BASE..IRQ_MAX); KVM's
//                                  default routing wires GSI n to pin n
//   two local interrupt entries    LINT0 receives ExtINT (the 8259 PIC), LINT1 receives NMI
//
// Struct layouts from arch/x86/include/asm/mpspec_def.h; their order follows the spec's chapter 4.

import type { GuestMemory } from "../../memory.ts";
import { StructView, array, struct, type Layout } from "../../kvm/struct.ts";
import { APIC_START, EBDA_START, IOAPIC_START, IRQ_MAX, LEGACY_HOLE_START } from "./layout.ts";

// ---- Structures (MP spec 4.1, 4.2, 4.3) ----

/** MP Floating Pointer Structure (MP spec 4.1). */
export const mpf_intel = struct("mpf_intel", [
  ["signature", array("u8", 4)],
  ["physptr", "u32"],
  ["length", "u8"], // in 16-byte paragraphs: 1
  ["specification", "u8"], // 4 for version 1.4
  ["checksum", "u8"],
  ["feature1", "u8"], // 0: a configuration table is present (no default configuration)
  ["feature2", "u8"], // bit 7 IMCR present; 0: virtual wire mode
  ["feature3", "u8"],
  ["feature4", "u8"],
  ["feature5", "u8"],
], { size: 16 });

/** MP Configuration Table Header (MP spec 4.2). */
export const mpc_table = struct("mpc_table", [
  ["signature", array("u8", 4)],
  ["length", "u16"], // base table length, header included
  ["spec", "u8"],
  ["checksum", "u8"],
  ["oem", array("u8", 8)],
  ["productid", array("u8", 12)],
  ["oemptr", "u32"],
  ["oemsize", "u16"],
  ["oemcount", "u16"], // number of entries after the header
  ["lapic", "u32"], // local APIC address
  ["reserved", "u32"],
], { size: 44 });

/** Processor entry (MP spec 4.3.1). */
export const mpc_cpu = struct("mpc_cpu", [
  ["type", "u8"],
  ["apicid", "u8"],
  ["apicver", "u8"],
  ["cpuflag", "u8"],
  ["cpufeature", "u32"], // CPU signature: family, model, stepping
  ["featureflag", "u32"], // leaf 1 EDX feature flags
  ["reserved", array("u32", 2)],
], { size: 20 });

/** Bus entry (MP spec 4.3.2). */
export const mpc_bus = struct("mpc_bus", [["type", "u8"], ["busid", "u8"], ["bustype", array("u8", 6)]], { size: 8 });

/** I/O APIC entry (MP spec 4.3.3). */
export const mpc_ioapic = struct("mpc_ioapic", [
  ["type", "u8"], ["apicid", "u8"], ["apicver", "u8"], ["flags", "u8"], ["apicaddr", "u32"],
], { size: 8 });

/** I/O interrupt assignment entry (MP spec 4.3.4). */
export const mpc_intsrc = struct("mpc_intsrc", [
  ["type", "u8"], ["irqtype", "u8"], ["irqflag", "u16"],
  ["srcbus", "u8"], ["srcbusirq", "u8"], ["dstapic", "u8"], ["dstirq", "u8"],
], { size: 8 });

/** Local interrupt assignment entry (MP spec 4.3.5). */
export const mpc_lintsrc = struct("mpc_lintsrc", [
  ["type", "u8"], ["irqtype", "u8"], ["irqflag", "u16"],
  ["srcbusid", "u8"], ["srcbusirq", "u8"], ["destapic", "u8"], ["destapiclint", "u8"],
], { size: 8 });

// ---- Constants (mpspec_def.h names) ----

export const SMP_MAGIC_IDENT = "_MP_";
export const MPC_SIGNATURE = "PCMP";
/** MP spec version 1.4, as mpf_intel.specification and mpc_table.spec give it. */
export const MPC_SPEC = 4;
export const MP_PROCESSOR = 0;
export const MP_BUS = 1;
export const MP_IOAPIC = 2;
export const MP_INTSRC = 3;
export const MP_LINTSRC = 4;
export const CPU_ENABLED = 1;
export const CPU_BOOTPROCESSOR = 2;
export const MPC_APIC_USABLE = 1;
/** enum mp_irq_source_types */
export const mp_INT = 0;
export const mp_NMI = 1;
export const mp_ExtINT = 3;
/** irqflag 0: polarity and trigger mode "conform to the bus" (ISA: active high, edge). */
export const MP_IRQPOL_DEFAULT = 0;
/** destapic 0xFF: every local APIC. */
export const MP_APIC_ALL = 0xff;
/** Version of an integrated (xAPIC) local APIC and of KVM's I/O APIC: 0x14 (Intel SDM vol. 3A 11.4.8). */
export const APIC_VERSION = 0x14;
/** mpc_cpu.cpufeature: family 6, model 0, stepping 0. */
export const CPU_SIGNATURE = 0x600;
/** mpc_cpu.featureflag: leaf 1 EDX bits FPU (0) and APIC (9). */
export const CPU_FEATURE_FPU = 1 << 0;
export const CPU_FEATURE_APIC = 1 << 9;
/** Space-padded, as the spec asks for these string fields. */
export const MPC_OEM = "KINDLING";
export const MPC_PRODUCT_ID = "MICROVM     ";
export const BUS_TYPE_ISA = "ISA   ";

/** Local interrupt entries: LINT0 and LINT1. */
const LINT_ENTRIES = 2;
/** I/O interrupt entries: one per IRQ 0..IRQ_MAX. */
const INTSRC_ENTRIES = IRQ_MAX + 1;

/** Bytes the floating pointer and table take for `cpus` vCPUs. */
export function mptableSize(cpus: number): number {
  return (
    mpf_intel.size + mpc_table.size + cpus * mpc_cpu.size + mpc_bus.size + mpc_ioapic.size +
    INTSRC_ENTRIES * mpc_intsrc.size + LINT_ENTRIES * mpc_lintsrc.size
  );
}

/** The most vCPUs whose table fits between EBDA_START and LEGACY_HOLE_START. */
export const MPTABLE_MAX_CPUS = Math.floor((LEGACY_HOLE_START - EBDA_START - mptableSize(0)) / mpc_cpu.size);

/** The value that makes `bytes` sum to 0 mod 256 once stored in the checksum byte (which must be 0 now). */
export function checksum(bytes: Uint8Array): number {
  let sum = 0;
  for (const b of bytes) sum = (sum + b) & 0xff;
  return (256 - sum) & 0xff;
}

const ascii = (s: string) => new TextEncoder().encode(s);

/** The floating pointer and configuration table for `cpus` vCPUs, as bytes to place at `base`. */
export function buildMptable(cpus: number, base = EBDA_START): Uint8Array {
  if (!Number.isInteger(cpus) || cpus < 1) throw new Error(`MP table: vCPU count ${cpus} must be a whole number >= 1`);
  if (cpus > MPTABLE_MAX_CPUS) {
    throw new Error(
      `MP table: ${cpus} vCPUs need ${mptableSize(cpus)} bytes, but only ${LEGACY_HOLE_START - EBDA_START} fit ` +
        `between EBDA_START and LEGACY_HOLE_START (at most ${MPTABLE_MAX_CPUS} vCPUs)`,
    );
  }
  const bytes = new Uint8Array(mptableSize(cpus));
  const ioapicId = cpus;

  // The configuration table follows the floating pointer directly.
  const tableAt = mpf_intel.size;
  let at = tableAt + mpc_table.size;
  let entries = 0;
  const entry = (layout: Layout, values: Record<string, number>) => {
    const v = new StructView(layout, bytes, at).assign(values);
    at += layout.size;
    entries++;
    return v;
  };

  for (let cpu = 0; cpu < cpus; cpu++) {
    entry(mpc_cpu, {
      type: MP_PROCESSOR,
      apicid: cpu,
      apicver: APIC_VERSION,
      cpuflag: CPU_ENABLED | (cpu === 0 ? CPU_BOOTPROCESSOR : 0),
      cpufeature: CPU_SIGNATURE,
      featureflag: CPU_FEATURE_APIC | CPU_FEATURE_FPU,
    });
  }
  entry(mpc_bus, { type: MP_BUS, busid: 0 }).slice("bustype").set(ascii(BUS_TYPE_ISA));
  entry(mpc_ioapic, { type: MP_IOAPIC, apicid: ioapicId, apicver: APIC_VERSION, flags: MPC_APIC_USABLE, apicaddr: IOAPIC_START });
  for (let irq = 0; irq <= IRQ_MAX; irq++) {
    entry(mpc_intsrc, {
      type: MP_INTSRC, irqtype: mp_INT, irqflag: MP_IRQPOL_DEFAULT,
      srcbus: 0, srcbusirq: irq, dstapic: ioapicId, dstirq: irq,
    });
  }
  entry(mpc_lintsrc, {
    type: MP_LINTSRC, irqtype: mp_ExtINT, irqflag: MP_IRQPOL_DEFAULT,
    srcbusid: 0, srcbusirq: 0, destapic: 0, destapiclint: 0,
  });
  entry(mpc_lintsrc, {
    type: MP_LINTSRC, irqtype: mp_NMI, irqflag: MP_IRQPOL_DEFAULT,
    srcbusid: 0, srcbusirq: 0, destapic: MP_APIC_ALL, destapiclint: 1,
  });

  const table = new StructView(mpc_table, bytes, tableAt).assign({
    length: at - tableAt, spec: MPC_SPEC, oemcount: entries, lapic: APIC_START,
  });
  table.slice("signature").set(ascii(MPC_SIGNATURE));
  table.slice("oem").set(ascii(MPC_OEM));
  table.slice("productid").set(ascii(MPC_PRODUCT_ID));
  table.set("checksum", checksum(bytes.subarray(tableAt, at)));

  const mpf = new StructView(mpf_intel, bytes, 0).assign({ physptr: base + tableAt, length: 1, specification: MPC_SPEC });
  mpf.slice("signature").set(ascii(SMP_MAGIC_IDENT));
  mpf.set("checksum", checksum(bytes.subarray(0, mpf_intel.size)));
  return bytes;
}

/** Write the MP table for `cpus` vCPUs at EBDA_START. */
export function writeMptable(mem: GuestMemory, cpus: number): void {
  mem.write(EBDA_START, buildMptable(cpus, EBDA_START));
}
