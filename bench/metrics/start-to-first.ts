// Metric 1: start to first guest instruction. From just before the parent spawns a process to the moment
// the guest's first write is known outside it:
//   kindling: bench/children/first-write.ts compiled to a standalone executable with bytecode (Bun's
//             runtime, the program and the vCPU worker in one file, as a program using kindling would
//             ship: scripts/bundle.ts --executable) boots the first-write probe through bootProbe() and
//             prints a line when the boot-timer device sees the guest's write of 123; the same child as a
//             bytecode bundle run with `bun first-write.js` (`kindlingBundled`), the executable built
//             with JIT policy 4 (`kindlingJit4`) and the child run from its TypeScript source
//             (`kindlingFromSource`) are measured too;
//   QEMU:     `qemu-system-x86_64 -M microvm -kernel first-write.elf` (the same probe as a PVH ELF) boots
//             through its qboot firmware; the probe's fifth instruction prints '!' on the serial port,
//             which is QEMU's stdout. QEMU has no boot-timer device: its write of 123 to BOOT_TIMER_START
//             is an unassigned-MMIO exit QEMU ignores.
// Runs alternate between the two so that load from elsewhere on the machine falls on both alike. CPU time
// is the child's user + system time until it exited (getrusage), so it includes tearing the VM down.
// A breakdown child (bench/children/breakdown.ts) times kindling's steps one by one.

import { join } from "node:path";
import { timedSpawn, type TimedRun } from "../lib/timed-spawn.ts";
import { summarize, type Summary } from "../lib/stats.ts";
import { qemuCommand } from "../qemu/command.ts";
import { MiB } from "../../src/arch/x86_64/layout.ts";
import { bundledChildren } from "../lib/bundled-children.ts";

const CHILD = join(import.meta.dir, "../children/first-write.ts");
const BREAKDOWN = join(import.meta.dir, "../children/breakdown.ts");

type KindlingStart = { wallMs: Summary; cpuMs: Summary; exitMs: Summary; inChildMs: Summary; inChildCpuMs: Summary };
type Phases = { runs: number; phases: { phase: string; medianMs: number }[] };
/** bootProbe()'s default guest RAM; QEMU gets the same. */
const PROBE_MEM = 16 * MiB;

export interface StartToFirstResult {
  runs: number;
  /** The child as a standalone executable. */
  kindling: KindlingStart;
  /** The same child bundled to bytecode, run with `bun` (the headline figure until 2026-11-30). */
  kindlingBundled?: KindlingStart;
  /** The executable built with JIT policy 4 (Bun's compile.jitPolicy): startup code stays interpreted longer. */
  kindlingJit4?: KindlingStart;
  /** The same child run from its TypeScript source (`bun bench/children/first-write.ts`). */
  kindlingFromSource?: KindlingStart;
  qemu?: { wallMs: Summary; cpuMs: Summary; exitMs: Summary; command: string[] };
  /** Median milliseconds of each step of kindling's start, from `breakdown` runs as an executable. */
  breakdown: Phases;
  /** The same, bundled and run with `bun`. */
  breakdownBundled?: Phases;
  /** The same from source, where each module-loading lap includes transpiling and parsing. */
  breakdownFromSource?: Phases;
}

function check(r: TimedRun, what: string): number {
  if (r.signalMs === undefined || r.exitCode !== 0) {
    throw new Error(`${what}: no signal (exit ${r.exitCode}${r.timedOut ? ", timed out" : ""})\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  }
  return r.signalMs;
}

function kindlingSamples() {
  return { wall: [] as number[], cpu: [] as number[], exit: [] as number[], inChild: [] as number[], inChildCpu: [] as number[] };
}

async function kindlingRun(cmd: string[], k: ReturnType<typeof kindlingSamples>): Promise<void> {
  const r = await timedSpawn(cmd, { signal: /^first-write .*\n/m, timeoutMs: 20_000 });
  k.wall.push(check(r, "kindling first-write"));
  k.cpu.push(r.cpuMs);
  k.exit.push(r.exitMs);
  const [, sinceStart, cpu] = r.stdout.split("\n")[0]!.split(" ");
  k.inChild.push(Number(sinceStart));
  k.inChildCpu.push(Number(cpu));
}

function kindlingSummary(k: ReturnType<typeof kindlingSamples>): KindlingStart {
  return {
    wallMs: summarize(k.wall, "ms"), cpuMs: summarize(k.cpu, "ms"), exitMs: summarize(k.exit, "ms"),
    inChildMs: summarize(k.inChild, "ms"), inChildCpuMs: summarize(k.inChildCpu, "ms"),
  };
}

async function breakdownRuns(cmd: string[], runs: number): Promise<Phases> {
  const phaseSamples = new Map<string, number[]>();
  for (let i = 0; i < runs; i++) {
    const r = await timedSpawn(cmd, { signal: /^\{.*\}\n/m, timeoutMs: 20_000 });
    check(r, "breakdown");
    const { phases } = JSON.parse(r.stdout.split("\n")[0]!) as { phases: [string, number][] };
    for (const [name, ms] of phases) phaseSamples.set(name, [...(phaseSamples.get(name) ?? []), ms]);
  }
  return { runs, phases: [...phaseSamples].map(([phase, xs]) => ({ phase, medianMs: summarize(xs, "ms").median })) };
}

export async function startToFirst(opts: { runs: number; breakdownRuns: number; qemuElf?: string; qemuCpu?: string; log: (s: string) => void }): Promise<StartToFirstResult> {
  const bundled = await bundledChildren();
  const k = kindlingSamples();
  const bun = kindlingSamples();
  const jit4 = kindlingSamples();
  const src = kindlingSamples();
  const q = { wall: [] as number[], cpu: [] as number[], exit: [] as number[] };
  const qcmd = opts.qemuElf ? qemuCommand({ kernel: opts.qemuElf, memSize: PROBE_MEM, cpu: opts.qemuCpu }) : undefined;
  for (let i = 0; i < opts.runs; i++) {
    await kindlingRun([bundled.firstWriteExe], k);
    await kindlingRun([process.execPath, bundled.firstWrite], bun);
    await kindlingRun([bundled.firstWriteExeJit4], jit4);
    await kindlingRun([process.execPath, CHILD], src);
    if (qcmd) {
      const s = await timedSpawn(qcmd, { signal: /!/, timeoutMs: 20_000 });
      q.wall.push(check(s, "QEMU first-write"));
      q.cpu.push(s.cpuMs);
      q.exit.push(s.exitMs);
    }
  }
  opts.log(`start to first instruction: kindling ${summarize(k.wall, "ms").median} ms (bundled, run with bun ${summarize(bun.wall, "ms").median} ms; JIT policy 4 ${summarize(jit4.wall, "ms").median} ms; from source ${summarize(src.wall, "ms").median} ms), QEMU ${qcmd ? summarize(q.wall, "ms").median : "-"} ms`);
  return {
    runs: opts.runs,
    kindling: kindlingSummary(k),
    kindlingBundled: kindlingSummary(bun),
    kindlingJit4: kindlingSummary(jit4),
    kindlingFromSource: kindlingSummary(src),
    qemu: qcmd ? { wallMs: summarize(q.wall, "ms"), cpuMs: summarize(q.cpu, "ms"), exitMs: summarize(q.exit, "ms"), command: qcmd } : undefined,
    breakdown: await breakdownRuns([bundled.breakdownExe], opts.breakdownRuns),
    breakdownBundled: await breakdownRuns([process.execPath, bundled.breakdown], opts.breakdownRuns),
    breakdownFromSource: await breakdownRuns([process.execPath, BREAKDOWN], opts.breakdownRuns),
  };
}
