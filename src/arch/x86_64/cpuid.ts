// CPUID for each vCPU: what the guest sees when it executes CPUID.
//
// KVM_GET_SUPPORTED_CPUID gives the leaves KVM can present, with the host's values masked to what KVM
// emulates. Kindling passes that list through a cpuid profile (which features to show), then normalizes it
// for one vCPU (its APIC id and the VM's topology), and gives the result to KVM_SET_CPUID2 (api.rst 4.46).
// Bit positions are from the Intel SDM vol. 2A, "CPUID", and the KVM leaves from
// Documentation/virt/kvm/x86/cpuid.rst.
//
// Every edit is recorded as a CpuidChange (leaf, subleaf, register, before, after, why), so
// `kindling --explain` can show exactly what kindling changed and the reason.

import type { CpuidEntry } from "../../kvm/cpuid.ts";
import { KVM_CPUID_FLAG_SIGNIFCANT_INDEX } from "../../kvm/uapi.ts";

export type Register = "eax" | "ebx" | "ecx" | "edx";

export interface CpuidChange {
  leaf: number;
  subleaf: number;
  register: Register;
  before: number;
  after: number;
  why: string;
}

/** A kernel command-line argument a profile needs, for what CPUID cannot express on this host. */
export interface CmdlineAddition {
  arg: string;
  why: string;
}

export interface CpuidResult {
  entries: CpuidEntry[];
  changes: CpuidChange[];
  cmdline: CmdlineAddition[];
}

/**
 * kindling's cpuid profiles: which CPUID features the guest is shown. Not Firecracker's CPU templates
 * (T2, C3 ... in its API's machine-config.cpu_template), which kindling does not implement.
 * `default`: the host's supported features, unchanged (Firecracker without a template).
 * `emulated-host`: for hosts where guest CPL0 is emulated (PVM-backed KVM); see emulatedHost() below.
 */
export const CPUID_PROFILES = ["default", "emulated-host"] as const;
export type CpuidProfile = (typeof CPUID_PROFILES)[number];

export function parseCpuidProfile(name: string): CpuidProfile {
  const t = CPUID_PROFILES.find((x) => x === name);
  if (!t) throw new Error(`unknown cpuid profile "${name}"; known profiles: ${CPUID_PROFILES.join(", ")}`);
  return t;
}

// ---- Leaves and bits kindling touches ----

export const CPUID_LEAF_FEATURES = 0x1;
export const CPUID_LEAF_CACHE_PARAMS = 0x4; // deterministic cache parameters (Intel)
export const CPUID_LEAF_EXT_TOPOLOGY = 0xb; // extended topology enumeration
export const CPUID_LEAF_V2_EXT_TOPOLOGY = 0x1f; // V2 extended topology enumeration
/** arch/x86/include/uapi/asm/kvm_para.h: the hypervisor signature leaf and the paravirt feature leaf. */
export const KVM_CPUID_SIGNATURE = 0x40000000;
export const KVM_CPUID_FEATURES = 0x40000001;
export const CPUID_LEAF_ADDR_SIZES = 0x80000008; // address sizes; EBX holds AMD extended feature bits
/** AMD APM vol. 3, CPUID Fn8000_001E: extended APIC id, compute unit (core) id and threads per unit. */
export const CPUID_LEAF_AMD_EXT_APIC_ID = 0x8000001e;

/** Leaf 1 ECX bit 31: "a hypervisor is present" (reserved for this use on real CPUs). */
export const X86_FEATURE_HYPERVISOR_BIT = 31;
/** Leaf 1 EDX bit 28: HTT, "EBX[23:16] (logical processor count) is valid". */
export const X86_FEATURE_HT_BIT = 28;
/** Leaf 0x8000_0008 EBX bit 2: XSAVE/FXSAVE always save the x87 error pointers (AMD APM vol. 3, CPUID Fn8000_0008_EBX). */
export const X86_FEATURE_XSAVEERPTR_BIT = 2;
/** Leaf 0xB/0x1F ECX[15:8] level types. */
export const TOPOLOGY_LEVEL_INVALID = 0;
export const TOPOLOGY_LEVEL_SMT = 1;
export const TOPOLOGY_LEVEL_CORE = 2;
/** "KVMKVMKVM\0\0\0" in EBX, ECX, EDX (little-endian, four bytes each). */
export const KVM_SIGNATURE = "KVMKVMKVM\0\0\0";

/** Leaf 0x4000_0001 EAX bits, by kvm_para.h name. */
export const KVM_FEATURE_BITS: Record<number, string> = {
  0: "KVM_FEATURE_CLOCKSOURCE", 1: "KVM_FEATURE_NOP_IO_DELAY", 2: "KVM_FEATURE_MMU_OP",
  3: "KVM_FEATURE_CLOCKSOURCE2", 4: "KVM_FEATURE_ASYNC_PF", 5: "KVM_FEATURE_STEAL_TIME",
  6: "KVM_FEATURE_PV_EOI", 7: "KVM_FEATURE_PV_UNHALT", 9: "KVM_FEATURE_PV_TLB_FLUSH",
  10: "KVM_FEATURE_ASYNC_PF_VMEXIT", 11: "KVM_FEATURE_PV_SEND_IPI", 12: "KVM_FEATURE_POLL_CONTROL",
  13: "KVM_FEATURE_PV_SCHED_YIELD", 14: "KVM_FEATURE_ASYNC_PF_INT", 15: "KVM_FEATURE_MSI_EXT_DEST_ID",
  16: "KVM_FEATURE_HC_MAP_GPA_RANGE", 17: "KVM_FEATURE_MIGRATION_CONTROL", 24: "KVM_FEATURE_CLOCKSOURCE_STABLE_BIT",
};

// ---- Editing with a record of each change ----

/** `value` with bits [lo, hi] replaced by `field`. */
function withBits(value: number, lo: number, hi: number, field: number): number {
  const width = hi - lo + 1;
  const mask = (width === 32 ? 0xffffffff : ((1 << width) - 1) << lo) >>> 0;
  return ((value & ~mask) | ((field << lo) & mask)) >>> 0;
}

class Editor {
  readonly changes: CpuidChange[] = [];
  readonly entries: CpuidEntry[];

  constructor(supported: readonly CpuidEntry[]) {
    this.entries = supported.map((e) => ({ ...e }));
  }

  find(leaf: number, subleaf = 0): CpuidEntry | undefined {
    return this.entries.find((e) => e.function === leaf && e.index === subleaf);
  }

  all(leaf: number): CpuidEntry[] {
    return this.entries.filter((e) => e.function === leaf);
  }

  set(e: CpuidEntry, register: Register, after: number, why: string): void {
    const before = e[register] >>> 0;
    after >>>= 0;
    e[register] = after;
    if (before !== after) this.changes.push({ leaf: e.function, subleaf: e.index, register, before, after, why });
  }

  setBits(e: CpuidEntry, register: Register, lo: number, hi: number, field: number, why: string): void {
    this.set(e, register, withBits(e[register], lo, hi, field), why);
  }

  /** Replace every sub-leaf of `leaf` by `fresh`, recording register differences against the old ones. */
  replaceLeaf(leaf: number, fresh: CpuidEntry[], why: string): void {
    const at = this.entries.findIndex((e) => e.function === leaf);
    const old = this.all(leaf);
    for (const e of fresh) {
      const was = old.find((o) => o.index === e.index);
      for (const r of ["eax", "ebx", "ecx", "edx"] as const) {
        const before = (was?.[r] ?? 0) >>> 0;
        if (before !== e[r] >>> 0) this.changes.push({ leaf, subleaf: e.index, register: r, before, after: e[r] >>> 0, why });
      }
    }
    const rest = this.entries.filter((e) => e.function !== leaf);
    rest.splice(at < 0 ? rest.length : Math.min(at, rest.length), 0, ...fresh);
    this.entries.splice(0, this.entries.length, ...rest);
  }
}

// ---- Templates ----

/**
 * The glibc tunable (glibc 2.36 names, sysdeps/x86/cpu-tunables.c) that keeps guest programs off the vector
 * registers FXSAVE does not cover: the upper halves of YMM, ZMM, YMM16-31 and the AVX-512 mask registers.
 * Guest CPL3 code runs natively on the emulating host and sees the host's CPUID and XCR0, so glibc picks
 * its AVX2 and EVEX string functions; the guest kernel, booted with `noxsave`, saves only the x87 and SSE
 * state (FXSAVE) when it switches tasks. A program that loads %ymm16 and page-faults before storing it
 * (glibc's memcpy of its TLS image, in every new process) then stores another task's bytes: measured here
 * as `segfault at 0 ip 4a4d02` in about one busybox run in two (docs/syscall-assist.md). Linux passes an
 * unknown `NAME=value` command-line argument to init as an environment variable, and every process inherits
 * it. Programs that choose AVX without glibc's help remain exposed on such a host.
 */
export const GLIBC_NO_AVX = "glibc.cpu.hwcaps=-AVX,-AVX2,-AVX512F,-AVX512VL,-AVX512BW,-AVX512DQ,-AVX512CD,-FMA,-FMA4,-AVX_Fast_Unaligned_Load";
const GLIBC_NO_AVX_WHY =
  "emulated-host: guest programs see the host's AVX and AVX-512 at CPL3, but with noxsave Linux saves only x87/SSE state on a task switch; glibc is told (GLIBC_TUNABLES, passed to init's environment) to use its SSE2 functions";

/**
 * `emulated-host`, for a PVM-backed KVM host where the guest's CPL0 code runs in an emulator:
 *  - leaf 0x4000_0001 EAX: no KVM paravirt features, so Linux takes its native paths instead of the
 *    paravirtual ones (kvmclock, async page faults, steal time, PV EOI, ...), which are written for a
 *    hardware-assisted KVM and add work at CPL0;
 *  - leaf 0x8000_0008 EBX XSAVEERPTR: without it, Linux on AMD sets X86_BUG_FXSAVE_LEAK and runs an extra
 *    x87 instruction sequence on every FPU state restore, at CPL0;
 *  - on this host leaves 1, 7 and 0xD cannot be changed through KVM_SET_CPUID2, so the features Linux must
 *    not use there are switched off on the kernel command line instead.
 */
function emulatedHost(ed: Editor, cmdline: CmdlineAddition[]): void {
  const pv = ed.find(KVM_CPUID_FEATURES);
  if (pv && pv.eax !== 0) {
    const names = Object.entries(KVM_FEATURE_BITS).filter(([bit]) => (pv.eax >>> Number(bit)) & 1).map(([, n]) => n);
    ed.set(pv, "eax", 0, `emulated-host: no KVM paravirt features (clears ${names.join(", ") || "unnamed bits"}); guest CPL0 is emulated on this host`);
  }
  const sizes = ed.find(CPUID_LEAF_ADDR_SIZES);
  if (sizes) {
    ed.setBits(sizes, "ebx", X86_FEATURE_XSAVEERPTR_BIT, X86_FEATURE_XSAVEERPTR_BIT, 1,
      "emulated-host: XSAVEERPTR, so Linux skips its X86_BUG_FXSAVE_LEAK workaround on every FPU restore");
  }
  cmdline.push(
    { arg: "noxsave", why: "emulated-host: leaf 1 ECX.XSAVE and leaf 0xD cannot be changed through CPUID on this host; Linux uses FXSAVE instead" },
    {
      arg: "clearcpuid=smap,smep,popcnt,pku,umip,cx16,ssse3,sse4_1,sse4_2,aes,pclmulqdq,sha_ni",
      why: "emulated-host: leaves 1 and 7 cannot be changed through CPUID on this host, and its emulator cannot run popcnt, clac/stac (SMAP), lock cmpxchg16b (CX16, which SLUB's fast path uses) or the SIMD instructions of kernel crypto (Debian's kernel stops at movd %ecx,%xmm15 in blake2s_compress_ssse3); Linux treats these features as absent and takes its generic code",
    },
    { arg: `GLIBC_TUNABLES=${GLIBC_NO_AVX}`, why: GLIBC_NO_AVX_WHY },
  );
}

// ---- Normalization for one vCPU ----

export interface VcpuCpuidOptions {
  /** This vCPU's index, which is also its APIC id. */
  cpuIndex: number;
  cpuCount: number;
  profile: CpuidProfile;
  /**
   * Hardware threads per core: 1, or 2 for Firecracker's `smt: true` (vCPUs 2n and 2n+1 are the two
   * threads of core n). Default 1.
   */
  threadsPerCore?: 1 | 2;
}

/** Bits of an APIC id needed to number `n` things: ceil(log2(n)). */
const bitsFor = (n: number) => (n <= 1 ? 0 : 32 - Math.clz32(n - 1));

/**
 * The CPUID entries for one vCPU. The topology is one package of `cpuCount` vCPUs: `cpuCount` cores of one
 * thread, or with `threadsPerCore` 2 (SMT) `cpuCount / 2` cores of two threads. The vCPU index is its APIC
 * id (and the MP table's processor entry says the same); with SMT its low bit is the thread.
 */
export function vcpuCpuid(supported: readonly CpuidEntry[], opts: VcpuCpuidOptions): CpuidResult {
  const { cpuIndex, cpuCount } = opts;
  if (!Number.isInteger(cpuCount) || cpuCount < 1 || cpuCount > 255) throw new Error(`CPUID: vCPU count ${cpuCount} is not in 1..255`);
  if (!Number.isInteger(cpuIndex) || cpuIndex < 0 || cpuIndex >= cpuCount) throw new Error(`CPUID: vCPU index ${cpuIndex} is not in 0..${cpuCount - 1}`);
  // Firecracker: "With SMT enabled, the vCPU count is required to be either 1 or an even number".
  const threads = cpuCount === 1 ? 1 : (opts.threadsPerCore ?? 1);
  if (threads !== 1 && (threads !== 2 || cpuCount % 2 !== 0)) throw new Error(`CPUID: ${cpuCount} vCPUs cannot be cores of ${threads} threads`);
  const cores = cpuCount / threads;

  const ed = new Editor(supported);
  const cmdline: CmdlineAddition[] = [];
  if (opts.profile === "emulated-host") emulatedHost(ed, cmdline);

  // Leaf 1: who this CPU is.
  const l1 = ed.find(CPUID_LEAF_FEATURES);
  if (l1) {
    ed.setBits(l1, "ebx", 24, 31, cpuIndex, `initial APIC ID = vCPU index ${cpuIndex}`);
    ed.setBits(l1, "ebx", 16, 23, cpuCount, `logical processors in the package = ${cpuCount} vCPUs`);
    ed.setBits(l1, "edx", X86_FEATURE_HT_BIT, X86_FEATURE_HT_BIT, cpuCount > 1 ? 1 : 0,
      cpuCount > 1 ? "HTT: more than one logical processor, EBX[23:16] is valid" : "HTT off: a single vCPU");
    ed.setBits(l1, "ecx", X86_FEATURE_HYPERVISOR_BIT, X86_FEATURE_HYPERVISOR_BIT, 1,
      "hypervisor present: Linux then reads leaf 0x4000_0000 and finds KVM");
  }

  // Leaf 4: which CPUs share each cache. L1 and L2 belong to one core (its threads); L3 to the package.
  for (const e of ed.all(CPUID_LEAF_CACHE_PARAMS)) {
    if ((e.eax & 0x1f) === 0) continue; // cache type 0: no more caches
    const level = (e.eax >>> 5) & 0x7;
    const sharing = level >= 3 ? cpuCount : threads;
    ed.setBits(e, "eax", 14, 25, sharing - 1, `L${level} cache shared by ${sharing} logical processor(s) (field is count - 1)`);
    ed.setBits(e, "eax", 26, 31, Math.min(cores, 64) - 1, `${cores} cores in the package (field is count - 1)`);
  }

  // Leaves 0xB and 0x1F: the x2APIC topology, level by level; EDX is this CPU's x2APIC id at every level.
  for (const leaf of [CPUID_LEAF_EXT_TOPOLOGY, CPUID_LEAF_V2_EXT_TOPOLOGY]) {
    if (ed.all(leaf).length === 0) continue;
    const sub = (index: number, shift: number, count: number, type: number): CpuidEntry => ({
      function: leaf, index, flags: KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
      eax: shift, ebx: count, ecx: (type << 8) | index, edx: cpuIndex,
    });
    // EAX: how far to shift the x2APIC id to get the next level's id; EBX: logical processors at this level.
    ed.replaceLeaf(leaf, [
      sub(0, bitsFor(threads), threads, TOPOLOGY_LEVEL_SMT),
      sub(1, bitsFor(threads) + bitsFor(cores), cpuCount, TOPOLOGY_LEVEL_CORE),
      sub(2, 0, 0, TOPOLOGY_LEVEL_INVALID),
    ], `x2APIC topology: ${threads} thread(s) per core, ${cores} core(s), x2APIC id ${cpuIndex}`);
  }

  // AMD leaf 0x8000_001E with SMT: EBX[15:8] is threads per core - 1, EBX[7:0] this thread's core.
  const amdTopology = ed.find(CPUID_LEAF_AMD_EXT_APIC_ID);
  if (amdTopology && threads > 1) {
    ed.set(amdTopology, "eax", cpuIndex, `extended APIC id = vCPU index ${cpuIndex}`);
    ed.setBits(amdTopology, "ebx", 8, 15, threads - 1, `${threads} threads per core (field is count - 1)`);
    ed.setBits(amdTopology, "ebx", 0, 7, cpuIndex >> bitsFor(threads), `core ${cpuIndex >> bitsFor(threads)}`);
  }

  // Leaf 0x4000_0000: the signature Linux's kvm_detect() looks for.
  const sig = new TextEncoder().encode(KVM_SIGNATURE);
  const sigWord = (i: number) => new DataView(sig.buffer).getUint32(i * 4, true);
  let hv = ed.find(KVM_CPUID_SIGNATURE);
  if (!hv) {
    hv = { function: KVM_CPUID_SIGNATURE, index: 0, flags: 0, eax: 0, ebx: 0, ecx: 0, edx: 0 };
    ed.entries.push(hv);
    ed.set(hv, "eax", ed.find(KVM_CPUID_FEATURES) ? KVM_CPUID_FEATURES : KVM_CPUID_SIGNATURE, "highest hypervisor leaf");
  }
  ed.set(hv, "ebx", sigWord(0), 'hypervisor signature "KVMK"');
  ed.set(hv, "ecx", sigWord(1), 'hypervisor signature "VMKV"');
  ed.set(hv, "edx", sigWord(2), 'hypervisor signature "M\\0\\0\\0"');

  return { entries: ed.entries, changes: ed.changes, cmdline };
}

const hex8 = (n: number) => "0x" + (n >>> 0).toString(16).padStart(8, "0");

/** One line per change, for --explain: `leaf 0x00000001.0 ebx 0x00000800 -> 0x01020800  why`. */
export function formatCpuidChange(c: CpuidChange): string {
  return `leaf ${hex8(c.leaf)}.${c.subleaf} ${c.register} ${hex8(c.before)} -> ${hex8(c.after)}  ${c.why}`;
}
