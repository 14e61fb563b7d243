import { describe, expect, test } from "bun:test";
import {
  GLIBC_NO_AVX, KVM_CPUID_FEATURES, KVM_CPUID_SIGNATURE, formatCpuidChange, parseCpuidProfile, vcpuCpuid, type CpuidChange,
} from "../src/arch/x86_64/cpuid.ts";
import type { CpuidEntry } from "../src/kvm/cpuid.ts";
import { KVM_CPUID_FLAG_SIGNIFCANT_INDEX } from "../src/kvm/uapi.ts";

const e = (fn: number, index: number, eax: number, ebx: number, ecx: number, edx: number, flags = 0): CpuidEntry => ({
  function: fn, index, flags, eax, ebx, ecx, edx,
});
const IDX = KVM_CPUID_FLAG_SIGNIFCANT_INDEX;

/** A small, plausible KVM_GET_SUPPORTED_CPUID answer (Intel-like host). */
function supported(): CpuidEntry[] {
  return [
    e(0x0, 0, 0x1f, 0x756e6547, 0x6c65746e, 0x49656e69),
    // leaf 1: CLFLUSH 8 (bits 15:8 = 8), host APIC id 0x11 and count 0x20 (to be replaced), no HTT.
    e(0x1, 0, 0x000906ea, 0x11200800, 0x7ffa3203, 0x078bfbff),
    e(0x4, 0, 0x1c004121, 0x01c0003f, 0x3f, 0, IDX), // L1d
    e(0x4, 1, 0x1c004122, 0x01c0003f, 0x3f, 0, IDX), // L1i
    e(0x4, 2, 0x1c004143, 0x03c0003f, 0x3ff, 0, IDX), // L2
    e(0x4, 3, 0x1c03c163, 0x03c0003f, 0x3fff, 6, IDX), // L3
    e(0x4, 4, 0, 0, 0, 0, IDX), // end
    e(0x7, 0, 0, 0x029c6fbf, 0, 0, IDX),
    e(0xb, 0, 1, 2, 0x100, 0x11, IDX),
    e(0xb, 1, 4, 8, 0x201, 0x11, IDX),
    e(0x1f, 0, 1, 2, 0x100, 0x11, IDX),
    e(KVM_CPUID_SIGNATURE, 0, 0x40000001, 0x4b4d564b, 0x564b4d56, 0x4d),
    // KVM_FEATURE_CLOCKSOURCE, CLOCKSOURCE2, ASYNC_PF, STEAL_TIME, PV_EOI, PV_UNHALT, CLOCKSOURCE_STABLE_BIT
    e(KVM_CPUID_FEATURES, 0, 0x010000f9, 0, 0, 0),
    e(0x80000000, 0, 0x80000008, 0, 0, 0),
    e(0x80000008, 0, 0x3027, 0x0, 0, 0),
  ];
}

const find = (entries: CpuidEntry[], fn: number, index = 0) => entries.find((x) => x.function === fn && x.index === index)!;
const changed = (changes: CpuidChange[], leaf: number, register: string) => changes.filter((c) => c.leaf === leaf && c.register === register);

describe("CPUID normalization", () => {
  test("leaf 1: APIC id, logical count, HTT, hypervisor bit", () => {
    const { entries, changes } = vcpuCpuid(supported(), { cpuIndex: 2, cpuCount: 4, profile: "default" });
    const l1 = find(entries, 1);
    expect(l1.ebx >>> 24).toBe(2);
    expect((l1.ebx >>> 16) & 0xff).toBe(4);
    expect(l1.ebx & 0xffff).toBe(0x0800); // CLFLUSH and brand index untouched
    expect((l1.edx >>> 28) & 1).toBe(1);
    expect(l1.ecx >>> 31).toBe(1);
    expect(l1.eax).toBe(0x000906ea);
    const ebx = changed(changes, 1, "ebx");
    expect(ebx.map((c) => c.why)).toEqual(["initial APIC ID = vCPU index 2", "logical processors in the package = 4 vCPUs"]);
    expect(ebx[0]!.before).toBe(0x11200800);
    expect(ebx[1]!.after).toBe(0x02040800);
  });

  test("one vCPU: no HTT", () => {
    const { entries } = vcpuCpuid(supported(), { cpuIndex: 0, cpuCount: 1, profile: "default" });
    expect((find(entries, 1).edx >>> 28) & 1).toBe(0);
    expect(find(entries, 1).ebx >>> 16).toBe(0x0001);
  });

  test("leaf 4: L1/L2 per core, L3 per package, core count", () => {
    const { entries } = vcpuCpuid(supported(), { cpuIndex: 1, cpuCount: 4, profile: "default" });
    const sharing = (i: number) => ((find(entries, 4, i).eax >>> 14) & 0xfff) + 1;
    const cores = (i: number) => (find(entries, 4, i).eax >>> 26) + 1;
    expect([sharing(0), sharing(1), sharing(2), sharing(3)]).toEqual([1, 1, 1, 4]);
    expect([cores(0), cores(3)]).toEqual([4, 4]);
    expect(find(entries, 4, 0).eax & 0x3fff).toBe(0x0121); // type and level kept
    expect(find(entries, 4, 4).eax).toBe(0); // the terminator stays
  });

  test("leaves 0xB and 0x1F: x2APIC topology for this vCPU", () => {
    const { entries } = vcpuCpuid(supported(), { cpuIndex: 5, cpuCount: 6, profile: "default" });
    for (const leaf of [0xb, 0x1f]) {
      const subs = entries.filter((x) => x.function === leaf);
      expect(subs.map((s) => [s.index, s.eax, s.ebx, s.ecx, s.edx])).toEqual([
        [0, 0, 1, 0x100, 5], // SMT level: 1 thread per core
        [1, 3, 6, 0x201, 5], // core level: 6 cores need 3 bits of APIC id
        [2, 0, 0, 0x002, 5], // invalid level ends the list
      ]);
      for (const s of subs) expect(s.flags & IDX).toBe(IDX);
    }
  });

  test("SMT (Firecracker's smt: true): two threads per core in leaves 4, 0xB and AMD's 0x8000_001E", () => {
    const amd = [...supported(), e(0x8000001e, 0, 0, 0x100, 0, 0)];
    const { entries } = vcpuCpuid(amd, { cpuIndex: 5, cpuCount: 6, profile: "default", threadsPerCore: 2 });
    expect(entries.filter((x) => x.function === 0xb).map((s) => [s.index, s.eax, s.ebx, s.ecx, s.edx])).toEqual([
      [0, 1, 2, 0x100, 5], // SMT level: 2 threads, 1 bit of APIC id
      [1, 3, 6, 0x201, 5], // core level: 3 cores of 2 threads need 1 + 2 bits
      [2, 0, 0, 0x002, 5],
    ]);
    const sharing = (i: number) => ((find(entries, 4, i).eax >>> 14) & 0xfff) + 1;
    expect([sharing(0), sharing(2), sharing(3)]).toEqual([2, 2, 6]);
    expect((find(entries, 4, 0).eax >>> 26) + 1).toBe(3);
    const ext = find(entries, 0x8000001e);
    expect([ext.eax, (ext.ebx >>> 8) & 0xff, ext.ebx & 0xff]).toEqual([5, 1, 2]); // thread 1 of core 2
    expect(() => vcpuCpuid(amd, { cpuIndex: 0, cpuCount: 3, profile: "default", threadsPerCore: 2 })).toThrow("cannot be cores of 2 threads");
    // One vCPU with SMT is just one vCPU.
    expect(find(vcpuCpuid(amd, { cpuIndex: 0, cpuCount: 1, profile: "default", threadsPerCore: 2 }).entries, 0xb).eax).toBe(0);
  });

  test("leaf 0x1F is not invented when KVM does not offer it", () => {
    const noV2 = supported().filter((x) => x.function !== 0x1f);
    const { entries } = vcpuCpuid(noV2, { cpuIndex: 0, cpuCount: 2, profile: "default" });
    expect(entries.some((x) => x.function === 0x1f)).toBe(false);
  });

  test("KVM signature is set, and restored if missing", () => {
    const withoutSig = supported().filter((x) => x.function !== KVM_CPUID_SIGNATURE);
    const { entries, changes } = vcpuCpuid(withoutSig, { cpuIndex: 0, cpuCount: 1, profile: "default" });
    const sig = find(entries, KVM_CPUID_SIGNATURE);
    const bytes = new Uint8Array(new Uint32Array([sig.ebx, sig.ecx, sig.edx]).buffer);
    expect(new TextDecoder().decode(bytes)).toBe("KVMKVMKVM\0\0\0");
    expect(sig.eax).toBe(KVM_CPUID_FEATURES);
    expect(changed(changes, KVM_CPUID_SIGNATURE, "ebx").length).toBe(1);
  });

  test("the input list is not modified", () => {
    const input = supported();
    const copy = structuredClone(input);
    vcpuCpuid(input, { cpuIndex: 1, cpuCount: 2, profile: "emulated-host" });
    expect(input).toEqual(copy);
  });

  test("bad vCPU numbers are refused", () => {
    expect(() => vcpuCpuid(supported(), { cpuIndex: 2, cpuCount: 2, profile: "default" })).toThrow("vCPU index 2 is not in 0..1");
    expect(() => vcpuCpuid(supported(), { cpuIndex: 0, cpuCount: 0, profile: "default" })).toThrow("vCPU count 0");
  });
});

describe("cpuid profiles", () => {
  test("default passes the host's features through", () => {
    const { entries, changes, cmdline } = vcpuCpuid(supported(), { cpuIndex: 0, cpuCount: 1, profile: "default" });
    expect(find(entries, KVM_CPUID_FEATURES).eax).toBe(0x010000f9);
    expect(find(entries, 7).ebx).toBe(0x029c6fbf);
    expect(find(entries, 0x80000008).ebx).toBe(0);
    expect(cmdline).toEqual([]);
    expect(changes.some((c) => c.why.startsWith("emulated-host"))).toBe(false);
  });

  test("emulated-host: no KVM paravirt features, XSAVEERPTR, command-line additions", () => {
    const { entries, changes, cmdline } = vcpuCpuid(supported(), { cpuIndex: 0, cpuCount: 2, profile: "emulated-host" });
    expect(find(entries, KVM_CPUID_FEATURES).eax).toBe(0);
    expect(find(entries, 0x80000008).ebx).toBe(1 << 2);
    // Leaves 1, 7 and 0xD are left to the command line on this host.
    expect(find(entries, 7).ebx).toBe(0x029c6fbf);
    expect(cmdline.map((c) => c.arg)).toEqual(["noxsave", "clearcpuid=smap,smep,popcnt,pku,umip,cx16,ssse3,sse4_1,sse4_2,aes,pclmulqdq,sha_ni", `GLIBC_TUNABLES=${GLIBC_NO_AVX}`]);

    const pv = changed(changes, KVM_CPUID_FEATURES, "eax");
    expect(pv.length).toBe(1);
    expect(pv[0]).toMatchObject({ subleaf: 0, before: 0x010000f9, after: 0 });
    expect(pv[0]!.why).toContain("KVM_FEATURE_CLOCKSOURCE,");
    expect(pv[0]!.why).toContain("KVM_FEATURE_PV_UNHALT");
    expect(pv[0]!.why).toContain("KVM_FEATURE_CLOCKSOURCE_STABLE_BIT");
    expect(pv[0]!.why).not.toContain("KVM_FEATURE_NOP_IO_DELAY");
    const xs = changed(changes, 0x80000008, "ebx");
    expect(xs).toEqual([{ leaf: 0x80000008, subleaf: 0, register: "ebx", before: 0, after: 4, why: expect.stringContaining("XSAVEERPTR") }]);
  });

  test("--explain lines", () => {
    const { changes } = vcpuCpuid(supported(), { cpuIndex: 0, cpuCount: 2, profile: "emulated-host" });
    const line = formatCpuidChange(changed(changes, 0x80000008, "ebx")[0]!);
    expect(line).toStartWith("leaf 0x80000008.0 ebx 0x00000000 -> 0x00000004  emulated-host: XSAVEERPTR");
  });

  test("template names", () => {
    expect(parseCpuidProfile("emulated-host")).toBe("emulated-host");
    expect(() => parseCpuidProfile("T2")).toThrow('unknown cpuid profile "T2"; known profiles: default, emulated-host');
  });
});
