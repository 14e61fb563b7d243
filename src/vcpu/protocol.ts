// What the main thread and a vCPU worker share: the layout of their control words and the init message.

import type { VcpuThreadModel } from "../bus.ts";

/** Indices into the shared Int32Array. */
export const CONTROL = {
  /** Whose turn it is: TURN.WORKER (running the guest), TURN.MAIN (an exit to handle), TURN.STOP. */
  TURN: 0,
  /** KVM_RUN's return value for the exit being handled: 0, or -errno (-EINTR after a kick). */
  RESULT: 1,
  /** 1: the worker completes exits to vCPU-thread devices itself (local.ts); 0: it hands every exit over. */
  LOCAL: 2,
} as const;
export const CONTROL_WORDS = 3;

/**
 * WORKER, MAIN and STOP as above. HOLD: the worker has its vCPU (a `hold` init) but must not enter KVM_RUN
 * before the main thread sets WORKER (or STOP). RELOAD: the worker drops the held vCPU and takes the next
 * init message instead (the vCPU-thread devices changed before the start; see thread.ts, prepare).
 */
export const TURN = { WORKER: 0, MAIN: 1, STOP: 2, HOLD: 3, RELOAD: 4 } as const;

export interface VcpuWorkerInit {
  /** The vCPU fd; file descriptors are shared by every thread of the process. */
  fd: number;
  control: SharedArrayBuffer;
  /** KVM_RUN's request number and the kick signal, so that the worker loads neither ioctl.ts nor libc.ts. */
  runRequest: number;
  kickSignal: number;
  /** What the worker needs to complete exits to vCPU-thread devices itself (local.ts). */
  local: LocalExitsInit;
  /** Sent ahead of the start: set up, then wait while `turn` is TURN.HOLD. */
  hold: boolean;
}

export interface LocalExitsInit {
  /** The vCPU's kvm_run mapping (made by the main thread; every thread of the process sees it). */
  run: { addr: number; size: number };
  /** exit.ts's field offsets, and the numbers the worker compares with (uapi.ts is not loaded there). */
  off: Record<"exit_reason" | "io_direction" | "io_size" | "io_port" | "io_count" | "io_data_offset" | "mmio_phys_addr" | "mmio_data" | "mmio_len" | "mmio_is_write", number>;
  exitIo: number;
  exitMmio: number;
  ioOut: number;
  /** The port and MMIO ranges of vCPU-thread devices when the vCPU started. */
  pio: LocalRange[];
  mmio: LocalRange[];
  /** Int32Array [KVM_EXIT_IO, KVM_EXIT_MMIO]: exits the worker completed, added to Vcpu.exitCounts. */
  counts: SharedArrayBuffer;
}

export interface LocalRange {
  base: number;
  size: number;
  model: VcpuThreadModel;
}

// ---- the init message as it travels ----
//
// Posted as [numbers, control, counts, ...counter states]: every number of VcpuWorkerInit in one Float64Array,
// then the shared buffers. Posting the nested objects cost about twice as much on the main thread (each
// property is serialized on its own), and the post is on the way to every VM's start and restore.

const OFF_KEYS = [
  "exit_reason", "io_direction", "io_size", "io_port", "io_count", "io_data_offset", "mmio_phys_addr", "mmio_data", "mmio_len", "mmio_is_write",
] as const satisfies readonly (keyof LocalExitsInit["off"])[];
const HEAD = 9 + OFF_KEYS.length; // fd, runRequest, kickSignal, run.addr, run.size, exitIo, exitMmio, ioOut, hold; off
const SINK = 0;
const COUNTER = 1;

export type VcpuWorkerMessage = [Float64Array, SharedArrayBuffer, SharedArrayBuffer, ...SharedArrayBuffer[]];

export function encodeInit(init: VcpuWorkerInit): VcpuWorkerMessage {
  const l = init.local;
  const ranges = [...l.pio, ...l.mmio];
  const nums = new Float64Array(HEAD + 2 + ranges.length * 4);
  nums.set([init.fd, init.runRequest, init.kickSignal, l.run.addr, l.run.size, l.exitIo, l.exitMmio, l.ioOut, init.hold ? 1 : 0]);
  OFF_KEYS.forEach((k, i) => (nums[9 + i] = l.off[k]));
  nums[HEAD] = l.pio.length;
  nums[HEAD + 1] = l.mmio.length;
  const states: SharedArrayBuffer[] = [];
  ranges.forEach((r, i) => {
    const at = HEAD + 2 + i * 4;
    nums[at] = r.base;
    nums[at + 1] = r.size;
    if (r.model.kind === "sink") nums.set([SINK, r.model.fill], at + 2);
    else nums.set([COUNTER, states.push(r.model.state) - 1], at + 2);
  });
  return [nums, init.control, l.counts, ...states];
}

export function decodeInit([nums, control, counts, ...states]: VcpuWorkerMessage): VcpuWorkerInit {
  const off = Object.fromEntries(OFF_KEYS.map((k, i) => [k, nums[9 + i]!])) as LocalExitsInit["off"];
  const ranges: LocalRange[] = [];
  for (let at = HEAD + 2; at < nums.length; at += 4) {
    const model: VcpuThreadModel = nums[at + 2] === SINK ? { kind: "sink", fill: nums[at + 3]! } : { kind: "counter", state: states[nums[at + 3]!]! };
    ranges.push({ base: nums[at]!, size: nums[at + 1]!, model });
  }
  const nPio = nums[HEAD]!;
  return {
    fd: nums[0]!, control, runRequest: nums[1]!, kickSignal: nums[2]!, hold: nums[8] === 1,
    local: {
      run: { addr: nums[3]!, size: nums[4]! }, off, exitIo: nums[5]!, exitMmio: nums[6]!, ioOut: nums[7]!,
      pio: ranges.slice(0, nPio), mmio: ranges.slice(nPio), counts,
    },
  };
}
