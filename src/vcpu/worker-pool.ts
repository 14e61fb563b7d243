// The vCPU worker threads of this process, kept for reuse. A Bun Worker is a thread with its own JavaScript
// heap that has to load worker.ts before it can run a guest: about 5 ms on a nested host, on the
// critical path of every VM's start. A worker whose vCPU has stopped goes back here, idle (its script waits
// for the next vCPU, see worker.ts), and the next vCPU takes it; `prestartVcpuWorkers` starts threads
// ahead of need, so that they load while the VM is still being set up on the main thread.
//
// Idle workers are unref'd (they do not keep the process alive) and at most MAX_IDLE are kept: a process
// that held many VMs does not keep a thread per VM once they are gone.

/**
 * Where the worker's script is. A bundled build (scripts/bundle.ts) defines KINDLING_VCPU_WORKER_URL as the
 * bundled worker beside it, a standalone executable as the worker's path inside it; from source, it is
 * worker.ts beside this file.
 */
declare const KINDLING_VCPU_WORKER_URL: string | undefined;
const WORKER_URL = typeof KINDLING_VCPU_WORKER_URL === "string" ? KINDLING_VCPU_WORKER_URL : new URL("./worker.ts", import.meta.url).href;

/** Idle workers kept at most: one per core covers a process that makes VMs one per core at a time. */
const MAX_IDLE = Math.max(2, navigator.hardwareConcurrency);

/** A started worker and its thread's pthread_t (what the kick signal is sent to). */
export interface PooledWorker {
  readonly worker: Worker;
  /** Resolves with the thread's pthread_t once its script has loaded. */
  readonly thread: Promise<bigint>;
}

const idle: PooledWorker[] = [];
let started = 0;

function startWorker(): PooledWorker {
  started++;
  const worker = new Worker(WORKER_URL);
  const thread = new Promise<bigint>((resolve, reject) => {
    worker.onmessage = (e: MessageEvent<{ thread?: bigint }>) => {
      if (e.data.thread !== undefined) resolve(e.data.thread);
    };
    worker.onerror = (e) => reject(new Error(`vCPU worker failed to start: ${e.message}`));
  });
  thread.catch(() => {}); // reported to whoever takes it
  return { worker, thread };
}

/** Start workers until `count` are idle, so that the next `count` vCPUs find theirs loaded or loading. */
export function prestartVcpuWorkers(count: number): void {
  while (idle.length < Math.min(count, MAX_IDLE)) {
    const w = startWorker();
    w.worker.unref();
    idle.push(w);
  }
}

/**
 * Start workers until `count` are idle and wait until each has loaded: for a process that expects to start
 * or restore a VM soon (an idle `kindling api`, a clone pool), so that its first vCPU need not wait.
 */
export async function prewarmVcpuWorkers(count = 1): Promise<void> {
  prestartVcpuWorkers(count);
  await Promise.all(idle.map((w) => w.thread));
}

/** An idle worker, or a new one. It keeps the process alive until it is given back. */
export function takeVcpuWorker(): PooledWorker {
  const w = idle.pop() ?? startWorker();
  w.worker.ref();
  return w;
}

/** A worker whose vCPU loop has ended (it posted `stopped`): kept for the next vCPU, or ended. */
export function giveBackVcpuWorker(w: PooledWorker): void {
  w.worker.onmessage = null;
  if (idle.length >= MAX_IDLE) {
    w.worker.terminate();
    return;
  }
  w.worker.unref();
  idle.push(w);
}

/** Workers idle now, and started since the process began (tests, benchmarks). */
export function vcpuWorkerCounts(): { idle: number; started: number; maxIdle: number } {
  return { idle: idle.length, started, maxIdle: MAX_IDLE };
}
