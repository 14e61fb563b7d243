// The process the restore benchmark times: it restores a counter-probe snapshot (bench/metrics/restore.ts
// made it) with resume, and prints one line when the guest's first port write after the restore arrives:
//   first <ms since this process started> <ms from the restoreSnapshot() call> <JSON: restore's step timings>
// (restoreSnapshot's own steps, plus `firstExit`: from its return to the first write's handler)
// Then, in the same (now warm) process, it stops that VM and restores the snapshot `warm` more times, each
// timed the same way, and prints `warm <JSON: [{ms, timings}, ...]>`; then `warm` times more with a spare
// vCPU worker started (untimed) before each restore, as an idle `kindling api` has one, and prints
// `spare <JSON>`, and exits.
//
//   bun bench/children/restore.ts STATE MEM WARM      (the bench runs it compiled: scripts/bundle.ts --executable)

import { writeSync } from "node:fs";
import { restoreSnapshot, type Restored } from "../../src/snapshot/restore.ts";
import { SCRATCH_PORT } from "../../src/arch/x86_64/layout.ts";
import { prewarmVcpuWorkers } from "../../src/vcpu/thread.ts";
import { exitWhenOrphaned } from "./orphan-guard.ts";

exitWhenOrphaned();
const [statePath, memPath, warmArg] = process.argv.slice(2);

type Timings = Restored["timings"] & { firstExit: number };

/** Restore once; resolves with the time from the call to the guest's first port write. */
async function restoreOnce(): Promise<{ ms: number; timings: Timings; stop: () => Promise<unknown> }> {
  const first = Promise.withResolvers<number>();
  const t0 = performance.now();
  const r = await restoreSnapshot({
    snapshotPath: statePath!,
    memFilePath: memPath!,
    resume: true,
    restoreDevices: (vm) =>
      vm.pio.register(SCRATCH_PORT, 4, { name: "count", read: () => {}, write: () => first.resolve(performance.now()) }),
  });
  const returned = performance.now();
  const firstWrite = await first.promise;
  // After restoreSnapshot returned: the vCPU thread's wake-up, the guest's first KVM_RUN, its exit reaching
  // the main thread (0 when that exit was handled before restoreSnapshot's caller resumed).
  const firstExit = Math.max(0, firstWrite - returned);
  return { ms: firstWrite - t0, timings: { ...r.timings, firstExit }, stop: () => r.vm.stop() };
}

async function main(): Promise<void> {
  const cold = await restoreOnce();
  // performance.now() counts from this process's start (its time origin).
  writeSync(1, `first ${performance.now().toFixed(3)} ${cold.ms.toFixed(3)} ${JSON.stringify(cold.timings)}\n`);
  await cold.stop();
  const warm: { ms: number; timings: Timings }[] = [];
  for (let i = 0; i < Number(warmArg ?? 0); i++) {
    const r = await restoreOnce();
    warm.push({ ms: r.ms, timings: r.timings });
    await r.stop();
  }
  writeSync(1, `warm ${JSON.stringify(warm)}\n`);
  const spare: typeof warm = [];
  for (let i = 0; i < Number(warmArg ?? 0); i++) {
    await prewarmVcpuWorkers(1);
    await Bun.sleep(5);
    const r = await restoreOnce();
    spare.push({ ms: r.ms, timings: r.timings });
    await r.stop();
  }
  writeSync(1, `spare ${JSON.stringify(spare)}\n`);
  process.exit(0);
}

// No top-level await: the bench runs this compiled to bytecode (scripts/bundle.ts), which is CommonJS.
main().catch((e: Error) => {
  process.stderr.write(`restore: ${e.stack ?? e.message}\n`);
  process.exit(1);
});
