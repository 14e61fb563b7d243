// The body of a vCPU thread. KVM_RUN blocks the thread that calls it until the guest exits, so each vCPU
// runs in its own Bun Worker and the main thread stays free for devices, timers and the API. A worker runs
// one vCPU at a time, and another after it (worker-pool.ts): once loaded it reports its pthread_t, then
// each init message runs one vCPU until STOP.
//
// The two threads take turns through a small SharedArrayBuffer (see thread.ts for the other side):
//   1. the worker calls KVM_RUN; the guest runs until an exit;
//   2. the worker stores KVM_RUN's result, flips `turn` to MAIN and waits;
//   3. the main thread reads the exit from the shared kvm_run page, emulates the access (a UART register,
//      an MMIO device), writes any result back into kvm_run, and flips `turn` to WORKER (or STOP);
//   4. the worker enters KVM_RUN again, which first completes the access (e.g. loads an IN's value into AL).
// Between 1 and 2, an access to a device the vCPU thread may serve itself (local.ts) is completed here and
// the worker goes straight back to 1, unless the main thread has set CONTROL.LOCAL to 0.

import { ioctlNoArg, pthreadSelf, unblockSignal, viewAt } from "../kvm/worker-libc.ts";
import { LocalExits } from "./local.ts";
import { CONTROL, TURN, type VcpuWorkerInit } from "./protocol.ts";

declare const self: Worker;

// A full collection now, while the thread has nothing else to do, returns what loading the script left
// behind: about 0.4 MiB of each worker's ~1.8 MiB, for every VM of the process (bench/README.md, memory).
Bun.gc(true);
// The main thread needs this thread's pthread_t to interrupt KVM_RUN with the kick signal (whose handler it
// has installed for the whole process).
postMessage({ thread: pthreadSelf() });

/** The kick signal this thread has unblocked (the same for every vCPU of the process). */
let unblocked = -1;

self.onmessage = (e: MessageEvent<VcpuWorkerInit>) => {
  const { fd, control, runRequest, kickSignal, local } = e.data;
  const ctl = new Int32Array(control);
  const localExits = new LocalExits(local, viewAt(local.run.addr, local.run.size));
  // Once per thread: the mask stays (a pthread_sigmask less on the way to each later vCPU's first KVM_RUN).
  if (unblocked !== kickSignal) {
    unblockSignal(kickSignal);
    unblocked = kickSignal;
  }
  for (;;) {
    const r = ioctlNoArg(fd, runRequest);
    if (r === 0 && Atomics.load(ctl, CONTROL.LOCAL) === 1 && localExits.serve()) continue;
    Atomics.store(ctl, CONTROL.RESULT, r);
    Atomics.store(ctl, CONTROL.TURN, TURN.MAIN);
    Atomics.notify(ctl, CONTROL.TURN);
    // Sleep until the main thread changes `turn`. Atomics.wait may return without a change (a spurious
    // wake-up), and entering KVM_RUN before the exit was handled would drop the access: so re-check.
    while (Atomics.load(ctl, CONTROL.TURN) === TURN.MAIN) Atomics.wait(ctl, CONTROL.TURN, TURN.MAIN);
    if (Atomics.load(ctl, CONTROL.TURN) === TURN.STOP) break;
  }
  postMessage({ stopped: true });
};
