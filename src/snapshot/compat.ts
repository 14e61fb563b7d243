// Host facts a snapshot records, and the check that a restoring host can stand in for the one that made it.
// Firecracker's rules, roughly: the same CPU vendor (CPUID and MSR meanings differ between vendors), every
// saved MSR known to this host's KVM (KVM_SET_MSRS would refuse it), the same TSC frequency unless KVM can
// scale it (KVM_CAP_TSC_CONTROL), and XSAVE state only where KVM_GET/SET_XSAVE exist.

import { readFileSync } from "node:fs";
import { release } from "node:os";
import type { Kvm } from "../kvm/system.ts";
import { KVM_CAP_STATE } from "../kvm/uapi.ts";
import type { SnapshotState } from "./format.ts";
import { SnapshotError } from "./errors.ts";

export type HostFacts = SnapshotState["host"];

interface KvmFacts {
  vendor: string;
  signature: number;
  msrs: number[];
  msrSet: Set<number>;
  xsave: boolean;
}

/** What this host's KVM reports does not change while the process runs: asked once (~0.4 ms a restore). */
let cached: KvmFacts | undefined;

function kvmFacts(kvm: Kvm): KvmFacts {
  if (cached) return cached;
  const msrs = kvm.msrIndexList();
  return (cached = { ...vendor(kvm), msrs, msrSet: new Set(msrs), xsave: kvm.checkExtension(KVM_CAP_STATE.XSAVE) > 0 });
}

/** The CPU vendor string from CPUID leaf 0 (EBX, EDX, ECX: "GenuineIntel", "AuthenticAMD"). */
function vendor(kvm: Kvm): { vendor: string; signature: number } {
  const leaves = kvm.supportedCpuid();
  const l0 = leaves.find((e) => e.function === 0);
  const l1 = leaves.find((e) => e.function === 1);
  const bytes = new Uint8Array(12);
  const dv = new DataView(bytes.buffer);
  dv.setUint32(0, l0?.ebx ?? 0, true);
  dv.setUint32(4, l0?.edx ?? 0, true);
  dv.setUint32(8, l0?.ecx ?? 0, true);
  return { vendor: new TextDecoder().decode(bytes), signature: l1?.eax ?? 0 };
}

function modelName(): string {
  try {
    return /^model name\s*:\s*(.*)$/m.exec(readFileSync("/proc/cpuinfo", "utf8"))?.[1] ?? "unknown";
  } catch {
    return "unknown";
  }
}

export function hostFacts(kvm: Kvm, tscKhz: number | null): HostFacts {
  const v = kvmFacts(kvm);
  return {
    cpu_vendor: v.vendor,
    cpu_signature: v.signature,
    cpu_model_name: modelName(),
    msr_index_list: v.msrs,
    tsc_khz: tscKhz,
    xsave: kvm.checkExtension(KVM_CAP_STATE.XSAVE) > 0,
    kernel: release(),
  };
}

/** Throw SnapshotError(INCOMPATIBLE) naming the first fact this host cannot match. */
/** `tscKhz`: what KVM_GET_TSC_KHZ gives a new vCPU on this host. */
export function checkCompatible(state: SnapshotState, kvm: Kvm, tscKhz: number | null, path: string): void {
  const here = kvmFacts(kvm);
  const saved = state.host;
  const refuse = (why: string) => {
    throw new SnapshotError("INCOMPATIBLE", `${path} cannot be restored on this host: ${why}`);
  };
  if (saved.cpu_vendor !== here.vendor) refuse(`it was made on a ${saved.cpu_vendor} CPU, this host has ${here.vendor}`);
  for (const v of state.vcpus) {
    for (const [index] of v.msrs) if (!here.msrSet.has(index)) refuse(`MSR 0x${index.toString(16)} of vCPU ${v.id} is not one this host's KVM saves and restores`);
    if (v.xsave !== undefined && !here.xsave) refuse("it holds XSAVE state and this host's KVM has no KVM_CAP_XSAVE");
  }
  for (const v of state.vcpus) {
    if (v.tsc_khz !== null && tscKhz !== null && v.tsc_khz !== tscKhz && kvm.checkExtension(KVM_CAP_STATE.TSC_CONTROL) === 0) {
      refuse(`its guest TSC runs at ${v.tsc_khz} kHz, this host's at ${tscKhz} kHz, and KVM cannot scale it (no KVM_CAP_TSC_CONTROL)`);
    }
  }
}
