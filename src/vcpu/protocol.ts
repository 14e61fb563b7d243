// What the main thread and a vCPU worker share: the layout of their control words and the first message.

/** Indices into the shared Int32Array. */
export const CONTROL = {
  /** Whose turn it is: TURN.WORKER (running the guest), TURN.MAIN (an exit to handle), TURN.STOP. */
  TURN: 0,
  /** KVM_RUN's return value for the exit being handled: 0, or -errno (-EINTR after a kick). */
  RESULT: 1,
} as const;
export const CONTROL_WORDS = 2;

export const TURN = { WORKER: 0, MAIN: 1, STOP: 2 } as const;

export interface VcpuWorkerInit {
  /** The vCPU fd; file descriptors are shared by every thread of the process. */
  fd: number;
  control: SharedArrayBuffer;
  /** KVM_RUN's request number and the kick signal, so that the worker loads neither ioctl.ts nor libc.ts. */
  runRequest: number;
  kickSignal: number;
}
