import { describe, expect, test } from "bun:test";
import {
  CPU_BOOTPROCESSOR, CPU_ENABLED, MPTABLE_MAX_CPUS, MP_BUS, MP_INTSRC, MP_IOAPIC, MP_LINTSRC, MP_PROCESSOR,
  buildMptable, mp_ExtINT, mp_INT, mp_NMI, mpc_bus, mpc_cpu, mpc_intsrc, mpc_ioapic, mpc_lintsrc, mpc_table,
  mpf_intel, mptableSize, writeMptable,
} from "../src/arch/x86_64/mptable.ts";
import { APIC_START, EBDA_START, IOAPIC_START, IRQ_MAX, LEGACY_HOLE_START, MiB } from "../src/arch/x86_64/layout.ts";
import { StructView, type Layout } from "../src/kvm/struct.ts";
import { GuestMemory } from "../src/memory.ts";

const sum = (b: Uint8Array) => b.reduce((s, x) => (s + x) & 0xff, 0);
const text = (b: Uint8Array) => new TextDecoder().decode(b);

/** Walk the table the way Linux's mpparse.c does: by each entry's type byte. */
function parse(bytes: Uint8Array, base: number) {
  const mpf = new StructView(mpf_intel, bytes, 0);
  const tableAt = mpf.get("physptr") - base;
  const table = new StructView(mpc_table, bytes, tableAt);
  const sizes: Record<number, Layout> = { [MP_PROCESSOR]: mpc_cpu, [MP_BUS]: mpc_bus, [MP_IOAPIC]: mpc_ioapic, [MP_INTSRC]: mpc_intsrc, [MP_LINTSRC]: mpc_lintsrc };
  const entries: { type: number; v: StructView }[] = [];
  let at = tableAt + mpc_table.size;
  for (let i = 0; i < table.get("oemcount"); i++) {
    const type = bytes[at]!;
    const layout = sizes[type];
    if (!layout) throw new Error(`unknown entry type ${type}`);
    entries.push({ type, v: new StructView(layout, bytes, at) });
    at += layout.size;
  }
  expect(at - tableAt).toBe(table.get("length"));
  return { mpf, table, tableAt, entries };
}

describe("MP table (MultiProcessor Spec 1.4)", () => {
  test("struct sizes match mpspec_def.h", () => {
    expect([mpf_intel.size, mpc_table.size, mpc_cpu.size, mpc_bus.size, mpc_ioapic.size, mpc_intsrc.size, mpc_lintsrc.size])
      .toEqual([16, 44, 20, 8, 8, 8, 8]);
    expect(mpc_table.offsetOf("lapic")).toBe(36);
  });

  for (const cpus of [1, 2, 8]) {
    test(`${cpus} vCPU(s): signatures, checksums, entries`, () => {
      const bytes = buildMptable(cpus, EBDA_START);
      expect(bytes.byteLength).toBe(mptableSize(cpus));
      const { mpf, table, tableAt, entries } = parse(bytes, EBDA_START);

      expect(text(mpf.slice("signature"))).toBe("_MP_");
      expect(mpf.get("length")).toBe(1);
      expect(mpf.get("specification")).toBe(4);
      expect(sum(bytes.subarray(0, 16))).toBe(0);
      expect(mpf.get("physptr")).toBe(EBDA_START + 16);

      expect(text(table.slice("signature"))).toBe("PCMP");
      expect(table.get("spec")).toBe(4);
      expect(table.get("lapic")).toBe(APIC_START);
      expect(sum(bytes.subarray(tableAt, tableAt + table.get("length")))).toBe(0);

      const procs = entries.filter((e) => e.type === MP_PROCESSOR).map((e) => e.v);
      expect(procs.map((p) => p.get("apicid"))).toEqual([...Array(cpus).keys()]);
      expect(procs[0]!.get("cpuflag")).toBe(CPU_ENABLED | CPU_BOOTPROCESSOR);
      for (const p of procs.slice(1)) expect(p.get("cpuflag")).toBe(CPU_ENABLED);

      const bus = entries.filter((e) => e.type === MP_BUS);
      expect(bus.length).toBe(1);
      expect(text(bus[0]!.v.slice("bustype"))).toBe("ISA   ");

      const ioapics = entries.filter((e) => e.type === MP_IOAPIC).map((e) => e.v);
      expect(ioapics.length).toBe(1);
      expect(ioapics[0]!.get("apicid")).toBe(cpus);
      expect(ioapics[0]!.get("apicaddr")).toBe(IOAPIC_START);

      const ints = entries.filter((e) => e.type === MP_INTSRC).map((e) => e.v);
      expect(ints.map((i) => i.get("srcbusirq"))).toEqual([...Array(IRQ_MAX + 1).keys()]);
      for (const i of ints) {
        expect(i.get("irqtype")).toBe(mp_INT);
        expect(i.get("dstapic")).toBe(cpus);
        expect(i.get("dstirq")).toBe(i.get("srcbusirq"));
      }

      const lints = entries.filter((e) => e.type === MP_LINTSRC).map((e) => e.v);
      expect(lints.map((l) => [l.get("irqtype"), l.get("destapiclint")])).toEqual([[mp_ExtINT, 0], [mp_NMI, 1]]);
    });
  }

  test("written at EBDA_START, within the 1 KiB before the legacy hole", () => {
    const mem = GuestMemory.plain([{ gpa: 0, size: 2 * MiB }]);
    writeMptable(mem, 2);
    expect(text(mem.read(EBDA_START, 4))).toBe("_MP_");
    expect(EBDA_START + mptableSize(MPTABLE_MAX_CPUS)).toBeLessThanOrEqual(LEGACY_HOLE_START);
    expect(EBDA_START + mptableSize(MPTABLE_MAX_CPUS + 1)).toBeGreaterThan(LEGACY_HOLE_START);
  });

  test("too many vCPUs, or none, is an error that names the limit", () => {
    expect(() => buildMptable(MPTABLE_MAX_CPUS + 1)).toThrow(`at most ${MPTABLE_MAX_CPUS} vCPUs`);
    expect(() => buildMptable(0)).toThrow("must be a whole number >= 1");
  });
});
