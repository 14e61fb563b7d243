// The main thread's handle on one vCPU worker: start it, wait for its next exit, let it resume, kick it out
// of KVM_RUN, stop it. The protocol is described at the top of worker.ts.

import { installKickHandler, kickSignal, pthreadKill, ERRNO } from "../kvm/libc.ts";
import { StructView } from "../kvm/struct.ts";
import { kvm_run } from "../kvm/uapi.ts";
import { CONTROL, CONTROL_WORDS, TURN, type VcpuWorkerInit } from "./protocol.ts";
import type { VcpuFd } from "../kvm/vcpu-fd.ts";

const IMMEDIATE_EXIT = kvm_run.offsetOf("immediate_exit");
const WORKER_URL = new URL("./worker.ts", import.meta.url).href;

/**
 * vCPU workers loaded ahead of need. Loading a Worker's modules takes ~5 ms here, most of a snapshot
 * restore's time; a process that expects to restore (an idle `kindling api`, a clone pool) starts them
 * while it waits, and each new VcpuThread takes one.
 */
const spareWorkers: { worker: Worker; thread: bigint }[] = [];

/** Start `n` spare vCPU workers; resolves once each has loaded its modules and waits for a vCPU. */
export async function prewarmVcpuWorkers(n = 1): Promise<void> {
  await Promise.all(
    Array.from({ length: n }, () => {
      const w = new Worker(WORKER_URL);
      return new Promise<void>((resolve, reject) => {
        w.onmessage = (e: MessageEvent<{ loaded?: boolean; thread?: bigint }>) => {
          if (!e.data.loaded || e.data.thread === undefined) return;
          w.unref(); // a spare does not keep the process alive
          spareWorkers.push({ worker: w, thread: e.data.thread });
          resolve();
        };
        w.onerror = (e) => reject(new Error(`spare vCPU worker failed: ${e.message}`));
      });
    }),
  );
}

export class VcpuThread {
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
    const spare = spareWorkers.pop();
    spare?.worker.ref();
    this.worker = spare?.worker ?? new Worker(WORKER_URL);
    // A spare has told its thread already; a new worker tells it once it has its vCPU.
    this.thread = spare?.thread;
    this.ready = new Promise((resolve, reject) => {
      if (spare) resolve();
      this.worker.onmessage = (e: MessageEvent<{ thread?: bigint; loaded?: boolean }>) => {
        if (e.data.thread !== undefined && !e.data.loaded) {
          this.thread = e.data.thread;
          resolve();
        }
      };
      this.worker.onerror = (e) => reject(new Error(`vCPU ${vcpu.id} worker failed: ${e.message}`));
    });
    // Until started, it is the main thread's turn: the worker would otherwise run before registers are set.
    Atomics.store(this.ctl, CONTROL.TURN, TURN.WORKER);
  }

  /** Start the worker; it enters KVM_RUN at once. */
  async start(): Promise<void> {
    const init: VcpuWorkerInit = { fd: this.vcpu.fd, control: this.ctl.buffer as SharedArrayBuffer };
    this.worker.postMessage(init);
    await this.ready;
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
          this.worker.terminate();
          resolve();
        }
      };
      Atomics.store(this.ctl, CONTROL.TURN, TURN.STOP);
      Atomics.notify(this.ctl, CONTROL.TURN);
    });
    return this.stopped;
  }

  /** Terminate a worker that never started. */
  terminate(): void {
    this.worker.terminate();
  }
}

export const EINTR = ERRNO.EINTR!;
