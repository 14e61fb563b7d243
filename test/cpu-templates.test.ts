// Firecracker's CPU templates: the static ones' host checks (vendor, exact family/model/stepping) with
// Firecracker's messages, the custom template JSON (number strings, tri-state bitmaps), applying CPUID and
// MSR modifiers, and what an emulating host refuses by name.

import { describe, expect, test } from "bun:test";
import type { CpuidEntry } from "../src/kvm/system.ts";
import {
  applyCpuidTemplate, applyMsrTemplate, CASCADE_LAKE_FMS, cpuModelOf, CpuConfigSchema, cpuTemplateFromConfig,
  CpuTemplateError, hostCpuOf, MILAN_FMS, parseBitmap, STATIC_CPU_TEMPLATES, staticCpuTemplate, type CpuModel,
} from "../src/arch/x86_64/cpu-templates.ts";
import { FIRECRACKER_STATIC_TEMPLATES } from "../src/arch/x86_64/firecracker-cpu-templates.ts";

/** Leaf 1 EAX for a family/model/stepping. */
const eaxOf = (m: CpuModel) => (m.extended_family << 20) | (m.extended_model << 16) | (m.family << 8) | (m.model << 4) | m.stepping;
const entry = (fn: number, index: number, regs: Partial<CpuidEntry> = {}): CpuidEntry => ({ function: fn, index, flags: 0, eax: 0, ebx: 0, ecx: 0, edx: 0, ...regs });

describe("static templates", () => {
  test("the five names, each with CPUID modifiers; T2S and T2CL also set IA32_ARCH_CAPABILITIES", () => {
    expect([...STATIC_CPU_TEMPLATES].sort()).toEqual(["C3", "T2", "T2A", "T2CL", "T2S"]);
    for (const name of STATIC_CPU_TEMPLATES) expect(FIRECRACKER_STATIC_TEMPLATES[name].cpuid_modifiers.length).toBeGreaterThan(0);
    expect(FIRECRACKER_STATIC_TEMPLATES.T2S.msr_modifiers.map((m) => m.addr)).toEqual([0x10a]);
    expect(FIRECRACKER_STATIC_TEMPLATES.T2CL.msr_modifiers.map((m) => m.addr)).toEqual([0x10a]);
    // T2 presents family 6 model 0x3f stepping 2 (leaf 1 EAX 0x306f2); C3 model 0x3e stepping 4.
    expect(FIRECRACKER_STATIC_TEMPLATES.T2.cpuid_modifiers[0]!.modifiers[0]).toMatchObject({ register: "eax", filter: 0x0fff3fff, value: 0x000306f2 });
    expect(FIRECRACKER_STATIC_TEMPLATES.C3.cpuid_modifiers[0]!.modifiers[0]).toMatchObject({ register: "eax", value: 0x000306e4 });
  });

  test("family/model/stepping from leaf 1 EAX, as Firecracker's CpuModel reads it", () => {
    expect(cpuModelOf(0x00a00f11)).toEqual(MILAN_FMS);
    expect(cpuModelOf(0x00050657)).toEqual(CASCADE_LAKE_FMS);
  });

  test("refused with Firecracker's reasons on the wrong vendor or model; given on the right one", () => {
    const intelCl = { vendor: "GenuineIntel", leaf1Eax: eaxOf(CASCADE_LAKE_FMS) };
    const milan = { vendor: "AuthenticAMD", leaf1Eax: eaxOf(MILAN_FMS) };
    const genoa = { vendor: "AuthenticAMD", leaf1Eax: 0x00a10f11 }; // family 0x19 model 0x11: this machine
    expect(staticCpuTemplate("T2CL", intelCl)).toBe(FIRECRACKER_STATIC_TEMPLATES.T2CL);
    expect(staticCpuTemplate("T2A", milan)).toBe(FIRECRACKER_STATIC_TEMPLATES.T2A);
    expect(() => staticCpuTemplate("T2", milan)).toThrow("CPU vendor mismatched between actual CPU and CPU template.");
    expect(() => staticCpuTemplate("T2A", genoa)).toThrow("The current CPU model is not permitted to apply the CPU template.");
    expect(() => staticCpuTemplate("T2S", { vendor: "GenuineIntel", leaf1Eax: 0x000606a6 })).toThrow("not permitted"); // Ice Lake: not for T2S
  });

  test("the host's vendor and leaf 1 come from KVM's supported CPUID", () => {
    // "AuthenticAMD" is EBX "Auth", EDX "enti", ECX "cAMD".
    const word = (s: string) => new DataView(new TextEncoder().encode(s).buffer).getUint32(0, true);
    const supported = [entry(0, 0, { eax: 0x10, ebx: word("Auth"), edx: word("enti"), ecx: word("cAMD") }), entry(1, 0, { eax: 0x00a10f11 })];
    expect(hostCpuOf(supported)).toEqual({ vendor: "AuthenticAMD", leaf1Eax: 0x00a10f11 });
  });
});

describe("custom templates (PUT /cpu-config)", () => {
  test("tri-state bitmaps: 0 clears, 1 sets, x keeps, _ separates, high bits kept", () => {
    expect(parseBitmap("0b10x1", 32)).toEqual({ filter: 0b1101n, value: 0b1001n });
    expect(parseBitmap("0bxxxx_xxxx_0000_0001", 32)).toEqual({ filter: 0xffn, value: 1n });
    expect(parseBitmap("1".repeat(33), 32)).toMatch("longer than 32 bits");
    expect(parseBitmap("0b12", 32)).toMatch('has "2"');
  });

  test("Firecracker's JSON is parsed: number strings in hex, binary or decimal; unknown fields refused", () => {
    const body = CpuConfigSchema.parse({
      cpuid_modifiers: [{ leaf: "0x80000001", subleaf: "0b0", flags: 0, modifiers: [{ register: "ecx", bitmap: "0bxxxxxxxxxxxxxxxxxxxxxxxxxxxxx0x1" }] }],
      msr_modifiers: [{ addr: "266", bitmap: "0b0000000000000000000000000000000000000000000000000000000000000001" }],
    });
    const t = cpuTemplateFromConfig(body);
    expect(t.cpuid_modifiers).toEqual([{ leaf: 0x80000001, subleaf: 0, flags: 0, modifiers: [{ register: "ecx", filter: 0b101, value: 0b001 }] }]);
    expect(t.msr_modifiers).toEqual([{ addr: 0x10a, filter: 0xffffffffffffffffn, value: 1n }]);
    expect(CpuConfigSchema.safeParse({ cpuid_modifiers: [{ leaf: "one", subleaf: "0x0", flags: 0, modifiers: [] }] }).success).toBe(false);
    expect(CpuConfigSchema.safeParse({ cpuid_modifiers: [{ leaf: "0x1", subleaf: "0x0", flags: 0, modifiers: [{ register: "esi", bitmap: "0b1" }] }] }).success).toBe(false);
    expect(CpuConfigSchema.safeParse({ extra: 1 }).success).toBe(false);
    expect(CpuConfigSchema.safeParse({ cpuid_modifiers: [{ leaf: "0x100000000", subleaf: "0x0", flags: 0, modifiers: [] }] }).success).toBe(false);
  });

  test("kvm_capabilities and aarch64-only parts are refused by name", () => {
    expect(() => cpuTemplateFromConfig(CpuConfigSchema.parse({ kvm_capabilities: ["!121"] }))).toThrow("cpu-config.kvm_capabilities");
    expect(() => cpuTemplateFromConfig(CpuConfigSchema.parse({ reg_modifiers: [{}] }))).toThrow("aarch64");
    expect(cpuTemplateFromConfig(CpuConfigSchema.parse({}))).toEqual({ cpuid_modifiers: [], msr_modifiers: [] });
  });
});

describe("applying", () => {
  const supported = [entry(1, 0, { eax: 0x00a10f11, ecx: 0xffff_ffff }), entry(0x80000001, 0, { ecx: 0xffff_ffff, edx: 0x0400_0000 }), entry(0x80000008, 0, { ebx: 0x0000_0200 })];
  const extendedOnly = {
    cpuid_modifiers: [
      { leaf: 0x80000001, subleaf: 0, flags: 0, modifiers: [{ register: "ecx" as const, filter: 0x20000100, value: 0 }, { register: "edx" as const, filter: 0x04000000, value: 0 }] },
    ],
    msr_modifiers: [],
  };

  test("filtered bits take the value, the others keep the host's; each change is recorded; the input is not modified", () => {
    const r = applyCpuidTemplate(supported, extendedOnly, { emulatingHost: true, name: "custom" });
    const e = r.entries.find((x) => x.function === 0x80000001)!;
    expect(e.ecx >>> 0).toBe(0xdfff_feff);
    expect(e.edx).toBe(0);
    expect(r.changes.map((c) => [c.register, c.before, c.after])).toEqual([["ecx", 0xffffffff, 0xdffffeff], ["edx", 0x04000000, 0]]);
    expect(supported[1]!.ecx).toBe(0xffff_ffff);
  });

  test("a leaf KVM does not report is refused with Firecracker's message", () => {
    const t = { cpuid_modifiers: [{ leaf: 0x8000001f, subleaf: 0, flags: 0, modifiers: [{ register: "eax" as const, filter: 1, value: 0 }] }], msr_modifiers: [] };
    expect(() => applyCpuidTemplate(supported, t, { emulatingHost: false, name: "custom" })).toThrow(
      "Template changes a CPUID entry not supported by KVM: Leaf: 0x8000001f, Subleaf: 0x0",
    );
  });

  test("a standard-leaf change is applied on hardware KVM and refused by name on an emulating host; a no-op change is accepted", () => {
    const t2 = FIRECRACKER_STATIC_TEMPLATES.T2;
    const full = [...supported, entry(7, 0), entry(0xd, 0), entry(0xd, 1)];
    const hw = applyCpuidTemplate(full, t2, { emulatingHost: false, name: "T2" });
    expect(hw.entries.find((x) => x.function === 1)!.eax).toBe(0x000306f2);
    expect(() => applyCpuidTemplate(full, t2, { emulatingHost: true, name: "T2" })).toThrow(/CPU template T2: leaf 0x1 subleaf 0x0 eax would change .* on this host/);
    const noop = { cpuid_modifiers: [{ leaf: 1, subleaf: 0, flags: 0, modifiers: [{ register: "eax" as const, filter: 0xf, value: 0x1 }] }], msr_modifiers: [] };
    expect(applyCpuidTemplate(full, noop, { emulatingHost: true, name: "custom" }).changes).toEqual([]);
  });

  test("MSR modifiers apply to KVM's current values; an MSR KVM lacks is refused with Firecracker's message", () => {
    const t2s = FIRECRACKER_STATIC_TEMPLATES.T2S;
    expect(applyMsrTemplate(new Map([[0x10a, 0xffn]]), t2s)).toEqual([{ index: 0x10a, data: 0x0c0a0c4cn }]);
    const t2cl = FIRECRACKER_STATIC_TEMPLATES.T2CL;
    expect(applyMsrTemplate(new Map([[0x10a, 0xffff_ffff_ffff_ffffn]]), t2cl)).toEqual([{ index: 0x10a, data: 0x1d0ae1ffn }]);
    expect(() => applyMsrTemplate(new Map(), t2s)).toThrow("Template changes an MSR entry not supported by KVM: Register Address: 0x10a");
    expect(CpuTemplateError.name).toBe("CpuTemplateError");
  });
});
