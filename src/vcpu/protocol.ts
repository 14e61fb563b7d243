// What the main thread and a vCPU worker share: the layout of their control words and the first message.

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

export const TURN = { WORKER: 0, MAIN: 1, STOP: 2 } as const;

export interface VcpuWorkerInit {
  /** The vCPU fd; file descriptors are shared by every thread of the process. */
  fd: number;
  control: SharedArrayBuffer;
  /** KVM_RUN's request number and the kick signal, so that the worker loads neither ioctl.ts nor libc.ts. */
  runRequest: number;
  kickSignal: number;
  /** What the worker needs to complete exits to vCPU-thread devices itself (local.ts). */
  local: LocalExitsInit;
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
