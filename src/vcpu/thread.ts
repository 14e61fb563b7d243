// The main thread's handle on one vCPU worker: start it, wait for its next exit, let it resume, kick it out
// of KVM_RUN, stop it. The protocol is described at the top of worker.ts. The worker thread comes from
// this process's pool (worker-pool.ts) and goes back to it when the vCPU stops.

import { installKickHandler, kickSignal, pthreadKill, ERRNO } from "../kvm/libc.ts";
import { KVM } from "../kvm/ioctl.ts";
import { StructView } from "../kvm/struct.ts";
import { kvm_run } from "../kvm/uapi.ts";
import { CONTROL, CONTROL_WORDS, TURN, type LocalRange, type VcpuWorkerInit } from "./protocol.ts";
import { KVM_EXIT, KVM_EXIT_IO_OUT } from "../kvm/uapi.ts";
import { OFF } from "./exit.ts";
import type { VcpuFd } from "../kvm/vcpu-fd.ts";
import { giveBackVcpuWorker, takeVcpuWorker, type PooledWorker } from "./worker-pool.ts";

const IMMEDIATE_EXIT = kvm_run.offsetOf("immediate_exit");
/** Start `n` vCPU workers ahead of need and wait until they are loaded (worker-pool.ts keeps them). */
export { prewarmVcpuWorkers } from "./worker-pool.ts";

export class VcpuThread {
  private readonly pooled: PooledWorker;
  private readonly worker: Worker;
  private readonly ctl = new Int32Array(new SharedArrayBuffer(CONTROL_WORDS * 4));
  private thread?: bigint;
  private readonly ready: Promise<void>;
  private stopped?: Promise<void>;
  /** The vCPU's kvm_run page, as the main thread reads it after each exit. */
  readonly run: StructView;
  private readonly runBytes: Uint8Array;

  constructor(readonly vcpu: VcpuFd) {
    installKickHandler();
    this.runBytes = new Uint8Array(vcpu.run.buffer);
    this.run = new StructView(kvm_run, this.runBytes);
    this.pooled = takeVcpuWorker();
    this.worker = this.pooled.worker;
    this.ready = this.pooled.thread.then(
      (thread) => void (this.thread = thread),
      (e: Error) => Promise.reject(new Error(`vCPU ${vcpu.id} worker failed: ${e.message}`)),
    );
    this.ready.catch(() => {}); // start() reports it
    // Until started, it is the main thread's turn: the worker would otherwise run before registers are set.
    Atomics.store(this.ctl, CONTROL.TURN, TURN.WORKER);
    this.serveLocally(true);
  }

  /** Exits the worker completed itself (local.ts), KVM_EXIT_IO's and KVM_EXIT_MMIO's. */
  private readonly localCounts = new Int32Array(new SharedArrayBuffer(8));

  /** Exits completed on the vCPU thread so far, by KVM_EXIT_* number. */
  localExitCounts(): [number, number][] {
    return [[KVM_EXIT.IO, Atomics.load(this.localCounts, 0)], [KVM_EXIT.MMIO, Atomics.load(this.localCounts, 1)]];
  }

  /** Let the worker complete exits to vCPU-thread devices itself (the default), or hand it every exit. */
  serveLocally(on: boolean): void {
    Atomics.store(this.ctl, CONTROL.LOCAL, on ? 1 : 0);
  }

  /** Start the worker; it enters KVM_RUN at once. `local`: the vCPU-thread devices' ranges (local.ts). */
  async start(local: { pio: LocalRange[]; mmio: LocalRange[] } = { pio: [], mmio: [] }): Promise<void> {
    const init: VcpuWorkerInit = {
      fd: this.vcpu.fd, control: this.ctl.buffer as SharedArrayBuffer, runRequest: KVM.RUN, kickSignal: kickSignal(),
      local: {
        run: { addr: this.vcpu.run.addr, size: this.vcpu.run.size }, off: OFF, exitIo: KVM_EXIT.IO, exitMmio: KVM_EXIT.MMIO,
        ioOut: KVM_EXIT_IO_OUT, ...local, counts: this.localCounts.buffer as SharedArrayBuffer,
      },
    };
    this.worker.postMessage(init);
    await this.ready; // the thread id, for kicks; the worker may already be in KVM_RUN
  }

  /**
   * Wait for the worker's next exit from KVM_RUN. Returns KVM_RUN's result: 0 for an exit described in
   * kvm_run, or -errno (-EINTR when a kick or another signal interrupted it).
   */
  async nextExit(): Promise<number> {
    for (;;) {
      const w = Atomics.waitAsync(this.ctl, CONTROL.TURN, TURN.WORKER);
      if (w.async) await w.value;
      if (Atomics.load(this.ctl, CONTROL.TURN) === TURN.MAIN) return Atomics.load(this.ctl, CONTROL.RESULT);
    }
  }

  /** Let the worker enter KVM_RUN again. */
  resume(): void {
    Atomics.store(this.ctl, CONTROL.TURN, TURN.WORKER);
    Atomics.notify(this.ctl, CONTROL.TURN);
  }

  /**
   * Make the vCPU leave KVM_RUN soon: immediate_exit makes the next KVM_RUN return EINTR at once, and the
   * signal interrupts one that is already running (api.rst 5, "immediate_exit").
   */
  kick(): void {
    this.runBytes[IMMEDIATE_EXIT] = 1;
    if (this.thread !== undefined) pthreadKill(this.thread, kickSignal());
  }

  /** Clear immediate_exit after a kick has been seen, so the next KVM_RUN runs the guest. */
  clearKick(): void {
    this.runBytes[IMMEDIATE_EXIT] = 0;
  }

  /** End the worker. Call it when it is the main thread's turn (after nextExit returned). */
  stop(): Promise<void> {
    if (this.stopped) return this.stopped;
    this.stopped = new Promise<void>((resolve) => {
      this.worker.onmessage = (e: MessageEvent<{ stopped?: boolean }>) => {
        if (e.data.stopped) {
          giveBackVcpuWorker(this.pooled); // idle again, for the next vCPU of this process
          resolve();
        }
      };
      Atomics.store(this.ctl, CONTROL.TURN, TURN.STOP);
      Atomics.notify(this.ctl, CONTROL.TURN);
    });
    return this.stopped;
  }

  /** Give back a worker that never started (it is idle, waiting for a vCPU). */
  terminate(): void {
    if (this.stopped) return;
    this.stopped = Promise.resolve();
    void this.ready.then(() => giveBackVcpuWorker(this.pooled), () => this.worker.terminate());
  }
}

export const EINTR = ERRNO.EINTR!;
