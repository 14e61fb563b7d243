// A separate process that restores a counter-probe snapshot (test/snapshot.test.ts): it reports the
// registers the restored vCPU holds before it runs, then resumes it and reports the first counts the guest
// writes to SCRATCH_PORT. Usage: bun test/support/snapshot-child.ts STATE MEM [N]

import { restoreSnapshot } from "../../src/snapshot/restore.ts";
import { regsRecord } from "../../src/snapshot/create.ts";
import { SCRATCH_PORT } from "../../src/arch/x86_64/layout.ts";
import { SnapshotError } from "../../src/snapshot/errors.ts";

const [statePath, memPath, nArg] = process.argv.slice(2);
const want = Number(nArg ?? 5);
const counts: number[] = [];
const done = Promise.withResolvers<void>();
const t0 = performance.now();
let firstMs: number | undefined;
try {
  const { vm, timings } = await restoreSnapshot({
    snapshotPath: statePath!,
    memFilePath: memPath!,
    restoreDevices: (v) =>
      v.pio.register(SCRATCH_PORT, 4, {
        name: "count",
        read: () => {},
        write: (_o, d) => {
          firstMs ??= performance.now() - t0;
          counts.push(new DataView(d.buffer, d.byteOffset, d.byteLength).getUint32(0, true));
          if (counts.length === want) {
            vm.pause();
            done.resolve();
          }
        },
      }),
  });
  const regs = regsRecord(vm.vcpus[0]!.fd.getRegs().bytes);
  const paused = vm.paused !== undefined;
  vm.resume();
  const timer = setTimeout(() => done.reject(new Error("no counts within 10 s")), 10_000);
  await done.promise;
  clearTimeout(timer);
  await vm.stop();
  console.log(JSON.stringify({ ok: true, pid: process.pid, paused, regs, counts, firstMs, timings }));
} catch (e) {
  // `counts`: what the guest wrote before the failure; a refusal before anything ran leaves it empty.
  console.log(JSON.stringify({ ok: false, code: e instanceof SnapshotError ? e.code : "OTHER", message: (e as Error).message, counts }));
}
