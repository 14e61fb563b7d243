// Time the parts of creating and starting a VM without changing kindling: wrap the methods of the KVM
// wrapper classes (and the Worker constructor) that Vm and bootProbe() call, and add up the time spent in
// each, by label. What is not inside a wrapped call is plain JavaScript work (page tables, GDT, devices,
// guest RAM mmap, the probe image lookup). Labels that start with OF_WHICH are parts of another label's
// time: leave them out of sums. Used by the breakdown children only, never by a timed run.

import { Kvm } from "../../src/kvm/system.ts";
import { VmFd } from "../../src/kvm/vm-fd.ts";
import { VcpuFd } from "../../src/kvm/vcpu-fd.ts";
import { VcpuThread } from "../../src/vcpu/thread.ts";
import { Vm } from "../../src/vm.ts";

export type PartTimes = Map<string, number>;

export const OF_WHICH = "  of which: ";

function wrap(times: PartTimes, proto: object, method: string, label: string): void {
  const p = proto as Record<string, (...a: unknown[]) => unknown>;
  const original = p[method];
  if (typeof original !== "function") throw new Error(`instrument: no method ${method} to time`);
  const add = (s: number) => times.set(label, (times.get(label) ?? 0) + performance.now() - s);
  p[method] = function (this: unknown, ...args: unknown[]) {
    const s = performance.now();
    let r: unknown;
    try {
      r = original.apply(this, args);
    } catch (e) {
      add(s);
      throw e;
    }
    if (r instanceof Promise) return r.finally(() => add(s));
    add(s);
    return r;
  };
}

/** Install the wrappers (once per process); returns the running totals, which the caller may clear. */
export function instrumentVmCreation(): PartTimes {
  const times: PartTimes = new Map();
  wrap(times, Kvm.prototype, "createVm", "KVM_CREATE_VM");
  wrap(times, Kvm.prototype, "supportedCpuid", "KVM_GET_SUPPORTED_CPUID");
  wrap(times, VmFd.prototype, "setTssAddr", "KVM_SET_TSS_ADDR");
  wrap(times, VmFd.prototype, "createIrqchip", "KVM_CREATE_IRQCHIP");
  wrap(times, VmFd.prototype, "createPit2", "KVM_CREATE_PIT2");
  wrap(times, VmFd.prototype, "setUserMemoryRegion", "KVM_SET_USER_MEMORY_REGION");
  wrap(times, VmFd.prototype, "irqfd", "KVM_IRQFD");
  wrap(times, VmFd.prototype, "createVcpu", "KVM_CREATE_VCPU + mmap of kvm_run");
  wrap(times, VcpuFd.prototype, "setCpuid", "KVM_SET_CPUID2");
  wrap(times, VcpuFd.prototype, "setMsrs", "KVM_SET_MSRS");
  wrap(times, VcpuFd.prototype, "setSregs", "KVM_SET_SREGS");
  for (const m of ["setLapic", "getLapic", "getSregs", "setRegs", "getRegs", "setFpu", "getFpu"]) {
    wrap(times, VcpuFd.prototype, m, "other vCPU state ioctls (LAPIC, REGS, FPU, GET_SREGS)");
  }
  wrap(times, VcpuThread.prototype, "start", "vCPU worker start: thread up, worker.ts loaded, first KVM_RUN");
  // Tearing down: the vCPU worker is told to stop and terminated, then Vm closes fds and unmaps guest RAM.
  wrap(times, VcpuThread.prototype, "stop", "destroy: vCPU worker stops and is terminated");
  wrap(times, Vm.prototype, "close", "destroy: close KVM and event fds, unmap guest RAM, await the VM fd's close");
  wrap(times, VmFd.prototype, "close", `${OF_WHICH}close the VM fd on the main thread (KVM destroys the VM)`);
  wrap(times, VmFd.prototype, "closeOffThread", `${OF_WHICH}close the VM fd on a pool thread (KVM destroys the VM; main thread free meanwhile)`);
  wrap(times, VcpuFd.prototype, "close", `${OF_WHICH}close the vCPU fd and unmap kvm_run`);
  const RealWorker = globalThis.Worker;
  globalThis.Worker = class extends RealWorker {
    constructor(...args: ConstructorParameters<typeof Worker>) {
      const s = performance.now();
      super(...args);
      times.set("new Worker()", (times.get("new Worker()") ?? 0) + performance.now() - s);
    }
  };
  return times;
}
