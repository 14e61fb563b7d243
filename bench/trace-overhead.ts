// What the exit trace costs: exits per second through the `exits` probe guest (EXIT_LOOPS port writes, then
// EXIT_LOOPS MMIO writes, from CPL3) with the trace off, with a tracer that drops every record (the cost of
// building records in the vCPU loop), and with `traceToFile` writing them (src/trace/writer.ts).
// Modes take turns run by run, so a drift in the host's speed falls on all of them alike. Where exits are
// slow and noisy (nested virtualization), the differences can drown in the noise, so the writer's own cost
// per record is also measured without a VM: the main-thread time the tracer and its batched writes take.
// Usage: bun bench/trace-overhead.ts [--runs N] [--json]

import { rmSync } from "node:fs";
import { Bus } from "../src/bus.ts";
import { GuestMemory } from "../src/memory.ts";
import { Serial } from "../src/devices/serial.ts";
import type { ExitRecord } from "../src/vcpu/vcpu.ts";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { bootProbe } from "../src/boot/probe.ts";
import { PAGE_SIZE, SCRATCH_MMIO_START, SCRATCH_PORT } from "../src/arch/x86_64/layout.ts";
import { EXIT_LOOPS } from "../guest/probes/probes.ts";
import { traceToFile, type TraceCloser } from "../src/trace/writer.ts";
import { Stopwatch } from "./exit-latency.ts";
import type { Vm } from "../src/vm.ts";

const MODES = ["off", "null tracer", "trace file"] as const;
type Mode = (typeof MODES)[number];

async function run(mode: Mode): Promise<{ pio: number; mmio: number }> {
  const pio = new Stopwatch("bench-pio", { mainThread: true }); // the trace turns the vCPU-thread path off anyway
  const mmio = new Stopwatch("bench-mmio", { mainThread: true });
  const file = join(tmpdir(), `kindling-trace-overhead-${process.pid}.jsonl`);
  let close: TraceCloser | undefined;
  const attach = (v: Vm) => {
    if (mode === "null tracer") for (const c of v.vcpus) c.tracer = () => {};
    if (mode === "trace file") close = traceToFile(v, file);
  };
  const vm = await bootProbe("exits", {
    beforeStart: (v) => {
      v.pio.register(SCRATCH_PORT, 4, pio);
      v.mmio.register(SCRATCH_MMIO_START, PAGE_SIZE, mmio);
      attach(v);
    },
  });
  const exit = await vm.exited;
  if (close) await close();
  rmSync(file, { force: true });
  if (exit.reason !== "reset") throw new Error(`exits probe ended with ${exit.reason}: ${exit.message}`);
  if (pio.count !== EXIT_LOOPS || mmio.count !== EXIT_LOOPS) throw new Error(`expected ${EXIT_LOOPS} exits of each kind, saw ${pio.count} PIO and ${mmio.count} MMIO`);
  return { pio: pio.exitsPerSecond, mmio: mmio.exitsPerSecond };
}

/** Microseconds of main-thread time per record that traceToFile adds, over `n` typical records. */
export async function writerCostUs(n = 1_000_000): Promise<number> {
  const vcpu = { tracer: undefined as ((r: ExitRecord) => void) | undefined, tracerEpoch: 0 };
  const serial = new Serial(() => {}, { gsi: 4, trigger: () => {} });
  const vm = { vcpus: [vcpu], pio: new Bus("pio"), mmio: new Bus("mmio"), virtio: [], memory: GuestMemory.plain([]), serial } as unknown as Vm;
  const file = join(tmpdir(), `kindling-trace-writer-${process.pid}.jsonl`);
  const close = traceToFile(vm, file);
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    vcpu.tracer!({ t: i * 0.05, vcpu: 0, reason: "KVM_EXIT_IO", addr: SCRATCH_PORT, size: 4, dir: "out", data: i, device: "bench-pio", register: "DATA", handleUs: 1.5 });
    // Let the event loop run now and then, as it does between real exits: batches are written from it.
    if (i % 1000 === 999) await new Promise((resolve) => setImmediate(resolve));
  }
  await close();
  const us = ((performance.now() - t0) * 1000) / n;
  rmSync(file, { force: true });
  return us;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

if (import.meta.main) {
  const runsArg = process.argv.indexOf("--runs");
  const runs = runsArg > 0 ? Number(process.argv[runsArg + 1]) : 3;
  if (!Number.isInteger(runs) || runs < 1) throw new Error("--runs: give a whole number of runs");
  const results = new Map<Mode, { pio: number[]; mmio: number[] }>(MODES.map((m) => [m, { pio: [], mmio: [] }]));
  for (let i = 0; i < runs; i++) {
    for (const mode of MODES) {
      const r = await run(mode);
      results.get(mode)!.pio.push(r.pio);
      results.get(mode)!.mmio.push(r.mmio);
    }
  }
  const writerUs = await writerCostUs();
  if (process.argv.includes("--json")) {
    console.log(JSON.stringify({ exitsPerRun: EXIT_LOOPS, runs, exitsPerSecond: Object.fromEntries(results), writerUsPerRecord: writerUs }, null, 1));
  } else {
    const off = results.get("off")!;
    const f = (x: number) => Math.round(x).toString().padStart(9);
    const rel = (x: number, base: number) => `${(((x - base) / base) * 100).toFixed(1).padStart(6)} %`;
    console.log(`exits per second (median of ${runs} runs, ${EXIT_LOOPS} exits of each kind per run)`);
    console.log(`mode          ${"PIO".padStart(9)} ${"vs off".padStart(8)} ${"MMIO".padStart(9)} ${"vs off".padStart(8)}`);
    for (const [mode, r] of results) {
      const [p, m] = [median(r.pio), median(r.mmio)];
      console.log(`${mode.padEnd(13)} ${f(p)} ${rel(p, median(off.pio))} ${f(m)} ${rel(m, median(off.mmio))}`);
    }
    console.log(`the trace writer alone: ${writerUs.toFixed(2)} µs of main-thread time per record (no VM)`);
  }
}
