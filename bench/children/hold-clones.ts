// The process the clone-memory benchmark measures: it restores one snapshot N times (N independent VMs,
// each mapping the same memory file MAP_PRIVATE), lets every clone run until it has counted (so each has
// touched, and copied, the pages it writes), pauses them all, collects garbage, and prints
//   ready <JSON: guest RAM mappings [[hostAddr, size], ...]>
// then waits to be killed. The parent reads /proc/<pid>/smaps.
//
//   bun bench/children/hold-clones.ts STATE MEM N

import { writeSync } from "node:fs";
import { restoreSnapshot } from "../../src/snapshot/restore.ts";
import { SCRATCH_PORT } from "../../src/arch/x86_64/layout.ts";
import type { Vm } from "../../src/vm.ts";
import { exitWhenOrphaned } from "./orphan-guard.ts";

exitWhenOrphaned();
const [statePath, memPath, countArg] = process.argv.slice(2);
const count = Number(countArg);
const ram: [number, number][] = [];
const vms: Vm[] = [];
const counted: Promise<void>[] = [];
for (let i = 0; i < count; i++) {
  const ran = Promise.withResolvers<void>();
  counted.push(ran.promise);
  const { vm } = await restoreSnapshot({
    snapshotPath: statePath!,
    memFilePath: memPath!,
    resume: true,
    restoreDevices: (v) => v.pio.register(SCRATCH_PORT, 4, { name: "count", read: () => {}, write: () => ran.resolve() }),
  });
  for (const r of vm.memory.regions) ram.push([r.hostAddr!, r.bytes.byteLength]);
  vms.push(vm);
}
await Promise.all(counted);
for (const vm of vms) vm.pause();
Bun.gc(true);
await Bun.sleep(100);
writeSync(1, `ready ${JSON.stringify(ram)}\n`);
setInterval(() => {}, 1 << 30); // stay alive until killed
