// PROTOTYPE (issue 14, item 1): how much of an exit's round trip goes away when the vCPU's own thread
// completes it. The exits probe (guest/probes/exits.S) makes EXIT_LOOPS port writes to SCRATCH_PORT, then
// EXIT_LOOPS MMIO stores to SCRATCH_MMIO_START; here both land on stopwatch devices that live on the vCPU
// worker's thread with their state in shared memory (fast-exit-worker.ts), and every other exit (the
// probe's reset through the i8042) goes to the main thread as today. Measured beside kindling's current
// path (bench/exit-latency.ts: every exit handed to the main thread), alternating, in one process.
//
//   bun bench/prototype/exits-on-vcpu-thread.ts [--runs N]
//
// It builds the VM like bootProbe() but runs its own worker, so src/vcpu.ts and src/kvm/vcpu-*.ts stay as
// they are while they are being moved (issue 11).

import { PROBES, EXIT_LOOPS } from "../../guest/probes/probes.ts";
import { probeBinary } from "../../guest/probes/build.ts";
import { setupLongMode } from "../../src/arch/x86_64/regs.ts";
import { setupMsrs } from "../../src/arch/x86_64/msrs.ts";
import { setupLapic } from "../../src/arch/x86_64/lapic.ts";
import { MiB, SCRATCH_MMIO_SIZE, SCRATCH_MMIO_START, SCRATCH_PORT } from "../../src/arch/x86_64/layout.ts";
import { Vm } from "../../src/vm.ts";
import type { VmEnd as VmExit } from "../../src/lifecycle.ts";
import { KVM } from "../../src/kvm/ioctl.ts";
import { ERRNO, kickSignal } from "../../src/kvm/libc.ts";
import { KVM_EXIT, kvm_run } from "../../src/kvm/uapi.ts";
import { CONTROL, CONTROL_WORDS, TURN } from "../../src/vcpu/protocol.ts";
import { measureExitLatency } from "../exit-latency.ts";
import type { FastExitInit } from "./fast-exit-worker.ts";

export interface FastExitResult {
  pioUs: number;
  mmioUs: number;
  /** Exits the vCPU thread completed itself, and exits handed to the main thread. */
  local: { pio: number; mmio: number };
  handedOff: number;
}

function stopwatchUs(sw: BigInt64Array): number {
  return Number(sw[2]! - sw[1]!) / 1000 / Number(sw[0]! - 1n);
}

export async function measureFastExits(): Promise<FastExitResult> {
  const spec = PROBES.exits!;
  const vm = new Vm({ memSize: 16 * MiB });
  const vcpu = vm.vcpus[0]!;
  vm.memory.write(spec.load, probeBinary(spec));
  vcpu.fd.setCpuid(vm.kvm.supportedCpuid());
  setupMsrs(vcpu.fd);
  setupLapic(vcpu.fd);
  setupLongMode(vcpu.fd, vm.memory, { entry: spec.load, user: true });

  const pioSw = new BigInt64Array(new SharedArrayBuffer(24));
  const mmioSw = new BigInt64Array(new SharedArrayBuffer(24));
  const local = new Int32Array(new SharedArrayBuffer(8));
  const ctl = new Int32Array(new SharedArrayBuffer(CONTROL_WORDS * 4));
  Atomics.store(ctl, CONTROL.TURN, TURN.WORKER);
  const worker = new Worker(new URL("./fast-exit-worker.ts", import.meta.url).href);
  await new Promise<void>((resolve) => (worker.onmessage = () => resolve())); // its pthread_t: unused here
  const off = {
    exit_reason: kvm_run.offsetOf("exit_reason"), io_direction: kvm_run.offsetOf("exit.io.direction"),
    io_size: kvm_run.offsetOf("exit.io.size"), io_port: kvm_run.offsetOf("exit.io.port"),
    io_count: kvm_run.offsetOf("exit.io.count"), io_data_offset: kvm_run.offsetOf("exit.io.data_offset"),
    mmio_phys_addr: kvm_run.offsetOf("exit.mmio.phys_addr"), mmio_is_write: kvm_run.offsetOf("exit.mmio.is_write"),
  };
  const init: FastExitInit = {
    fd: vcpu.fd.fd, control: ctl.buffer as SharedArrayBuffer, runRequest: KVM.RUN, kickSignal: kickSignal(),
    run: { addr: vcpu.fd.run.addr, size: vcpu.fd.run.size }, off, exitIo: KVM_EXIT.IO, exitMmio: KVM_EXIT.MMIO,
    pio: [{ start: SCRATCH_PORT, end: SCRATCH_PORT + 4, stopwatch: pioSw.buffer as SharedArrayBuffer }],
    mmio: [{ start: SCRATCH_MMIO_START, end: SCRATCH_MMIO_START + SCRATCH_MMIO_SIZE, stopwatch: mmioSw.buffer as SharedArrayBuffer }],
    localCounts: local.buffer as SharedArrayBuffer,
  };
  const stopped = new Promise<void>((resolve) => (worker.onmessage = (e) => e.data.stopped && resolve()));
  worker.postMessage(init);

  // The main thread's half: the same turn protocol as VcpuThread + Vcpu.loop, for the exits handed over.
  let handedOff = 0;
  let ended: VmExit | undefined;
  // A device may end the VM itself (the i8042's reset calls vm.end()): then vm.stopping is set.
  while (!ended && !vm.stopping) {
    const w = Atomics.waitAsync(ctl, CONTROL.TURN, TURN.WORKER);
    if (w.async) await w.value;
    if (Atomics.load(ctl, CONTROL.TURN) !== TURN.MAIN) continue;
    const r = Atomics.load(ctl, CONTROL.RESULT);
    handedOff++;
    // EINTR (a signal that was not a kick: nobody kicks here) and EAGAIN: enter again, as Vcpu.loop does.
    if (r === -ERRNO.EINTR! || r === -ERRNO.EAGAIN!) handedOff--;
    else ended = r < 0 ? { reason: "error", message: `KVM_RUN: ${r}` } : vcpu.handleExit();
    if (!ended && !vm.stopping) {
      Atomics.store(ctl, CONTROL.TURN, TURN.WORKER);
      Atomics.notify(ctl, CONTROL.TURN);
    }
  }
  Atomics.store(ctl, CONTROL.TURN, TURN.STOP);
  Atomics.notify(ctl, CONTROL.TURN);
  await stopped;
  worker.terminate();
  if (ended) vm.end(ended);
  ended = await vm.exited;
  if (ended.reason !== "reset") throw new Error(`exits probe ended with ${ended.reason}: ${ended.message}`);
  if (pioSw[0] !== BigInt(EXIT_LOOPS) || mmioSw[0] !== BigInt(EXIT_LOOPS)) {
    throw new Error(`expected ${EXIT_LOOPS} exits of each kind, saw ${pioSw[0]} PIO and ${mmioSw[0]} MMIO`);
  }
  return { pioUs: stopwatchUs(pioSw), mmioUs: stopwatchUs(mmioSw), local: { pio: local[0]!, mmio: local[1]! }, handedOff };
}

if (import.meta.main) {
  const runsArg = process.argv.indexOf("--runs");
  const runs = runsArg > 0 ? Number(process.argv[runsArg + 1]) : 3;
  const rows: string[] = [];
  for (let i = 0; i < runs; i++) {
    const now = await measureExitLatency();
    const fast = await measureFastExits();
    rows.push(
      `run ${i + 1}: main-thread hand-off PIO ${now.pioUs.toFixed(2)} µs, MMIO ${now.mmioUs.toFixed(2)} µs | ` +
        `on the vCPU thread PIO ${fast.pioUs.toFixed(2)} µs, MMIO ${fast.mmioUs.toFixed(2)} µs ` +
        `(${fast.local.pio} + ${fast.local.mmio} exits completed there, ${fast.handedOff} handed to the main thread)`,
    );
    console.log(rows.at(-1));
  }
  process.exit(0);
}
