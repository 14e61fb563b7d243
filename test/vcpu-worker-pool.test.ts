// vCPU worker threads are reused between VMs of one process (src/vcpu/worker-pool.ts), idle ones do not
// keep the process alive, and a VM's fd is closed off the main thread (KVM destroys the VM inside that
// close: VmFd.closeOffThread), so the main thread stays free while a VM is torn down.

import { describe, expect } from "bun:test";
import { bootProbe } from "../src/boot/probe.ts";
import { BOOT_TIMER_SIZE, BOOT_TIMER_START } from "../src/arch/x86_64/layout.ts";
import { BootTimer, bootTimerStart } from "../src/devices/boot-timer.ts";
import { vcpuWorkerCounts } from "../src/vcpu/worker-pool.ts";
import { VmFd } from "../src/kvm/vm-fd.ts";
import { kvmTest } from "./support/kvm.ts";

/** Boot the first-write probe to its boot-timer write, then stop it. */
async function oneVm(): Promise<void> {
  let wrote!: () => void;
  const written = new Promise<void>((r) => (wrote = r));
  const timer = new BootTimer(bootTimerStart(), () => wrote());
  const vm = await bootProbe("first-write", { beforeStart: (v) => v.mmio.register(BOOT_TIMER_START, BOOT_TIMER_SIZE, timer) });
  await Promise.race([written, vm.exited]);
  expect(timer.bootComplete).toBeDefined();
  await vm.stop("test");
}

describe("vCPU worker pool", () => {
  kvmTest("VMs made one after another reuse one worker thread; idle ones stay within the limit", async () => {
    await oneVm();
    const after1 = vcpuWorkerCounts();
    for (let i = 0; i < 4; i++) await oneVm();
    const after5 = vcpuWorkerCounts();
    expect(after5.started).toBe(after1.started); // no new thread for the next four VMs
    expect(after5.idle).toBeGreaterThanOrEqual(1);
    expect(after5.idle).toBeLessThanOrEqual(after5.maxIdle);
    // Many at once: each VM gets a thread of its own; afterwards at most maxIdle stay.
    await Promise.all(Array.from({ length: after5.maxIdle + 2 }, () => oneVm()));
    expect(vcpuWorkerCounts().idle).toBeLessThanOrEqual(after5.maxIdle);
  });

  kvmTest("a process whose VMs have ended exits by itself: idle workers do not hold it", async () => {
    const script = `
      import { bootProbe } from "${import.meta.dir}/../src/boot/probe.ts";
      const vm = await bootProbe("longmode");
      await vm.exited;
      console.log("ended");
    `;
    const p = Bun.spawn([process.execPath, "-e", script], { stdout: "pipe", stderr: "pipe" });
    const timer = setTimeout(() => p.kill("SIGKILL"), 10_000);
    const [out, code] = await Promise.all([new Response(p.stdout).text(), p.exited]);
    clearTimeout(timer);
    expect(out).toBe("ended\n");
    expect(code).toBe(0);
  });

  kvmTest("the VM fd is closed off the main thread: the synchronous close is never called", async () => {
    const syncClose = VmFd.prototype.close;
    let syncCloses = 0;
    VmFd.prototype.close = function (this: VmFd) {
      syncCloses++;
      return syncClose.call(this);
    };
    try {
      await oneVm();
    } finally {
      VmFd.prototype.close = syncClose;
    }
    expect(syncCloses).toBe(0);
  });
});
