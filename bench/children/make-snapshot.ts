// Make the snapshot the restore benchmarks restore: the counter probe in a 1-vCPU VM with M MiB of RAM,
// counted to 1000, paused, snapshotted (Full). Prints `snapshot <JSON: createSnapshot's result>`.
//
//   bun bench/children/make-snapshot.ts STATE MEM M

import { writeSync } from "node:fs";
import { bootProbe } from "../../src/boot/probe.ts";
import { createSnapshot } from "../../src/snapshot/create.ts";
import { MiB, SCRATCH_PORT } from "../../src/arch/x86_64/layout.ts";

const [statePath, memPath, memArg] = process.argv.slice(2);
const counted = Promise.withResolvers<void>();
const vm = await bootProbe("counter", {
  memSize: Number(memArg) * MiB,
  beforeStart: (v) =>
    v.pio.register(SCRATCH_PORT, 4, {
      name: "count",
      read: () => {},
      write: (_o, d) => new DataView(d.buffer, d.byteOffset, d.byteLength).getUint32(0, true) >= 1000 && counted.resolve(),
    }),
});
await counted.promise;
vm.pause();
const result = await createSnapshot(vm, { snapshotPath: statePath!, memFilePath: memPath!, kind: "counter" });
await vm.stop();
writeSync(1, `snapshot ${JSON.stringify(result)}\n`);
process.exit(0);
