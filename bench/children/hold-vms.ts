// The process the memory benchmark measures: it creates N of something, waits until they are all up,
// collects garbage, prints one line and then waits to be killed. The parent reads /proc/<pid>/smaps.
//
//   bun bench/children/hold-vms.ts vms N M       N running VMs (1 vCPU, M MiB, the irq probe spinning at CPL3)
//   bun bench/children/hold-vms.ts workers N M   N idle vCPU worker threads (src/vcpu/worker.ts loaded, no VM)
//   bun bench/children/hold-vms.ts kvm N M       N sets of KVM objects (VM, irqchip, PIT, an M MiB slot, a
//                                                vCPU with its kvm_run mapping), no worker thread, no devices
//
// The ready line is `ready <JSON list of guest RAM mappings: [[hostAddr, size], ...]>`, so the parent can
// leave exactly those mappings out.

import { writeSync } from "node:fs";
import { bootProbe } from "../../src/boot/probe.ts";
import { Kvm } from "../../src/kvm/system.ts";
import { allocateGuestMemory } from "../../src/memory.ts";
import { KVM_TSS_ADDRESS, MiB, ramRegions } from "../../src/arch/x86_64/layout.ts";
import { exitWhenOrphaned } from "./orphan-guard.ts";

exitWhenOrphaned();

const [mode, countArg, memArg] = process.argv.slice(2);
const count = Number(countArg);
const GUEST_MEM = Number(memArg) * MiB;
if (!["vms", "workers", "kvm"].includes(mode ?? "") || !Number.isInteger(count) || count < 0 || count > 64 || !(GUEST_MEM >= 16 * MiB)) {
  process.stderr.write("usage: bun bench/children/hold-vms.ts <vms|workers|kvm> <N, 0-64> <guest MiB, at least 16>\n");
  process.exit(2);
}

const ram: [number, number][] = [];
const keep: unknown[] = [];

if (mode === "vms") {
  const waiting: Promise<void>[] = [];
  for (let i = 0; i < count; i++) {
    let text = "";
    let seen!: () => void;
    waiting.push(new Promise((resolve) => (seen = resolve)));
    const vm = await bootProbe("irq", {
      memSize: GUEST_MEM,
      consoleOutput: (b) => {
        text += new TextDecoder().decode(b);
        if (text.includes("waiting for an interrupt")) seen();
      },
    });
    for (const r of vm.memory.regions) ram.push([r.hostAddr!, r.bytes.byteLength]);
    keep.push(vm);
  }
  await Promise.all(waiting); // every guest has reached its CPL3 spin loop
} else if (mode === "workers") {
  const url = new URL("../../src/vcpu/worker.ts", import.meta.url).href;
  const ready: Promise<void>[] = [];
  for (let i = 0; i < count; i++) {
    const w = new Worker(url);
    // worker.ts posts its thread id once loaded (and garbage-collected): wait for that message.
    ready.push(new Promise((resolve) => w.addEventListener("message", () => resolve(), { once: true })));
    keep.push(w);
  }
  await Promise.all(ready);
  await Bun.sleep(200);
} else {
  for (let i = 0; i < count; i++) {
    const kvm = new Kvm();
    const fd = kvm.createVm();
    fd.setTssAddr(KVM_TSS_ADDRESS);
    fd.createIrqchip();
    fd.createPit2();
    const mem = allocateGuestMemory(ramRegions(GUEST_MEM));
    mem.regions.forEach((r, slot) => fd.setUserMemoryRegion(slot, r.gpa, r.bytes.byteLength, r.hostAddr!));
    for (const r of mem.regions) ram.push([r.hostAddr!, r.bytes.byteLength]);
    keep.push(kvm, fd, mem, fd.createVcpu(0));
  }
}

Bun.gc(true);
await Bun.sleep(100);
// writeSync, not process.stdout: that would load Node's stream modules into the heap being measured.
writeSync(1, `ready ${JSON.stringify(ram)}\n`);
setInterval(() => {}, 1 << 30); // stay alive until killed
