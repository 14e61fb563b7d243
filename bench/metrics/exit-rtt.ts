// Metric 4: exit round trip. The exits probe makes EXIT_LOOPS 4-byte port writes to SCRATCH_PORT, then
// EXIT_LOOPS 4-byte MMIO stores to SCRATCH_MMIO_START, at CPL3 (native speed even where guest kernel code
// is emulated); every one is a VM exit the VMM completes before the guest goes on.
//   kindling: measureExitLatency() from bench/exit-latency.ts: two do-nothing devices note the time of the
//             first and the last access; µs per exit = (last - first) / (count - 1). They are completed on
//             the vCPU's own thread (src/vcpu/local.ts), as QEMU completes these exits on its vCPU thread;
//             the same devices handed to the main thread are measured too (`kindlingMainThread`).
//   QEMU:     QEMU gives no hook inside its exit path, so the whole loop is timed from outside. The probe,
//             linked as a PVH ELF behind pvh-long.S (64-bit mode, CPL3, like kindling's setup), prints a
//             marker byte just before it drops to CPL3; the time from that byte on QEMU's stdout to QEMU's
//             exit is measured three ways: entering at `user` (both loops), at the MMIO loop, and at `reset`
//             (no loop: the baseline, which is reset and QEMU's teardown). Then
//               PIO  = (T(both) - T(mmio)) / EXIT_LOOPS,   MMIO = (T(mmio) - T(none)) / EXIT_LOOPS.
//             On microvm, port 0x510 is QEMU's fw_cfg selector (a write selects an entry: no real work)
//             and SCRATCH_MMIO_START is unassigned, so both exits go to QEMU's vCPU thread and straight back.

import { measureExitLatency } from "../exit-latency.ts";
import { EXIT_LOOPS } from "../../guest/probes/probes.ts";
import { summarize, type Summary } from "../lib/stats.ts";
import { timedSpawn } from "../lib/timed-spawn.ts";
import { qemuCommand } from "../qemu/command.ts";
import { PVH_MARKER, type PvhProbes } from "../qemu/pvh.ts";
import { MiB } from "../../src/arch/x86_64/layout.ts";

export interface ExitRttResult {
  exitsPerKind: number;
  kindling: { pioUs: Summary; mmioUs: Summary };
  /** Every exit handed to the main thread and back (the path devices with no VcpuThreadModel take). */
  kindlingMainThread: { pioUs: Summary; mmioUs: Summary };
  qemu?: { pioUs: Summary; mmioUs: Summary; loopMs: Record<"both" | "mmio" | "none", Summary> };
}

async function qemuLoopMs(elf: string, cpu?: string): Promise<number> {
  const r = await timedSpawn(qemuCommand({ kernel: elf, memSize: 16 * MiB, cpu }), { signal: new RegExp(PVH_MARKER), timeoutMs: 120_000 });
  if (r.signalMs === undefined || r.exitCode !== 0) throw new Error(`QEMU exits probe failed (exit ${r.exitCode})\n${r.stderr}`);
  return r.exitMs - r.signalMs;
}

export async function exitRtt(opts: { runs: number; qemu?: PvhProbes["exits"]; qemuCpu?: string; log: (s: string) => void }): Promise<ExitRttResult> {
  const k = { pio: [] as number[], mmio: [] as number[] };
  const km = { pio: [] as number[], mmio: [] as number[] };
  const q = { pio: [] as number[], mmio: [] as number[], both: [] as number[], mmioLoop: [] as number[], none: [] as number[] };
  for (let i = 0; i < opts.runs; i++) {
    const r = await measureExitLatency();
    k.pio.push(r.pioUs);
    k.mmio.push(r.mmioUs);
    const m = await measureExitLatency({ mainThread: true });
    km.pio.push(m.pioUs);
    km.mmio.push(m.mmioUs);
    if (opts.qemu) {
      const none = await qemuLoopMs(opts.qemu.none, opts.qemuCpu);
      const mmio = await qemuLoopMs(opts.qemu.mmio, opts.qemuCpu);
      const both = await qemuLoopMs(opts.qemu.both, opts.qemuCpu);
      q.none.push(none);
      q.mmioLoop.push(mmio);
      q.both.push(both);
      q.pio.push(((both - mmio) * 1000) / EXIT_LOOPS);
      q.mmio.push(((mmio - none) * 1000) / EXIT_LOOPS);
    }
  }
  const result: ExitRttResult = {
    exitsPerKind: EXIT_LOOPS,
    kindling: { pioUs: summarize(k.pio, "µs"), mmioUs: summarize(k.mmio, "µs") },
    kindlingMainThread: { pioUs: summarize(km.pio, "µs"), mmioUs: summarize(km.mmio, "µs") },
    qemu: opts.qemu
      ? {
          pioUs: summarize(q.pio, "µs"), mmioUs: summarize(q.mmio, "µs"),
          loopMs: { both: summarize(q.both, "ms"), mmio: summarize(q.mmioLoop, "ms"), none: summarize(q.none, "ms") },
        }
      : undefined,
  };
  opts.log(`exit round trip: kindling PIO ${result.kindling.pioUs.median} µs, MMIO ${result.kindling.mmioUs.median} µs (handed to the main thread: ${result.kindlingMainThread.pioUs.median}, ${result.kindlingMainThread.mmioUs.median}); QEMU PIO ${result.qemu?.pioUs.median ?? "-"} µs, MMIO ${result.qemu?.mmioUs.median ?? "-"} µs`);
  return result;
}

