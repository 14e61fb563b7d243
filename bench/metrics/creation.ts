// Metric 5: creation rate. For a fixed window, as many VMs as possible are created, booted to the probe's
// first write, and destroyed, with CONCURRENCY of them in flight at once (one per core by default):
//   kindling, one process:   bench/children/create-loop.ts (the first VM, which also loads code, is not counted);
//   kindling, one process per VM: `bun first-write.js` (children/first-write.ts bundled), run to its exit;
//   QEMU, one process per VM: the first-write PVH ELF, run to its exit (-no-reboot).
// VMs/s = VMs completed / time from the window's start to the last completion. A new VM starts only while
// the window is open, so the last ones may finish a little after it.
// Breakdown: `create-loop.ts --breakdown` then makes VMs one at a time with lib/instrument.ts timing each
// KVM call, the vCPU worker's start and stop, and the teardown; medians per VM.

import { availableParallelism } from "node:os";
import { join } from "node:path";
import { timedSpawn } from "../lib/timed-spawn.ts";
import { round, summarize, type Summary } from "../lib/stats.ts";
import { qemuCommand } from "../qemu/command.ts";
import { MiB } from "../../src/arch/x86_64/layout.ts";
import { bundledChildren } from "../lib/bundled-children.ts";

const LOOP = join(import.meta.dir, "../children/create-loop.ts");

export interface Rate {
  vms: number;
  seconds: number;
  perSecond: number;
}

export interface CreationResult {
  windowSeconds: number;
  concurrency: number;
  kindlingInProcess: Rate & { phasesMs: { create: Summary; firstWrite: Summary; destroy: Summary } };
  /** Median milliseconds per VM of each part, VMs made one at a time in one process. */
  breakdown: { count: number; medianMs: Record<string, number> };
  kindlingProcesses: Rate;
  qemuProcesses?: Rate;
}

async function processRate(cmd: string[], signal: RegExp, seconds: number, concurrency: number): Promise<Rate> {
  const start = performance.now();
  const deadline = start + seconds * 1000;
  let vms = 0;
  let last = start;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < deadline) {
        const r = await timedSpawn(cmd, { signal, timeoutMs: 30_000 });
        if (r.signalMs === undefined || r.exitCode !== 0) throw new Error(`${cmd[0]} ${cmd[1]}: failed (exit ${r.exitCode})\n${r.stderr}`);
        vms++;
        last = performance.now();
      }
    }),
  );
  const s = (last - start) / 1000;
  return { vms, seconds: round(s), perSecond: round(vms / s) };
}

export async function creation(opts: { seconds: number; breakdownCount: number; concurrency?: number; qemuElf?: string; qemuCpu?: string; log: (s: string) => void }): Promise<CreationResult> {
  const concurrency = opts.concurrency ?? availableParallelism();
  const r = await timedSpawn([process.execPath, LOOP, String(opts.seconds), String(concurrency)], { signal: /^\{.*\}\n/m, timeoutMs: (opts.seconds + 60) * 1000 });
  if (r.exitCode !== 0 || r.signalMs === undefined) throw new Error(`create-loop failed (exit ${r.exitCode})\n${r.stderr}`);
  const loop = JSON.parse(r.stdout.split("\n")[0]!) as { done: number; ms: number; phases: Record<"create" | "firstWrite" | "destroy", number[]> };
  const kindlingInProcess = {
    vms: loop.done, seconds: round(loop.ms / 1000), perSecond: round(loop.done / (loop.ms / 1000)),
    phasesMs: {
      create: summarize(loop.phases.create, "ms"), firstWrite: summarize(loop.phases.firstWrite, "ms"), destroy: summarize(loop.phases.destroy, "ms"),
    },
  };
  const b = await timedSpawn([process.execPath, LOOP, "--breakdown", String(opts.breakdownCount)], { signal: /^\{.*\}\n/m, timeoutMs: 120_000 });
  if (b.exitCode !== 0 || b.signalMs === undefined) throw new Error(`create-loop --breakdown failed (exit ${b.exitCode})\n${b.stderr}`);
  const breakdown = JSON.parse(b.stdout.split("\n")[0]!) as CreationResult["breakdown"];
  const kindlingProcesses = await processRate([process.execPath, (await bundledChildren()).firstWrite], /^first-write /m, opts.seconds, concurrency);
  const qemuProcesses = opts.qemuElf
    ? await processRate(qemuCommand({ kernel: opts.qemuElf, memSize: 16 * MiB, cpu: opts.qemuCpu }), /!/, opts.seconds, concurrency)
    : undefined;
  opts.log(`creation: kindling ${kindlingInProcess.perSecond}/s in one process, ${kindlingProcesses.perSecond}/s as processes; QEMU ${qemuProcesses?.perSecond ?? "-"}/s`);
  return { windowSeconds: opts.seconds, concurrency, kindlingInProcess, breakdown, kindlingProcesses, qemuProcesses };
}
