// Exit round trip: how long one guest port write (KVM_EXIT_IO) or MMIO store (KVM_EXIT_MMIO) takes, from the
// guest's instruction through KVM, the vCPU worker, the main thread's device and back into the guest.
//
// The `exits` probe guest (guest/probes/exits.S) makes EXIT_LOOPS of each from CPL3, which runs natively on
// every host. Two do-nothing devices count the accesses and note the time of the first and the last; the
// figure is (last - first) / (count - 1). They are `counter` devices (src/bus.ts, VcpuThreadModel), which
// the vCPU's own thread completes without waking the main thread (src/vcpu/local.ts), as QEMU completes
// the same exits on its vCPU thread; `--main-thread` makes them plain devices, every exit handed to the main
// thread. Usage: bun bench/exit-latency.ts [--runs N] [--json] [--main-thread]

import { bootProbe } from "../src/boot/probe.ts";
import { PAGE_SIZE, SCRATCH_MMIO_START, SCRATCH_PORT } from "../src/arch/x86_64/layout.ts";
import { EXIT_LOOPS } from "../guest/probes/probes.ts";
import type { BusDevice, VcpuThreadModel } from "../src/bus.ts";
import { ModelServer } from "../src/vcpu/local.ts";

/** A do-nothing device that counts writes and notes the time of the first and the last (a `counter`). */
export class Stopwatch implements BusDevice {
  /** Unset with `mainThread`: then the vCPU thread hands every access to the main thread. */
  readonly onVcpuThread?: VcpuThreadModel;
  private readonly server: ModelServer;
  private readonly c: BigInt64Array;

  constructor(readonly name: string, opts: { mainThread?: boolean } = {}) {
    const model = { kind: "counter", state: new SharedArrayBuffer(24) } as const;
    this.server = new ModelServer(model);
    this.c = new BigInt64Array(model.state);
    if (!opts.mainThread) this.onVcpuThread = model;
  }
  read(_offset: number, data: Uint8Array): void {
    this.server.serve(false, data);
  }
  write(_offset: number, data: Uint8Array): void {
    this.server.serve(true, data);
  }
  get count(): number {
    return Number(Atomics.load(this.c, 0));
  }
  /** Microseconds per exit, from the first access to the last. */
  get usPerExit(): number {
    return Number(Atomics.load(this.c, 2) - Atomics.load(this.c, 1)) / 1000 / (this.count - 1);
  }
  get exitsPerSecond(): number {
    return 1e6 / this.usPerExit;
  }
}

export interface ExitLatency {
  pioUs: number;
  mmioUs: number;
  exits: number;
}

/** One run of the exits probe. */
export async function measureExitLatency(opts: { mainThread?: boolean } = {}): Promise<ExitLatency> {
  const pio = new Stopwatch("bench-pio", opts);
  const mmio = new Stopwatch("bench-mmio", opts);
  const vm = await bootProbe("exits", {
    beforeStart: (v) => {
      v.pio.register(SCRATCH_PORT, 4, pio);
      v.mmio.register(SCRATCH_MMIO_START, PAGE_SIZE, mmio);
    },
  });
  const exit = await vm.exited;
  if (exit.reason !== "reset") throw new Error(`exits probe ended with ${exit.reason}: ${exit.message}`);
  if (pio.count !== EXIT_LOOPS || mmio.count !== EXIT_LOOPS) {
    throw new Error(`expected ${EXIT_LOOPS} exits of each kind, saw ${pio.count} PIO and ${mmio.count} MMIO`);
  }
  return { pioUs: pio.usPerExit, mmioUs: mmio.usPerExit, exits: EXIT_LOOPS };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

if (import.meta.main) {
  const runsArg = process.argv.indexOf("--runs");
  const runs = runsArg > 0 ? Number(process.argv[runsArg + 1]) : 3;
  const samples: ExitLatency[] = [];
  for (let i = 0; i < runs; i++) samples.push(await measureExitLatency({ mainThread: process.argv.includes("--main-thread") }));
  const pio = samples.map((s) => s.pioUs);
  const mmio = samples.map((s) => s.mmioUs);
  if (process.argv.includes("--json")) {
    console.log(JSON.stringify({ exitsPerRun: EXIT_LOOPS, runs, pioUs: pio, mmioUs: mmio }, null, 1));
  } else {
    const f = (x: number) => x.toFixed(2).padStart(8);
    console.log(`exit round trip, ${EXIT_LOOPS} exits of each kind per run, ${runs} runs (µs per exit)`);
    console.log(`kind   ${"median".padStart(8)} ${"min".padStart(8)} ${"max".padStart(8)}`);
    console.log(`PIO    ${f(median(pio))} ${f(Math.min(...pio))} ${f(Math.max(...pio))}`);
    console.log(`MMIO   ${f(median(mmio))} ${f(Math.min(...mmio))} ${f(Math.max(...mmio))}`);
  }
}
