// struct kvm_cpuid2 and its kvm_cpuid_entry2 array, to and from plain objects: what KVM_GET_SUPPORTED_CPUID
// (system.ts) fills and KVM_SET_CPUID2 (vcpu-fd.ts) reads (api.rst 4.46, 4.88). A file of its own so that
// the vCPU fd does not import the system fd that creates it (system -> vm-fd -> vcpu-fd would close a cycle).

import { StructView } from "./struct.ts";
import { kvm_cpuid2, kvm_cpuid_entry2 } from "./uapi.ts";

/** One CPUID leaf as KVM_GET_SUPPORTED_CPUID and KVM_SET_CPUID2 carry it. */
export interface CpuidEntry {
  function: number;
  index: number;
  flags: number;
  eax: number;
  ebx: number;
  ecx: number;
  edx: number;
}

/** kvm_cpuid_entry2's fields, all u32: read and written with a DataView, not a StructView per field (a
 * cold StructView get costs microseconds, and a host has 60 to 100 entries on the way to every start). */
const CPUID_FIELDS = ["function", "index", "flags", "eax", "ebx", "ecx", "edx"] as const;

function cpuidOffsets(): Record<(typeof CPUID_FIELDS)[number], number> {
  for (const f of CPUID_FIELDS) if (kvm_cpuid_entry2.scalarAt(f) !== "u32") throw new Error(`kvm_cpuid_entry2.${f} is not a u32`);
  return Object.fromEntries(CPUID_FIELDS.map((f) => [f, kvm_cpuid_entry2.offsetOf(f)])) as Record<(typeof CPUID_FIELDS)[number], number>;
}

export function readCpuidEntries(buf: Uint8Array): CpuidEntry[] {
  const n = new StructView(kvm_cpuid2, buf).get("nent");
  const o = cpuidOffsets();
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const out: CpuidEntry[] = [];
  for (let i = 0; i < n; i++) {
    const at = kvm_cpuid2.size + i * kvm_cpuid_entry2.size;
    const u32 = (off: number) => dv.getUint32(at + off, true);
    out.push({
      function: u32(o.function), index: u32(o.index), flags: u32(o.flags),
      eax: u32(o.eax), ebx: u32(o.ebx), ecx: u32(o.ecx), edx: u32(o.edx),
    });
  }
  return out;
}

export function writeCpuidEntries(entries: CpuidEntry[]): Uint8Array {
  const buf = new Uint8Array(kvm_cpuid2.size + entries.length * kvm_cpuid_entry2.size);
  new StructView(kvm_cpuid2, buf).set("nent", entries.length);
  const o = cpuidOffsets();
  const dv = new DataView(buf.buffer);
  // Field by field, not a loop over the names: this runs once per vCPU start or restore, as cold code, where
  // a property looked up by a computed name costs more than the store.
  for (let i = 0, at = kvm_cpuid2.size; i < entries.length; i++, at += kvm_cpuid_entry2.size) {
    const c = entries[i]!;
    dv.setUint32(at + o.function, c.function >>> 0, true);
    dv.setUint32(at + o.index, c.index >>> 0, true);
    dv.setUint32(at + o.flags, c.flags >>> 0, true);
    dv.setUint32(at + o.eax, c.eax >>> 0, true);
    dv.setUint32(at + o.ebx, c.ebx >>> 0, true);
    dv.setUint32(at + o.ecx, c.ecx >>> 0, true);
    dv.setUint32(at + o.edx, c.edx >>> 0, true);
  }
  return buf;
}
