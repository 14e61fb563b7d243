// Firecracker's CPU templates: the static ones by name (machine-config `cpu_template`: T2, T2S, T2CL, T2A,
// C3) and custom ones (`PUT /cpu-config`, Firecracker's JSON format). A template is a list of CPUID
// modifiers (leaf, subleaf, KVM flags, and per register a filter and a value) and MSR modifiers (address,
// filter, value): each forces the filtered bits to the value and keeps the host's other bits.
//
// Not to be confused with kindling's own CPUID adjustments in cpuid.ts ("default", "emulated-host"), which
// fit the guest to this host and its topology: a Firecracker template is applied on top of them.
//
// What Firecracker does, and kindling with it (src/vmm/src/cpu_config/x86_64/{mod.rs,custom_cpu_template.rs}):
//   - a static template is checked against the host first: its CPU vendor ("CPU vendor mismatched between
//     actual CPU and CPU template.") and its exact family/model/stepping ("The current CPU model is not
//     permitted to apply the CPU template."); T2A is for AMD Milan, the others for Intel Skylake, Cascade
//     Lake or Ice Lake;
//   - a CPUID modifier for a leaf/subleaf KVM does not report is refused ("Template changes a CPUID entry
//     not supported by KVM"), as is an MSR modifier for an MSR KVM does not have;
//   - the entry's KVM flags become the modifier's.
// What kindling adds: on a host where guest kernel code is emulated (PVM), KVM_SET_CPUID2 does not change
// what the guest reads for the standard leaves (below 0x4000_0000; see cpuid.ts's emulated-host notes).
// A modifier that would change such a leaf is refused by name there instead of being silently ineffective.
// kvm_capabilities are refused by name (kindling checks its own list of capabilities).

import { z } from "../../zod.ts";
import type { CpuidEntry } from "../../kvm/system.ts";
import type { CpuidChange, Register } from "./cpuid.ts";
import { FIRECRACKER_STATIC_TEMPLATES, type CpuTemplateDefinition } from "./firecracker-cpu-templates.ts";

export type { CpuidLeafModifier, CpuidRegisterModifier, CpuTemplateDefinition, MsrModifier } from "./firecracker-cpu-templates.ts";

export const STATIC_CPU_TEMPLATES = ["C3", "T2", "T2S", "T2CL", "T2A"] as const;
export type StaticCpuTemplate = (typeof STATIC_CPU_TEMPLATES)[number];

/** A refused template: the message is Firecracker's where Firecracker refuses it too. */
export class CpuTemplateError extends Error {
  override name = "CpuTemplateError";
}

// ---- Which hosts a static template is for (Firecracker's static_cpu_templates/mod.rs, arch/x86_64/cpu_model.rs) ----

/** Family, model and stepping as CPUID leaf 1 EAX encodes them. */
export interface CpuModel {
  extended_family: number;
  extended_model: number;
  family: number;
  model: number;
  stepping: number;
}

export const SKYLAKE_FMS: CpuModel = { extended_family: 0x0, extended_model: 0x5, family: 0x6, model: 0x5, stepping: 0x4 };
export const CASCADE_LAKE_FMS: CpuModel = { extended_family: 0x0, extended_model: 0x5, family: 0x6, model: 0x5, stepping: 0x7 };
export const ICE_LAKE_FMS: CpuModel = { extended_family: 0x0, extended_model: 0x6, family: 0x6, model: 0xa, stepping: 0x6 };
export const MILAN_FMS: CpuModel = { extended_family: 0xa, extended_model: 0x0, family: 0xf, model: 0x1, stepping: 0x1 };

export const VENDOR_ID_INTEL = "GenuineIntel";
export const VENDOR_ID_AMD = "AuthenticAMD";

export const STATIC_TEMPLATE_HOSTS: Record<StaticCpuTemplate, { vendor: string; models: CpuModel[] }> = {
  C3: { vendor: VENDOR_ID_INTEL, models: [SKYLAKE_FMS, CASCADE_LAKE_FMS, ICE_LAKE_FMS] },
  T2: { vendor: VENDOR_ID_INTEL, models: [SKYLAKE_FMS, CASCADE_LAKE_FMS, ICE_LAKE_FMS] },
  T2S: { vendor: VENDOR_ID_INTEL, models: [SKYLAKE_FMS, CASCADE_LAKE_FMS] },
  T2CL: { vendor: VENDOR_ID_INTEL, models: [CASCADE_LAKE_FMS, ICE_LAKE_FMS] },
  T2A: { vendor: VENDOR_ID_AMD, models: [MILAN_FMS] },
};

/** Leaf 1 EAX: stepping [3:0], model [7:4], family [11:8], extended model [19:16], extended family [27:20]. */
export function cpuModelOf(leaf1Eax: number): CpuModel {
  return {
    extended_family: (leaf1Eax >>> 20) & 0xff,
    extended_model: (leaf1Eax >>> 16) & 0xf,
    family: (leaf1Eax >>> 8) & 0xf,
    model: (leaf1Eax >>> 4) & 0xf,
    stepping: leaf1Eax & 0xf,
  };
}

/** The host's vendor string and leaf 1 EAX, from KVM_GET_SUPPORTED_CPUID's leaves 0 and 1 (the host's own). */
export function hostCpuOf(supported: readonly CpuidEntry[]): { vendor: string; leaf1Eax: number } {
  const l0 = supported.find((e) => e.function === 0 && e.index === 0);
  const l1 = supported.find((e) => e.function === 1 && e.index === 0);
  const bytes = new Uint8Array(12);
  const dv = new DataView(bytes.buffer);
  // The vendor string is EBX, EDX, ECX in that order.
  [l0?.ebx ?? 0, l0?.edx ?? 0, l0?.ecx ?? 0].forEach((r, i) => dv.setUint32(i * 4, r >>> 0, true));
  return { vendor: new TextDecoder().decode(bytes), leaf1Eax: (l1?.eax ?? 0) >>> 0 };
}

const sameModel = (a: CpuModel, b: CpuModel) =>
  a.extended_family === b.extended_family && a.extended_model === b.extended_model && a.family === b.family && a.model === b.model && a.stepping === b.stepping;

/** The static template `name` for this host, or Firecracker's refusal. */
export function staticCpuTemplate(name: StaticCpuTemplate, host: { vendor: string; leaf1Eax: number }): CpuTemplateDefinition {
  const wanted = STATIC_TEMPLATE_HOSTS[name];
  if (host.vendor !== wanted.vendor) throw new CpuTemplateError("CPU vendor mismatched between actual CPU and CPU template.");
  if (!wanted.models.some((m) => sameModel(m, cpuModelOf(host.leaf1Eax)))) {
    throw new CpuTemplateError("The current CPU model is not permitted to apply the CPU template.");
  }
  return FIRECRACKER_STATIC_TEMPLATES[name];
}

// ---- Custom templates: Firecracker's JSON (docs/cpu_templates/cpu-templates.md, the API's CpuConfig) ----

/** "0x1f", "0b101" or "31": Firecracker's number strings for leaves, subleaves and MSR addresses. */
function parseNumberString(s: string, bits: 32 | 64): bigint | string {
  const t = s.trim();
  let v: bigint;
  try {
    if (/^0x[0-9a-f]+$/i.test(t) || /^0b[01]+$/i.test(t) || /^[0-9]+$/.test(t)) v = BigInt(t.toLowerCase());
    else return `"${s}" is not a number: prefix hexadecimal with 0x and binary with 0b`;
  } catch {
    return `"${s}" is not a number`;
  }
  if (v >= 1n << BigInt(bits)) return `"${s}" does not fit in ${bits} bits`;
  return v;
}

/**
 * A tri-state bitmap string, most significant bit first: "0" clears, "1" sets, "x" keeps; "_" separates
 * and an "0b" prefix is optional. Missing high bits are kept. Firecracker's RegisterValueFilter.
 */
export function parseBitmap(s: string, bits: 32 | 64): { filter: bigint; value: bigint } | string {
  const body = s.startsWith("0b") ? s.slice(2) : s;
  let filter = 0n;
  let value = 0n;
  let i = 0n;
  for (const c of [...body].reverse()) {
    if (c === "_") continue;
    if (i === BigInt(bits)) return `bitmap "${s}" is longer than ${bits} bits`;
    if (c === "0" || c === "1") {
      filter |= 1n << i;
      if (c === "1") value |= 1n << i;
    } else if (c !== "x") return `bitmap "${s}" has "${c}"; use 0, 1, x or _`;
    i++;
  }
  return { filter, value };
}

const numberString = (bits: 32 | 64) =>
  z.string().transform((s, ctx) => {
    const v = parseNumberString(s, bits);
    if (typeof v === "string") {
      ctx.addIssue({ code: "custom", message: v });
      return z.NEVER;
    }
    return v;
  });

const bitmap = (bits: 32 | 64) =>
  z.string().transform((s, ctx) => {
    const v = parseBitmap(s, bits);
    if (typeof v === "string") {
      ctx.addIssue({ code: "custom", message: v });
      return z.NEVER;
    }
    return v;
  });

/** The body of PUT /cpu-config (Firecracker's CpuConfig) for x86_64. */
export const CpuConfigSchema = z.strictObject({
  kvm_capabilities: z.array(z.string()).optional(),
  cpuid_modifiers: z.array(z.strictObject({
    leaf: numberString(32),
    subleaf: numberString(32),
    flags: z.number().int().min(0).max(0xffffffff),
    modifiers: z.array(z.strictObject({ register: z.enum(["eax", "ebx", "ecx", "edx"]), bitmap: bitmap(32) })),
  })).optional(),
  msr_modifiers: z.array(z.strictObject({ addr: numberString(32), bitmap: bitmap(64) })).optional(),
  reg_modifiers: z.array(z.unknown()).optional(),
  vcpu_features: z.array(z.unknown()).optional(),
});

/** A parsed PUT /cpu-config body as a template; aarch64-only parts and KVM capabilities are refused by name. */
export function cpuTemplateFromConfig(body: z.output<typeof CpuConfigSchema>): CpuTemplateDefinition {
  if (body.reg_modifiers?.length) throw new CpuTemplateError("cpu-config.reg_modifiers: register modifiers are for aarch64 guests; this is x86_64");
  if (body.vcpu_features?.length) throw new CpuTemplateError("cpu-config.vcpu_features: vCPU features are for aarch64 guests; this is x86_64");
  if (body.kvm_capabilities?.length) {
    throw new CpuTemplateError("cpu-config.kvm_capabilities: not supported by kindling, which checks its own list of KVM capabilities at start");
  }
  return {
    cpuid_modifiers: (body.cpuid_modifiers ?? []).map((l) => ({
      leaf: Number(l.leaf),
      subleaf: Number(l.subleaf),
      flags: l.flags,
      modifiers: l.modifiers.map((m) => ({ register: m.register, filter: Number(m.bitmap.filter), value: Number(m.bitmap.value) })),
    })),
    msr_modifiers: (body.msr_modifiers ?? []).map((m) => ({ addr: Number(m.addr), filter: m.bitmap.filter, value: m.bitmap.value })),
  };
}

// ---- Applying ----

const hex = (n: number) => `0x${(n >>> 0).toString(16)}`;

/** Whether KVM_SET_CPUID2 changes what the guest reads for `leaf` on this host (see the top of the file). */
export function cpuidLeafApplies(leaf: number, emulatingHost: boolean): boolean {
  return !emulatingHost || leaf >>> 0 >= 0x40000000;
}

/**
 * The template's CPUID modifiers applied to one vCPU's entries (after cpuid.ts's own edits), each change
 * recorded. Throws CpuTemplateError naming the leaf for what cannot be applied.
 */
export function applyCpuidTemplate(
  entries: readonly CpuidEntry[],
  template: CpuTemplateDefinition,
  opts: { emulatingHost: boolean; name: string },
): { entries: CpuidEntry[]; changes: CpuidChange[] } {
  const out = entries.map((e) => ({ ...e }));
  const changes: CpuidChange[] = [];
  for (const m of template.cpuid_modifiers) {
    const e = out.find((x) => x.function === m.leaf >>> 0 && x.index === m.subleaf >>> 0);
    if (!e) throw new CpuTemplateError(`Template changes a CPUID entry not supported by KVM: Leaf: ${hex(m.leaf)}, Subleaf: ${hex(m.subleaf)}`);
    e.flags = m.flags;
    for (const r of m.modifiers) {
      const before = e[r.register] >>> 0;
      const after = ((before & ~r.filter) | (r.value & r.filter)) >>> 0;
      if (before === after) continue;
      if (!cpuidLeafApplies(m.leaf, opts.emulatingHost)) {
        throw new CpuTemplateError(
          `CPU template ${opts.name}: leaf ${hex(m.leaf)} subleaf ${hex(m.subleaf)} ${r.register} would change ${hex(before)} -> ${hex(after)}, ` +
            "but on this host (guest kernel code emulated, PVM) KVM_SET_CPUID2 does not change what the guest reads below leaf 0x40000000; " +
            "only hypervisor (0x4000_xxxx) and extended (0x8000_xxxx) leaves can be templated here",
        );
      }
      e[r.register] = after;
      changes.push({ leaf: e.function, subleaf: e.index, register: r.register, before, after, why: `CPU template ${opts.name}` });
    }
  }
  return { entries: out, changes };
}

/**
 * The template's MSR modifiers applied to the vCPU's current values (`current`: every MSR KVM reported,
 * by index). Returns the MSRs to write. Throws for an MSR KVM does not have, as Firecracker does.
 */
export function applyMsrTemplate(current: ReadonlyMap<number, bigint>, template: CpuTemplateDefinition): { index: number; data: bigint }[] {
  return template.msr_modifiers.map((m) => {
    const before = current.get(m.addr >>> 0);
    if (before === undefined) throw new CpuTemplateError(`Template changes an MSR entry not supported by KVM: Register Address: ${hex(m.addr)}`);
    return { index: m.addr >>> 0, data: (before & ~m.filter) | (m.value & m.filter) };
  });
}
