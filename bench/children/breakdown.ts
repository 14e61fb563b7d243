// Where the start-to-first-instruction time goes, measured in a fresh process like the timed child
// (children/first-write.ts), but with a clock read between steps and the KVM calls inside bootProbe()
// timed by lib/instrument.ts. Prints one JSON line: { phases: [[name, ms], ...] } in the order they happen.
//
// Usage: bun bench/children/breakdown.ts
//
// The imports are dynamic so that the time to load kindling's modules can be measured from the inside.
// No top-level await, so that it can be bundled to bytecode like first-write.ts (scripts/bundle.ts); in a
// bundle the "load modules" laps are the bundled modules' evaluation.

export {};

const runtimeStart = performance.now(); // Bun counts performance.now() from process start
const phases: [string, number][] = [["Bun runtime start (exec to the script's first line)", runtimeStart]];
let last = runtimeStart;
const lap = (name: string) => {
  const now = performance.now();
  phases.push([name, now - last]);
  last = now;
};

async function main(): Promise<void> {
  // Module loading, in dependency order, so that each lap is one module and what it alone pulls in.
  await import("../../src/kvm/struct.ts");
  await import("../../src/kvm/uapi.ts");
  lap("load modules: src/kvm/struct.ts + uapi.ts (every KVM struct's layout computed at load)");
  await import("../../src/kvm/libc.ts");
  lap("load modules: src/kvm/libc.ts (bun:ffi dlopen of libc, its symbols bound)");
  const { bootProbe } = await import("../../src/boot/probe.ts");
  const { BOOT_TIMER_SIZE, BOOT_TIMER_START, MiB } = await import("../../src/arch/x86_64/layout.ts");
  const { BootTimer, bootTimerStart } = await import("../../src/devices/boot-timer.ts");
  const { PROBES } = await import("../../guest/probes/probes.ts");
  const { probeBinary } = await import("../../guest/probes/build.ts");
  const { writeBootTables } = await import("../../src/arch/x86_64/regs.ts");
  const { writeIdentityPageTables } = await import("../../src/arch/x86_64/paging.ts");
  const { GuestMemory } = await import("../../src/memory.ts");
  lap("load modules: the rest of bootProbe()'s graph (~30 files: VM, vCPU, devices, virtio, loader)");
  const { instrumentVmCreation, OF_WHICH } = await import("../lib/instrument.ts");
  const parts = instrumentVmCreation();
  const scratch = GuestMemory.plain([{ gpa: 0, size: 16 * MiB }]);
  last = performance.now(); // loading the instrumentation is not kindling's cost

  // Two JavaScript steps of bootProbe(), timed alone first (cold, as bootProbe would meet them); inside
  // bootProbe() they then run warm, and count in "the rest".
  probeBinary(PROBES["first-write"]!);
  lap("probe image lookup: find the cached binary (bundled: by the hash the bundle was built with; from source: the sources hashed first) (alone, cold)");
  writeBootTables(scratch);
  writeIdentityPageTables(scratch, { user: true });
  lap("GDT, TSS and identity page tables written into guest RAM (alone, cold)");

  let firstWrite = 0;
  const timer = new BootTimer(bootTimerStart(), () => (firstWrite = performance.now()));
  const vm = await bootProbe("first-write", { beforeStart: (v) => v.mmio.register(BOOT_TIMER_START, BOOT_TIMER_SIZE, timer) });
  const booted = performance.now();
  let inside = 0;
  for (const [label, ms] of parts) {
    if (label.startsWith(OF_WHICH) || label.startsWith("destroy:")) continue; // nothing is destroyed before the first write
    phases.push([`bootProbe: ${label}`, ms]);
    inside += ms;
  }
  phases.push(["bootProbe: the rest (JavaScript: guest RAM mmap, buses, devices, and the two steps above again, warm)", booted - last - inside]);
  const exit = await vm.exited;
  if (!firstWrite || exit.reason !== "reset") throw new Error(`first-write probe: ${exit.reason} ${exit.message}`);
  // The write is often handled before bootProbe()'s promise has resumed this code: then this is 0.
  phases.push(["guest runs to its first write; the exit reaches the main thread", Math.max(0, firstWrite - booted)]);
  process.stdout.write(`${JSON.stringify({ phases: phases.map(([n, ms]) => [n, Number(ms.toFixed(3))]) })}\n`);
}

main().catch((e: Error) => {
  process.stderr.write(`breakdown: ${e.stack ?? e.message}\n`);
  process.exit(1);
});
