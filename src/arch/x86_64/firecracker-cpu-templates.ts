// Firecracker's static CPU templates (T2, T2S, T2CL, T2A, C3) as data: which CPUID bits and MSR bits each one
// forces, so a guest sees the same instruction set whatever the host (Firecracker's docs/cpu_templates/
// cpu-templates.md). The values are carried over from Firecracker's
// src/vmm/src/cpu_config/x86_64/static_cpu_templates/{t2,t2s,t2cl,t2a,c3}.rs (commit 81b38b9, v1.16
// development), leaf by leaf; the `bits` lists name each affected bit as those files' comments do (Intel
// SDM vol. 2A "CPUID", AMD APM vol. 3 appendix E).
//
// A modifier is a filter and a value: bits set in `filter` are replaced by the same bits of `value`, the
// others keep the host's value (register = (register & ~filter) | value). docs/cpu-templates.md shows them
// as tables. How they are checked and applied: cpu-templates.ts.

import type { Register } from "./cpuid.ts";

export interface CpuidRegisterModifier {
  register: Register;
  filter: number;
  value: number;
  /** What the bits are (documentation only). */
  bits?: string[];
}

export interface CpuidLeafModifier {
  leaf: number;
  subleaf: number;
  /** kvm_cpuid_entry2.flags for the entry (1 = KVM_CPUID_FLAG_SIGNIFCANT_INDEX). */
  flags: number;
  modifiers: CpuidRegisterModifier[];
}

export interface MsrModifier {
  addr: number;
  filter: bigint;
  value: bigint;
  bits?: string[];
}

/** Firecracker's CustomCpuTemplate for x86_64. */
export interface CpuTemplateDefinition {
  cpuid_modifiers: CpuidLeafModifier[];
  msr_modifiers: MsrModifier[];
  kvm_capabilities?: string[];
}

export const FIRECRACKER_STATIC_TEMPLATES: Record<"T2" | "T2S" | "T2CL" | "T2A" | "C3", CpuTemplateDefinition> = {
  /** T2: Intel Skylake/Cascade Lake/Ice Lake hosts, presenting an Intel Xeon (family 6 model 0x3f, Haswell) with EC2 T2's feature set. */
  T2: {
    cpuid_modifiers: [
      { leaf: 0x1, subleaf: 0x0, flags: 0, modifiers: [
        { register: "eax", filter: 0x0fff3fff, value: 0x000306f2, bits: ["Bits 03-00: Stepping ID.", "Bits 07-04: Model.", "Bits 11-08: Family.", "Bits 13-12: Processor Type.", "Bits 19-16: Extended Model ID.", "Bits 27-20: Extended Family ID."] },
        { register: "ecx", filter: 0x0004cdfc, value: 0x00000000, bits: ["Bit 02: DTES64", "Bit 03: MONITOR", "Bit 04: DS-CPL", "Bit 05: VMX", "Bit 06: SMX", "Bit 07: EIST", "Bit 08: TM2", "Bit 10: CNXT-ID", "Bit 11: SDBG", "Bit 14: xTPR Update Control", "Bit 15: PDCM", "Bit 18: DCA"] },
        { register: "edx", filter: 0xe8641080, value: 0x00001080, bits: ["Bit 07: MCE", "Bit 12: MTRR", "Bit 18: PSN", "Bit 21: DS", "Bit 22: ACPI", "Bit 27: SS", "Bit 29: TM", "Bit 30: IA-64 (deprecated) https://www.intel.com/content/dam/www/public/us/en/documents/manuals/itanium-architecture-vol-4-manual.pdf", "Bit 31: PBE"] },
      ] },
      { leaf: 0x7, subleaf: 0x0, flags: 1, modifiers: [
        { register: "ebx", filter: 0xffefda14, value: 0x00000200, bits: ["Bit 02: SGX", "Bit 04: HLE", "Bit 09: Enhanced REP MOVSB/STOSB", "Bit 11: RTM", "Bit 12: RDT-M", "Bit 14: MPX", "Bit 15: RDT-A", "Bit 16: AVX512F", "Bit 17: AVX512DQ", "Bit 18: RDSEED", "Bit 19: ADX", "Bit 21: AVX512_IFMA", "Bit 22: PCOMMIT (deprecated) https://www.intel.com/content/www/us/en/developer/articles/technical/deprecate-pcommit-instruction.html", "Bit 23: CLFLUSHOPT", "Bit 24: CLWB", "Bit 25: Intel Processor Trace", "Bit 26: AVX512PF", "Bit 27: AVX512ER", "Bit 28: AVX512CD", "Bit 29: SHA", "Bit 30: AVX512BW", "Bit 31: AVX512VL"] },
        { register: "ecx", filter: 0x40415f5e, value: 0x00000000, bits: ["Bit 01: AVX512_VBMI", "Bit 02: UMIP", "Bit 03: PKU", "Bit 04: OSPKE", "Bit 06: AVX512_VBMI2", "Bit 08: GFNI", "Bit 09: VAES", "Bit 10: VPCLMULQDQ", "Bit 11: AVX512_VNNI", "Bit 12: AVX512_BITALG", "Bit 14: AVX512_VPOPCNTDQ", "Bit 16: LA57", "Bit 22: RDPID", "Bit 30: SGX_LC"] },
        { register: "edx", filter: 0x0000011c, value: 0x00000000, bits: ["Bit 02: AVX512_4VNNIW", "Bit 03: AVX512_4FMAPS", "Bit 04: Fast Short REP MOV", "Bit 08: AVX512_VP2INTERSECT"] },
      ] },
      { leaf: 0xd, subleaf: 0x0, flags: 1, modifiers: [
        { register: "eax", filter: 0x000002f8, value: 0x00000000, bits: ["Bits 04-03: MPX state", "Bits 07-05: AVX-512 state", "Bit 09: PKRU state"] },
      ] },
      { leaf: 0xd, subleaf: 0x1, flags: 1, modifiers: [
        { register: "eax", filter: 0x0000000e, value: 0x00000000, bits: ["Bit 01: Supports XSAVEC and the compacted form of XRSTOR", "Bit 02: Supports XGETBV", "Bit 03: Supports XSAVES/XRSTORS and IA32_XSS"] },
      ] },
      { leaf: 0x80000001, subleaf: 0x0, flags: 0, modifiers: [
        { register: "ecx", filter: 0x20000100, value: 0x00000000, bits: ["Bit 08: PREFETCHW", "Bit 29: MONITORX and MWAITX"] },
        { register: "edx", filter: 0x04000000, value: 0x00000000, bits: ["Bit 26: 1-GByte pages"] },
      ] },
      { leaf: 0x80000008, subleaf: 0x0, flags: 0, modifiers: [
        { register: "ebx", filter: 0x00000200, value: 0x00000000, bits: ["Bit 09: WBNOINVD"] },
      ] },
    ],
    msr_modifiers: [
    ],
  },
  /** T2S: T2's CPUID, and IA32_ARCH_CAPABILITIES (MSR 0x10a) set to one fixed value for Skylake and Cascade Lake hosts alike. */
  T2S: {
    cpuid_modifiers: [
      { leaf: 0x1, subleaf: 0x0, flags: 0, modifiers: [
        { register: "eax", filter: 0x0fff3fff, value: 0x000306f2, bits: ["Bits 03-00: Stepping ID.", "Bits 07-04: Model.", "Bits 11-08: Family.", "Bits 13-12: Processor Type.", "Bits 19-16: Extended Model ID.", "Bits 27-20: Extended Family ID."] },
        { register: "ecx", filter: 0x0004cdfc, value: 0x00000000, bits: ["Bit 02: DTES64", "Bit 03: MONITOR", "Bit 04: DS-CPL", "Bit 05: VMX", "Bit 06: SMX", "Bit 07: EIST", "Bit 08: TM2", "Bit 10: CNXT-ID", "Bit 11: SDBG", "Bit 14: xTPR Update Control", "Bit 15: PDCM", "Bit 18: DCA"] },
        { register: "edx", filter: 0xe8641080, value: 0x00001080, bits: ["Bit 07: MCE", "Bit 12: MTRR", "Bit 18: PSN", "Bit 21: DS", "Bit 22: ACPI", "Bit 27: SS", "Bit 29: TM", "Bit 30: IA-64 (deprecated) https://www.intel.com/content/dam/www/public/us/en/documents/manuals/itanium-architecture-vol-4-manual.pdf", "Bit 31: PBE"] },
      ] },
      { leaf: 0x7, subleaf: 0x0, flags: 1, modifiers: [
        { register: "ebx", filter: 0xffefda14, value: 0x00000200, bits: ["Bit 02: SGX", "Bit 04: HLE", "Bit 09: Enhanced REP MOVSB/STOSB", "Bit 11: RTM", "Bit 12: RDT-M", "Bit 14: MPX", "Bit 15: RDT-A", "Bit 16: AVX512F", "Bit 17: AVX512DQ", "Bit 18: RDSEED", "Bit 19: ADX", "Bit 21: AVX512_IFMA", "Bit 22: PCOMMIT (deprecated) https://www.intel.com/content/www/us/en/developer/articles/technical/deprecate-pcommit-instruction.html", "Bit 23: CLFLUSHOPT", "Bit 24: CLWB", "Bit 25: Intel Processor Trace", "Bit 26: AVX512PF", "Bit 27: AVX512ER", "Bit 28: AVX512CD", "Bit 29: SHA", "Bit 30: AVX512BW", "Bit 31: AVX512VL"] },
        { register: "ecx", filter: 0x40415f5e, value: 0x00000000, bits: ["Bit 01: AVX512_VBMI", "Bit 02: UMIP", "Bit 03: PKU", "Bit 04: OSPKE", "Bit 06: AVX512_VBMI2", "Bit 08: GFNI", "Bit 09: VAES", "Bit 10: VPCLMULQDQ", "Bit 11: AVX512_VNNI", "Bit 12: AVX512_BITALG", "Bit 14: AVX512_VPOPCNTDQ", "Bit 16: LA57", "Bit 22: RDPID", "Bit 30: SGX_LC"] },
        { register: "edx", filter: 0x0000011c, value: 0x00000000, bits: ["Bit 02: AVX512_4VNNIW", "Bit 03: AVX512_4FMAPS", "Bit 04: Fast Short REP MOV", "Bit 08: AVX512_VP2INTERSECT"] },
      ] },
      { leaf: 0xd, subleaf: 0x0, flags: 1, modifiers: [
        { register: "eax", filter: 0x000002f8, value: 0x00000000, bits: ["Bits 04-03: MPX state", "Bits 07-05: AVX-512 state", "Bit 09: PKRU state"] },
      ] },
      { leaf: 0xd, subleaf: 0x1, flags: 1, modifiers: [
        { register: "eax", filter: 0x0000000e, value: 0x00000000, bits: ["Bit 01: Supports XSAVEC and the compacted form of XRSTOR", "Bit 02: Supports XGETBV", "Bit 03: Supports XSAVES/XRSTORS and IA32_XSS"] },
      ] },
      { leaf: 0x80000001, subleaf: 0x0, flags: 0, modifiers: [
        { register: "ecx", filter: 0x20000100, value: 0x00000000, bits: ["Bit 08: PREFETCHW", "Bit 29: MONITORX and MWAITX"] },
        { register: "edx", filter: 0x04000000, value: 0x00000000, bits: ["Bit 26: 1-GByte pages"] },
      ] },
      { leaf: 0x80000008, subleaf: 0x0, flags: 0, modifiers: [
        { register: "ebx", filter: 0x00000200, value: 0x00000000, bits: ["Bit 09: WBNOINVD"] },
      ] },
    ],
    msr_modifiers: [
      { addr: 0x10a, filter: 0xffffffffffffffffn, value: 0x000000000c0a0c4cn, bits: ["Bit 00: RDCL_NO", "Bit 01: IBRS_ALL", "Bit 02: RSBA", "Bit 03: SKIP_L1DFL_VMENTRY", "Bit 04: SSB_NO", "Bit 05: MDS_NO", "Bit 06: IF_PSCHANGE_MC_NO", "Bit 07: TSX_CTRL", "Bit 08: TAA_NO", "Bit 09: MCU_CONTROL", "Bit 10: MISC_PACKAGE_CTLS", "Bit 11: ENERGY_FILTERING_CTL", "Bit 12: DOITM", "Bit 13: SBDR_SSDP_NO", "Bit 14: FBSDP_NO", "Bit 15: PSDP_NO", "Bit 16: Reserved", "Bit 17: FB_CLEAR", "Bit 18: FB_CLEAR_CTRL", "Bit 19: RRSBA", "Bit 20: BHI_NO", "Bit 21: XAPIC_DISABLE_STATUS", "Bit 22: Reserved", "Bit 23: OVERCLOCKING_STATUS", "Bit 24: PBRSB_NO", "Bit 26: GDS_NO", "BIT 27: RFDS_NO", "Bits 63-25: Reserved"] },
    ],
  },
  /** T2CL: T2's CPUID (with more of leaf 0x8000_0001 cleared) on Cascade Lake and Ice Lake hosts; IA32_ARCH_CAPABILITIES with its control and reserved bits cleared. */
  T2CL: {
    cpuid_modifiers: [
      { leaf: 0x1, subleaf: 0x0, flags: 0, modifiers: [
        { register: "eax", filter: 0x0fff3fff, value: 0x000306f2, bits: ["Bits 03-00: Stepping ID (Intel SDM) / Stepping (AMD APM)", "Bits 07-04: Model (Intel SDM) / BaseModel (AMD APM)", "Bits 11-08: Family (Intel SDM) / BaseFamily (AMD APM)", "Bits 13-12: Processor Type (Intel SDM) / Reserved (AMD APM)", "Bits 19-16: Extended Model ID (Intel SDM) / ExtModel (AMD APM)", "Bits 27-20: Extended Family ID (Intel SDM) / ExtFamily (AMD APM)"] },
        { register: "ecx", filter: 0x0004cdfc, value: 0x00000000, bits: ["Bit 02: DTES64 (Intel SDM) / Reserved (AMD APM)", "Bit 03: MONITOR (Intel SDM) / MONITOR (AMD APM)", "Bit 04: DS-CPL (Intel SDM) / Reserved (AMD APM)", "Bit 05: VMX (Intel SDM) / Reserved (AMD APM)", "Bit 06: SMX (Intel SDM) / Reserved (AMD APM)", "Bit 07: EIST (Intel SDM) / Reserved (AMD APM)", "Bit 08: TM2 (Intel SDM) / Reserved (AMD APM)", "Bit 10: CNXT-ID (Intel SDM) / Reserved (AMD APM)", "Bit 11: SDBG (Intel SDM) / Reserved (AMD APM)", "Bit 14: xTPR Update Control (Intel SDM) / Reserved (AMD APM)", "Bit 15: PDCM (Intel SDM) / Reserved (AMD APM)", "Bit 18: DCA (Intel SDM) / Reserevd (AMD APM)"] },
        { register: "edx", filter: 0xe8641080, value: 0x00001080, bits: ["Bit 07: MCE (Intel SDM) / MCE (AMD APM)", "Bit 12: MTRR (Intel SDM) / MTRR (AMD APM)", "Bit 18: PSN (Intel SDM) / Reserved (AMD APM)", "Bit 21: DS (Intel SDM) / Reserved (AMD APM)PC", "Bit 22: ACPI (Intel SDM) / Reserved (AMD APM)", "Bit 27: SS (Intel SDM) / Reserved (AMD APM)", "Bit 29: TM (Intel SDM) / Reserved (AMD APM)", "Bit 30: IA64 (deprecated) / Reserved (AMD APM) https://www.intel.com/content/dam/www/public/us/en/documents/manuals/itanium-architecture-vol-4-manual.pdf", "Bit 31: PBE (Intel SDM) / Reserved (AMD APM)"] },
      ] },
      { leaf: 0x7, subleaf: 0x0, flags: 1, modifiers: [
        { register: "ebx", filter: 0xffefda14, value: 0x00000200, bits: ["Bit 02: SGX (Intel SDM) / Reserved (AMD APM)", "Bit 04: HLE (Intel SDM) / Reserved (AMD APM)", "Bit 09: Enhanced REP MOVSB/STOSB (Intel SDM) / Reserved (AMD APM)", "Bit 11: RTM (Intel SDM) / Reserved (AMD APM)", "Bit 12: RDT-M (Intel SDM) / PQM (AMD APM)", "Bit 14: MPX (Intel SDM) / Reserved (AMD APM)", "Bit 15: RDT-A (Intel SDM) / PQE (AMD APM)", "Bit 16: AVX512F (Intel SDM) / Reserved (AMD APM)", "Bit 17: AVX512DQ (Intel SDM) / Reserved (AMD APM)", "Bit 18: RDSEED (Intel SDM) / RDSEED (AMD APM)", "Bit 19: ADX (Intel SDM) / ADX (AMD APM)", "Bit 21: AVX512_IFMA (Intel SDM) / Reserved (AMD APM)", "Bit 22: Reserved (Intel SDM) / RDPID (AMD APM)", "Bit 23: CLFLUSHOPT (Intel SDM) / CLFLUSHOPT (AMD APM)", "Bit 24: CLWB (Intel SDM) / CLWB (AMD APM)", "Bit 25: Intel Processor Trace (Intel SDM) / Reserved (AMD APM)", "Bit 26: AVX512PF (Intel SDM) / Reserved (AMD APM)", "Bit 27: AVX512ER (Intel SDM) / Reserved (AMD APM)", "Bit 28: AVX512CD (Intel SDM) / Reserved (AMD APM)", "Bit 29: SHA (Intel SDM) / SHA (AMD APM)", "Bit 30: AVX512BW (Intel SDM) / Reserved (AMD APM)", "Bit 31: AVX512VL (Intel SDM) / Reserved (AMD APM)"] },
        { register: "ecx", filter: 0x40415f5e, value: 0x00000000, bits: ["Bit 01: AVX512_VBMI (Intel SDM) / Reserved (AMD APM)", "Bit 02: UMIP (Intel SDM) / UMIP (AMD APM)", "Bit 03: PKU (Intel SDM) / PKU (AMD APM)", "Bit 04: OSPKE (Intel SDM) / OSPKE (AMD APM)", "Bit 06: AVX512_VBMI2 (Intel SDM) / Reserved (AMD APM)", "Bit 08: GFNI (Intel SDM) / Reserved (AMD APM)", "Bit 09: VAES (Intel SDM) / VAES (AMD APM)", "Bit 10: VPCLMULQDQ (Intel SDM) / VPCLMULQDQ (AMD APM)", "Bit 11: AVX512_VNNI (Intel SDM) / Reserved (AMD APM)", "Bit 12: AVX512_BITALG (Intel SDM) / Reserved (AMD APM)", "Bit 14: AVX512_VPOPCNTDQ (Intel SDM) / Reserved (AMD APM)", "Bit 16: LA57 (Intel SDM) / LA57 (AMD APM)", "Bit 22: RDPID and IA32_TSC_AUX (Intel SDM) / Reserved (AMD APM)", "Bit 30: SGX_LC (Intel SDM) / Reserved (AMD APM)"] },
        { register: "edx", filter: 0x0000011c, value: 0x00000000, bits: ["Bit 02: AVX512_4VNNIW (Intel SDM) / Reserved (AMD APM)", "Bit 03: AVX512_4FMAPS (Intel SDM) / Reserved (AMD APM)", "Bit 04: Fast Short REP MOV (Intel SDM) / Reserved (AMD APM)", "Bit 08: AVX512_VP2INTERSECT (Intel SDM) / Reserved (AMD APM)"] },
      ] },
      { leaf: 0xd, subleaf: 0x0, flags: 1, modifiers: [
        { register: "eax", filter: 0x000002f8, value: 0x00000000, bits: ["Bits 04-03: MPX state (Intel SDM) / Reserved (AMD APM)", "Bits 07-05: AVX-512 state (Intel SDM) / Reserved (AMD APM)", "Bit 09: PKRU state (Intel SDM) / MPK (AMD APM)"] },
      ] },
      { leaf: 0xd, subleaf: 0x1, flags: 1, modifiers: [
        { register: "eax", filter: 0x0000000e, value: 0x00000000, bits: ["Bit 01: Supports XSAVEC and the compacted form of XRSTOR (Intel SDM) /", "Bit 02: Supports XGETBV (Intel SDM) / XGETBV (AMD APM)", "Bit 03: Supports XSAVES/XRSTORS and IA32_XSS (Intel SDM) / XSAVES (AMD"] },
      ] },
      { leaf: 0x80000001, subleaf: 0x0, flags: 0, modifiers: [
        { register: "ecx", filter: 0x200001c0, value: 0x00000000, bits: ["Bit 06: Reserved (Intel SDM) / SSE4A (AMD APM)", "Bit 07: Reserved (Intel SDM) / MisAlignSse (AMD APM)", "Bit 08: PREFETCHW (Intel SDM) / 3DNowPrefetch (AMD APM)", "Bit 29: MONITORX and MWAITX (Intel SDM) / MONITORX (AMD APM)"] },
        { register: "edx", filter: 0x07c00000, value: 0x00000000, bits: ["Bit 22: Reserved (Intel SDM) / MmxExt (AMD APM)", "Bit 23: Reserved (Intel SDM) / MMX (AMD APM)", "Bit 24: Reserved (Intel SDM) / FSXR (AMD APM)", "Bit 25: Reserved (Intel SDM) / FFXSR (AMD APM)", "Bit 26: 1-GByte pages (Intel SDM) / Page1GB (AMD APM)"] },
      ] },
      { leaf: 0x80000008, subleaf: 0x0, flags: 0, modifiers: [
        { register: "ebx", filter: 0x00000200, value: 0x00000000, bits: ["Bit 09: WBNOINVD (Intel SDM) / WBNOINVD (AMD APM)"] },
      ] },
    ],
    msr_modifiers: [
      { addr: 0x10a, filter: 0xffffffffe2f51e00n, value: 0x0000000000000000n, bits: ["Bit 09: MCU_CONTROL", "Bit 10: MISC_PACKAGE_CTLS", "Bit 11: ENERGY_FILTERING_CTL", "Bit 12: DOITM", "Bit 16: Reserved", "Bit 18: FB_CLEAR_CTRL", "Bit 20: BHI_NO", "Bit 21: XAPIC_DISABLE_STATUS", "Bit 22: Reserved", "Bit 23: OVERCLOCKING_STATUS", "Bit 25: GDS_CTRL", "Bits 63-27: Reserved (Intel SDM)", "Bit 00: RDCL_NO", "Bit 01: IBRS_ALL", "Bit 02: RSBA", "Bit 03: SKIP_L1DFL_VMENTRY", "Bit 04: SSB_NO", "Bit 05: MDS_NO", "Bit 06: IF_PSCHANGE_MC_NO", "Bit 07: TSX_CTRL", "Bit 08: TAA_NO", "Bit 13: SBDR_SSDP_NO", "Bit 14: FBSDP_NO", "Bit 15: PSDP_NO", "Bit 17: FB_CLEAR", "Bit 19: RRSBA", "Bit 24: PBRSB_NO", "Bit 26: GDS_NO", "Bit 27: RFDS_NO", "Bit 28: RFDS_CLEAR"] },
    ],
  },
  /** T2A: the T2CL instruction set on AMD Milan hosts (AMD-only bits of leaves 0x8000_0001 and 0x8000_0008 adjusted). */
  T2A: {
    cpuid_modifiers: [
      { leaf: 0x1, subleaf: 0x0, flags: 0, modifiers: [
        { register: "eax", filter: 0x0fff3fff, value: 0x000306f2, bits: ["Bits 03-00: Stepping (AMD APM) / Stepping ID (Intel SDM)", "Bits 07-04: BaseModel (AMD APM) / Model (Intel SDM)", "Bits 11-08: BaseFamily (AMD APM) / Family (Intel SDM)", "Bits 13-12: Reserved (AMD APM) / Processor Type (Intel SDM)", "Bits 19-16: ExtModel (AMD APM) / Extended Model ID (Intel SDM)", "Bits 27-20: ExtFamily (AMD APM) / Extended Family ID (Intel SDM)"] },
        { register: "ecx", filter: 0x0004cdfc, value: 0x00000000, bits: ["Bit 02: Reserved (AMD APM) / DTES64 (Intel SDM)", "Bit 03: MONITOR (AMD APM) / MONITOR (Intel SDM)", "Bit 04: Reserved (AMD APM) / DS-CPL (Intel SDM)", "Bit 05: Reserved (AMD APM) / VMX (Intel SDM)", "Bit 06: Reserved (AMD APM) / SMX (Intel SDM)", "Bit 07: Reserved (AMD APM) / EIST (Intel SDM)", "Bit 08: Reserved (AMD APM) / TM2 (Intel SDM)", "Bit 10: Reserved (AMD APM) / CNXT-ID (Intel SDM)", "Bit 11: Reserved (AMD APM) / SDBG (Intel SDM)", "Bit 14: Reserved (AMD APM) / xTPR Update Control (Intel SDM)", "Bit 15: Reserved (AMD APM) / PDCM (Intel SDM)", "Bit 18: Reserevd (AMD APM) / DCA (Intel SDM)"] },
        { register: "edx", filter: 0xe8641080, value: 0x00001080, bits: ["Bit 07: MCE (AMD APM) / MCE (Intel SDM)", "Bit 12: MTRR (AMD APM) / MTRR (Intel SDM)", "Bit 18: Reserved (AMD APM) / PSN (Intel SDM)", "Bit 21: Reserved (AMD APM) / DS (Intel SDM)", "Bit 22: Reserved (AMD APM) / ACPI (Intel SDM)", "Bit 27: Reserved (AMD APM) / SS (Intel SDM)", "Bit 29: Reserved (AMD APM) / TM (Intel SDM)", "Bit 30: Reserved (AMD APM) / IA-64 (deprecated) https://www.intel.com/content/dam/www/public/us/en/documents/manuals/itanium-architecture-vol-4-manual.pdf", "Bit 31: Reserved (AMD APM) / PBE (Intel SDM)"] },
      ] },
      { leaf: 0x7, subleaf: 0x0, flags: 1, modifiers: [
        { register: "ebx", filter: 0xffefda14, value: 0x00000200, bits: ["Bit 02: Reserved (AMD APM) / SGX (Intel SDM)", "Bit 04: Reserved (AMD APM) / HLE (Intel SDM)", "Bit 09: Reserved (AMD APM) / Enhanced REP MOVSB/STOSB (Intel SDM)", "Bit 11: Reserved (AMD APM) / RTM (Intel SDM)", "Bit 12: PQM (AMD APM) / RDT-M (Intel SDM)", "Bit 14: Reserved (AMD APM) / MPX (Intel SDM)", "Bit 15: PQE (AMD APM) / RDT-A (Intel SDM)", "Bit 16: Reserved (AMD APM) / AVX512F (Intel SDM)", "Bit 17: Reserved (AMD APM) / AVX512DQ (Intel SDM)", "Bit 18: RDSEED (AMD APM) / RDSEED (Intel SDM)", "Bit 19: ADX (AMD APM) / ADX (Intel SDM)", "Bit 21: Reserved (AMD APM) / AVX512_IFMA (Intel SDM)", "Bit 22: RDPID (AMD APM) / Reserved (Intel SDM)", "Bit 23: CLFLUSHOPT (AMD APM) / CLFLUSHOPT (Intel SDM)", "Bit 24: CLWB (AMD APM) / CLWB (Intel SDM)", "Bit 25: Reserved (AMD APM) / Intel Processor Trace (Intel SDM)", "Bit 26: Reserved (AMD APM) / AVX512PF (Intel SDM)", "Bit 27: Reserved (AMD APM) / AVX512ER (Intel SDM)", "Bit 28: Reserved (AMD APM) / AVX512CD (Intel SDM)", "Bit 29: SHA (AMD APM) / SHA (Intel SDM)", "Bit 30: Reserved (AMD APM) / AVX512BW (Intel SDM)", "Bit 31: Reserved (AMD APM) / AVX512VL (Intel SDM)"] },
        { register: "ecx", filter: 0x40415f5e, value: 0x00000000, bits: ["Bit 01: Reserved (AMD APM) / AVX512_VBMI (Intel SDM)", "Bit 02: UMIP (AMD APM) / UMIP (Intel SDM)", "Bit 03: PKU (AMD APM) / PKU (Intel SDM)", "Bit 04: OSPKE (AMD APM) / OSPKE (Intel SDM)", "Bit 06: Reserved (AMD APM) / AVX512_VBMI2 (Intel SDM)", "Bit 08: Reserved (AMD APM) / GFNI (Intel SDM)", "Bit 09: VAES (AMD APM) / VAES (Intel SDM)", "Bit 10: VPCLMULQDQ (AMD APM) / VPCLMULQDQ (Intel SDM)", "Bit 11: Reserved (AMD APM) / AVX512_VNNI (Intel SDM)", "Bit 12: Reserved (AMD APM) / AVX512_BITALG (Intel SDM)", "Bit 14: Reserved (AMD APM) / AVX512_VPOPCNTDQ (Intel SDM)", "Bit 16: LA57 (AMD APM) / LA57 (Intel SDM)", "Bit 22: Reserved (AMD APM) / RDPID and IA32_TSC_AUX (Intel SDM)", "Bit 30: Reserved (AMD APM) / SGX_LC (Intel SDM)"] },
        { register: "edx", filter: 0x0000011c, value: 0x00000000, bits: ["Bit 02: Reserved (AMD APM) / AVX512_4VNNIW (Intel SDM)", "Bit 03: Reserved (AMD APM) / AVX512_4FMAPS (Intel SDM)", "Bit 04: Reserved (AMD APM) / Fast Short REP MOV (Intel SDM)", "Bit 08: Reserved (AMD APM) / AVX512_VP2INTERSECT (Intel SDM)"] },
      ] },
      { leaf: 0xd, subleaf: 0x0, flags: 1, modifiers: [
        { register: "eax", filter: 0x000002f8, value: 0x00000000, bits: ["Bits 04-03: Reserved (AMD APM) / MPX state (Intel SDM)", "Bits 07-05: Reserved (AMD APM) / AVX-512 state (Intel SDM)", "Bit 09: MPK (AMD APM) / PKRU state (Intel SDM)"] },
      ] },
      { leaf: 0xd, subleaf: 0x1, flags: 1, modifiers: [
        { register: "eax", filter: 0x0000000e, value: 0x00000000, bits: ["Bit 01: XSAVEC (AMD APM) / Supports XSAVEC and the compacted form of", "Bit 02: XGETBV (AMD APM) / Supports XGETBV (Intel SDM)", "Bit 03: XSAVES (AMD APM) / Supports XSAVES/XRSTORS and IA32_XSS (Intel"] },
      ] },
      { leaf: 0x80000001, subleaf: 0x0, flags: 0, modifiers: [
        { register: "ecx", filter: 0x200001c4, value: 0x00000000, bits: ["Bit 02: SVM (AMD APM) / Reserved (Intel SDM)", "Bit 06: SSE4A (AMD APM) / Reserved (Intel SDM)", "Bit 07: MisAlignSse (AMD APM) / Reserved (Intel SDM)", "Bit 08: 3DNowPrefetch (AMD APM) / PREFETCHW (Intel SDM)", "Bit 29: MONITORX (AMD APM) / MONITORX and MWAITX (Intel SDM)"] },
        { register: "edx", filter: 0x06400000, value: 0x00000000, bits: ["Bit 22: MmxExt (AMD APM) / Reserved (Intel SDM)", "Bit 25: FFXSR (AMD APM) / Reserved (Intel SDM)", "Bit 26: Page1GB (AMD APM) / 1-GByte pages (Intel SDM)"] },
      ] },
      { leaf: 0x80000008, subleaf: 0x0, flags: 0, modifiers: [
        { register: "ebx", filter: 0x001c0205, value: 0x001c0004, bits: ["Bit 00: CLZERO (AMD APM) / Reserved (Intel SDM)", "Bit 02: RstrFpErrPtrs (AMD APM) / Reserved (Intel SDM)", "Bit 09: WBNOINVD (AMD APM) / WBNOINVD (Intel SDM)", "Bit 18: IbrsPreferred (ADM APM) / Reserved (Intel SDm)", "Bit 19: IbrsSameMode (AMD APM) / Reserved (Intel SDM)", "Bit 20: EferLmsleUnsupported (AMD APM) / Reserved (Intel SDM)"] },
      ] },
    ],
    msr_modifiers: [
    ],
  },
  /** C3: Intel Skylake/Cascade Lake/Ice Lake hosts, presenting EC2 C3's feature set (Ivy Bridge, family 6 model 0x3e). */
  C3: {
    cpuid_modifiers: [
      { leaf: 0x1, subleaf: 0x0, flags: 0, modifiers: [
        { register: "eax", filter: 0x0fff3fff, value: 0x000306e4, bits: ["Bits 03-00: Stepping ID.", "Bits 07-04: Model.", "Bits 11-08: Family.", "Bits 13-12: Processor Type.", "Bits 19-16: Extended Model ID.", "Bits 27-20: Extended Family ID."] },
        { register: "ecx", filter: 0x0040dd3c, value: 0x00000000, bits: ["Bit 02: DTES64", "Bit 03: MONITOR", "Bit 04: DS-CPL", "Bit 05: VMX", "Bit 08: TM2", "Bit 10: CNXT-ID", "Bit 11: SDBG", "Bit 12: FMA", "Bit 14: xTPR Update Control", "Bit 15: PDCM", "Bit 22: MOVBE"] },
        { register: "edx", filter: 0xa8641080, value: 0x00001080, bits: ["Bit 07: MCE", "Bit 12: MTRR", "Bit 18: PSN", "Bit 21: DS", "Bit 22: ACPI", "Bit 27: SS", "Bit 29: TM", "Bit 31: PBE"] },
      ] },
      { leaf: 0x7, subleaf: 0x0, flags: 1, modifiers: [
        { register: "ebx", filter: 0xffafdd3c, value: 0x00000000, bits: ["Bit 02: SGX", "Bit 03: BMI1", "Bit 04: HLE", "Bit 05: AVX2", "Bit 08: BMI2", "Bit 10: INVPCID", "Bit 11: RTM", "Bit 12: RDT-M", "Bit 14: MPX", "Bit 15: RDT-A", "Bit 16: AVX512F", "Bit 17: AVX512DQ", "Bit 18: RDSEED", "Bit 19: ADX", "Bit 21: AVX512_IFMA", "Bit 23: CLFLUSHOPT", "Bit 24: CLWB", "Bit 25: Intel Processor Trace", "Bit 26: AVX512PF", "Bit 27: AVX512ER", "Bit 28: AVX512CD", "Bit 29: SHA", "Bit 30: AVX512BW", "Bit 31: AVX512VL"] },
        { register: "ecx", filter: 0x4041481e, value: 0x00000000, bits: ["Bit 01: AVX512_VBMI", "Bit 02: UMIP", "Bit 03: PKU", "Bit 04: OSPKE", "Bit 11: AVX512_VNNI", "Bit 14: AVX512_VPOPCNTDQ", "Bit 16: LA57", "Bit 22: RDPID", "Bit 30: SGX_LC"] },
        { register: "edx", filter: 0x0000000c, value: 0x00000000, bits: ["Bit 02: AVX512_4VNNIW", "Bit 03: AVX512_4FMAPS"] },
      ] },
      { leaf: 0xd, subleaf: 0x0, flags: 1, modifiers: [
        { register: "eax", filter: 0x000002f8, value: 0x00000000, bits: ["Bits 04-03: MPX state", "Bits 07-05: AVX-512 state", "Bit 09: PKRU state"] },
      ] },
      { leaf: 0xd, subleaf: 0x1, flags: 1, modifiers: [
        { register: "eax", filter: 0x0000000e, value: 0x00000000, bits: ["Bit 01: Supports XSAVEC and the compacted form of XRSTOR", "Bit 02: Supports XGETBV", "Bit 03: Supports XSAVES/XRSTORS and IA32_XSS"] },
      ] },
      { leaf: 0x80000001, subleaf: 0x0, flags: 0, modifiers: [
        { register: "ecx", filter: 0x00000120, value: 0x00000000, bits: ["Bit 05: LZCNT", "Bit 08: PREFETCHW"] },
        { register: "edx", filter: 0x04000000, value: 0x00000000, bits: ["Bit 26: 1-GByte pages"] },
      ] },
    ],
    msr_modifiers: [
    ],
  },
};
