// CPU templates, SMT and the balloon through bootLinux on a real VM, set up but not started (no guest code
// runs): a static template meets Firecracker's host check, a custom one changes an extended leaf and is
// recorded with its name, SMT shapes the topology leaves, and the balloon gets its MMIO window.

import { describe, expect } from "bun:test";
import { bootLinux, type BootedLinux, type LinuxBootOptions } from "../src/boot/linux.ts";
import { MiB } from "../src/arch/x86_64/layout.ts";
import { hostCpuOf, staticCpuTemplate, STATIC_CPU_TEMPLATES } from "../src/arch/x86_64/cpu-templates.ts";
import { Kvm } from "../src/kvm/system.ts";
import { buildGuest, guestArtifactsIfBuilt } from "../guest/build.ts";
import { kvmTest } from "./support/kvm.ts";

async function setUp(extra: Partial<LinuxBootOptions>): Promise<BootedLinux> {
  const g = guestArtifactsIfBuilt() ?? (await buildGuest({ log: () => {} }));
  return bootLinux({ kernel: g.vmlinux, memSize: 128 * MiB, start: false, ...extra });
}

describe("CPU templates at boot", () => {
  kvmTest("each static template is applied, or refused with Firecracker's reason for this host's CPU", async () => {
    const kvm = new Kvm();
    const host = hostCpuOf(kvm.supportedCpuid());
    kvm.close();
    for (const name of STATIC_CPU_TEMPLATES) {
      let refusal: string | undefined;
      try {
        staticCpuTemplate(name, host);
      } catch (e) {
        refusal = (e as Error).message;
      }
      const booting = setUp({ cpuTemplate: name });
      if (refusal) await expect(booting).rejects.toThrow(refusal);
      else {
        // On a host the template was made for it applies, or (emulating host) is refused naming the leaf.
        try {
          const { vm, plan } = await booting;
          expect(plan.cpuidChanges.some((c) => c.why === `CPU template ${name}`)).toBe(true);
          await vm.stop();
        } catch (e) {
          expect((e as Error).message).toMatch(new RegExp(`CPU template ${name}: leaf 0x`));
        }
      }
    }
  }, 60_000);

  kvmTest("a custom template changes an extended leaf, recorded with its name; SMT and the balloon reach the VM", async () => {
    // Flip 0x8000_0001 ECX bit 8 (PREFETCHW / 3DNowPrefetch) from whatever KVM reports for this host.
    const kvm = new Kvm();
    const supported = kvm.supportedCpuid();
    kvm.close();
    const ecx = supported.find((e) => e.function === 0x80000001 && e.index === 0)!.ecx;
    const flipped = ~ecx & (1 << 8);
    const { vm, plan } = await setUp({
      vcpus: 2,
      smt: true,
      cpuTemplate: { custom: { cpuid_modifiers: [{ leaf: 0x80000001, subleaf: 0, flags: 0, modifiers: [{ register: "ecx", filter: 1 << 8, value: flipped }] }], msr_modifiers: [] } },
      balloon: { amountMib: 16, deflateOnOom: true, statsPollingIntervalS: 1 },
    });
    try {
      const mine = plan.cpuidChanges.filter((c) => c.why === "CPU template custom (cpu-config)");
      expect(mine.map((c) => [c.leaf, c.register, c.after & (1 << 8)])).toEqual([[0x80000001, "ecx", flipped]]);
      // SMT: the topology leaf 0xB says two threads per core, where KVM offers the leaf.
      if (supported.some((e) => e.function === 0xb)) {
        expect(plan.cpuidChanges.find((c) => c.leaf === 0xb && c.subleaf === 0 && c.register === "ebx")?.after).toBe(2);
      }
      expect(plan.devices.map((d) => d.name)).toContain("virtio-balloon");
    } finally {
      await vm.stop();
    }
  }, 60_000);
});
