// PROTOTYPE (issue 14, item 1), the worker side: a vCPU worker that completes some exits itself, on its
// own thread, and hands only the others to the main thread. It runs the same turn protocol as
// src/vcpu/worker.ts (src/vcpu/protocol.ts), plus one step: after KVM_RUN returns, an exit whose port or
// address lies in one of the local ranges it was given is completed here and KVM_RUN is entered again at
// once, without waking the main thread.
//
// The local device here is the one the exit benchmark needs: a stopwatch whose state lives in a
// SharedArrayBuffer (count, first and last time, in ns since the epoch of performance.timeOrigin), updated
// with Atomics so that two vCPUs writing it stay exact. Reads return zeros.

import { ioctlNoArg, pthreadSelf, unblockSignal, viewAt } from "../../src/kvm/worker-libc.ts";
import { CONTROL, TURN } from "../../src/vcpu/protocol.ts";

declare const self: Worker;

export interface FastExitInit {
  fd: number;
  control: SharedArrayBuffer;
  runRequest: number;
  kickSignal: number;
  run: { addr: number; size: number };
  /** Offsets in kvm_run (uapi.ts computes them on the main thread). */
  off: Record<"exit_reason" | "io_direction" | "io_size" | "io_port" | "io_count" | "io_data_offset" | "mmio_phys_addr" | "mmio_is_write", number>;
  exitIo: number;
  exitMmio: number;
  /** Port and MMIO ranges completed here: [start, end) and the stopwatch's shared words (BigInt64Array of 3). */
  pio: { start: number; end: number; stopwatch: SharedArrayBuffer }[];
  mmio: { start: number; end: number; stopwatch: SharedArrayBuffer }[];
  /** Exits completed here, by kind, for the exits count a trace or the probe test checks. */
  localCounts: SharedArrayBuffer;
}

postMessage({ thread: pthreadSelf() });

const nowNs = () => BigInt(Math.round((performance.timeOrigin + performance.now()) * 1e6));

function tick(sw: BigInt64Array): void {
  const t = nowNs();
  if (Atomics.add(sw, 0, 1n) === 0n) Atomics.store(sw, 1, t);
  Atomics.store(sw, 2, t); // the latest of concurrent writers may lose by a few ns: fine for a stopwatch
}

self.onmessage = (e: MessageEvent<FastExitInit>) => {
  const init = e.data;
  const ctl = new Int32Array(init.control);
  const run = new DataView(viewAt(init.run.addr, init.run.size));
  const o = init.off;
  const pio = init.pio.map((r) => ({ ...r, sw: new BigInt64Array(r.stopwatch) }));
  const mmio = init.mmio.map((r) => ({ ...r, sw: new BigInt64Array(r.stopwatch) }));
  const local = new Int32Array(init.localCounts);
  unblockSignal(init.kickSignal);
  for (;;) {
    const r = ioctlNoArg(init.fd, init.runRequest);
    if (r === 0) {
      const reason = run.getUint32(o.exit_reason, true);
      if (reason === init.exitIo) {
        const port = run.getUint16(o.io_port, true);
        const hit = pio.find((d) => port >= d.start && port < d.end);
        if (hit && run.getUint8(o.io_direction) === 1) {
          const count = run.getUint32(o.io_count, true);
          for (let i = 0; i < count; i++) tick(hit.sw);
          Atomics.add(local, 0, 1);
          continue;
        }
      } else if (reason === init.exitMmio) {
        const addr = Number(run.getBigUint64(o.mmio_phys_addr, true));
        const hit = mmio.find((d) => addr >= d.start && addr < d.end);
        if (hit && run.getUint8(o.mmio_is_write)) {
          tick(hit.sw);
          Atomics.add(local, 1, 1);
          continue;
        }
      }
    }
    Atomics.store(ctl, CONTROL.RESULT, r);
    Atomics.store(ctl, CONTROL.TURN, TURN.MAIN);
    Atomics.notify(ctl, CONTROL.TURN);
    while (Atomics.load(ctl, CONTROL.TURN) === TURN.MAIN) Atomics.wait(ctl, CONTROL.TURN, TURN.MAIN);
    if (Atomics.load(ctl, CONTROL.TURN) === TURN.STOP) break;
  }
  postMessage({ stopped: true });
};
