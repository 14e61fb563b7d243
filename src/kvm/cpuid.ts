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

export function readCpuidEntries(buf: Uint8Array): CpuidEntry[] {
  const n = new StructView(kvm_cpuid2, buf).get("nent");
  const out: CpuidEntry[] = [];
  for (let i = 0; i < n; i++) {
    const e = new StructView(kvm_cpuid_entry2, buf, kvm_cpuid2.size + i * kvm_cpuid_entry2.size);
    out.push({
      function: e.get("function"), index: e.get("index"), flags: e.get("flags"),
      eax: e.get("eax"), ebx: e.get("ebx"), ecx: e.get("ecx"), edx: e.get("edx"),
    });
  }
  return out;
}

export function writeCpuidEntries(entries: CpuidEntry[]): Uint8Array {
  const buf = new Uint8Array(kvm_cpuid2.size + entries.length * kvm_cpuid_entry2.size);
  new StructView(kvm_cpuid2, buf).set("nent", entries.length);
  entries.forEach((c, i) => {
    new StructView(kvm_cpuid_entry2, buf, kvm_cpuid2.size + i * kvm_cpuid_entry2.size).assign({
      function: c.function, index: c.index, flags: c.flags, eax: c.eax, ebx: c.ebx, ecx: c.ecx, edx: c.edx,
    });
  });
  return buf;
}
