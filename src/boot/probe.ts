// Boot a probe guest (guest/probes/): create a VM, copy the flat binary into RAM, set the first registers,
// start the vCPU. The caller waits on `vm.exited`.

import { PROBES } from "../../guest/probes/probes.ts";
import { probeBinary } from "../../guest/probes/build.ts";
import { setupLongMode, setupRealMode } from "../arch/x86_64/regs.ts";
import { setupMsrs } from "../arch/x86_64/msrs.ts";
import { setupLapic } from "../arch/x86_64/lapic.ts";
import { MiB } from "../arch/x86_64/layout.ts";
import { Vm, type VmOptions } from "../vm.ts";
import { hostEmulatesGuestKernel } from "../host.ts";

export interface ProbeBootOptions extends Partial<VmOptions> {
  /** General-purpose registers to set after the standard entry state (probes read parameters from them). */
  regs?: Record<string, number | bigint>;
  /** Called after the VM exists and before its vCPU starts: register test devices here. */
  beforeStart?: (vm: Vm) => void;
}

export async function bootProbe(name: string, opts: ProbeBootOptions = {}): Promise<Vm> {
  const spec = PROBES[name];
  if (!spec) throw new Error(`no probe guest named "${name}" (have: ${Object.keys(PROBES).join(", ")})`);
  const image = probeBinary(spec);
  // hello ends with HLT, which only reaches the VMM when no in-kernel irqchip handles it.
  // The syscall assist is on where the host needs it (as for Linux with the emulated-host template).
  const vm = new Vm({ memSize: 16 * MiB, irqchip: spec.mode !== "real", syscallAssist: hostEmulatesGuestKernel(), ...opts });
  try {
    vm.memory.write(spec.load, image);
    const vcpu = vm.vcpus[0]!.fd;
    if (spec.mode === "real") {
      setupRealMode(vcpu, spec.load);
    } else {
      // Long mode needs CPUID to report it (KVM checks EFER.LME against the guest's CPUID).
      vcpu.setCpuid(vm.kvm.supportedCpuid());
      setupMsrs(vcpu);
      setupLapic(vcpu);
      setupLongMode(vcpu, vm.memory, { entry: spec.load, user: true });
    }
    if (opts.regs) {
      const regs = vcpu.getRegs();
      regs.assign(opts.regs);
      vcpu.setRegs(regs);
    }
    opts.beforeStart?.(vm);
    await vm.start();
  } catch (e) {
    await vm.stop(`setup failed: ${(e as Error).message}`);
    throw e;
  }
  return vm;
}
