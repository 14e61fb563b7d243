// Creation rate inside one process: for SECONDS, keep CONCURRENCY loops going, each of which creates a VM,
// boots the first-write probe to its boot-timer write, and destroys the VM (vm.stop(): vCPU thread ended,
// KVM fds closed, guest RAM unmapped). Prints one JSON line with the count and each VM's phase times.
//
// Usage: bun bench/children/create-loop.ts SECONDS CONCURRENCY
//        bun bench/children/create-loop.ts --breakdown COUNT
// With --breakdown, COUNT VMs go one after the other with lib/instrument.ts timing the parts of each, and
// the JSON line holds each part's median per VM instead (a separate run: the wrappers cost a little time).

import { bootProbe } from "../../src/boot/probe.ts";
import { BOOT_TIMER_SIZE, BOOT_TIMER_START } from "../../src/arch/x86_64/layout.ts";
import { BootTimer, bootTimerStart } from "../../src/devices/boot-timer.ts";
import { exitWhenOrphaned } from "./orphan-guard.ts";

exitWhenOrphaned();

const breakdown = process.argv[2] === "--breakdown";
const seconds = breakdown ? 0 : Number(process.argv[2]);
const concurrency = breakdown ? 1 : Number(process.argv[3]);
const breakdownCount = breakdown ? Number(process.argv[3]) : 0;
if (breakdown ? !(Number.isInteger(breakdownCount) && breakdownCount >= 1 && breakdownCount <= 200)
  : !(seconds > 0 && seconds <= 60) || !Number.isInteger(concurrency) || concurrency < 1 || concurrency > 16) {
  process.stderr.write("usage: bun bench/children/create-loop.ts <seconds, at most 60> <concurrency, 1-16>\n" +
    "       bun bench/children/create-loop.ts --breakdown <count, 1-200>\n");
  process.exit(2);
}

/** Milliseconds per VM: bootProbe() (create, load, set registers, start the vCPU), guest to first write, stop. */
const phases = { create: [] as number[], firstWrite: [] as number[], destroy: [] as number[] };

async function oneVm(): Promise<void> {
  const t0 = performance.now();
  let wrote!: () => void;
  const written = new Promise<void>((resolve) => (wrote = resolve));
  let t2 = 0;
  const timer = new BootTimer(bootTimerStart(), () => {
    t2 = performance.now();
    wrote();
  });
  const vm = await bootProbe("first-write", { beforeStart: (v) => v.mmio.register(BOOT_TIMER_START, BOOT_TIMER_SIZE, timer) });
  const t1 = performance.now();
  await Promise.race([written, vm.exited]);
  if (!t2) throw new Error(`first-write probe ended before its boot-timer write: ${(await vm.exited).message}`);
  const t3 = performance.now();
  await vm.stop("benchmark: created, booted, destroyed");
  phases.create.push(t1 - t0);
  // The write is often handled before bootProbe()'s promise has resumed this code: then this is 0.
  phases.firstWrite.push(Math.max(0, t2 - t1));
  phases.destroy.push(performance.now() - t3);
}

if (breakdown) {
  const { instrumentVmCreation, OF_WHICH } = await import("../lib/instrument.ts");
  const parts = instrumentVmCreation();
  await oneVm(); // warm-up, as below
  const perVm = new Map<string, number[]>();
  for (let i = 0; i < breakdownCount; i++) {
    parts.clear();
    const t0 = performance.now();
    await oneVm();
    const total = performance.now() - t0;
    let inside = 0;
    const add = (label: string, ms: number) => perVm.set(label, [...(perVm.get(label) ?? []), ms]);
    for (const [label, ms] of parts) {
      add(label, ms);
      if (!label.startsWith(OF_WHICH)) inside += ms;
    }
    add("the rest (JavaScript: devices, GDT, page tables, probe image lookup, promise hops)", total - inside);
    add("total per VM, one at a time", total);
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  process.stdout.write(`${JSON.stringify({ count: breakdownCount, medianMs: Object.fromEntries([...perVm].map(([k, xs]) => [k, Number(median(xs).toFixed(3))])) })}\n`);
  process.exit(0);
}

await oneVm(); // warm-up, not counted: the first VM also pays for loading code
for (const p of Object.values(phases)) p.length = 0;
const start = performance.now();
const deadline = start + seconds * 1000;
let done = 0;
let last = start;
await Promise.all(
  Array.from({ length: concurrency }, async () => {
    while (performance.now() < deadline) {
      await oneVm();
      done++;
      last = performance.now();
    }
  }),
);
process.stdout.write(`${JSON.stringify({ done, ms: last - start, phases })}\n`);
