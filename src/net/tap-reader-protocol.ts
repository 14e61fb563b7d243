// What the main thread and a TAP reader worker share (see tap-reader-worker.ts).

/** Indices into the shared Int32Array. */
export const TAP_READER = {
  /** Nonzero: the worker should end. */
  STOP: 0,
  /** Frames posted to the main thread and not yet released by it. */
  IN_FLIGHT: 1,
} as const;
export const TAP_READER_WORDS = 2;

export interface TapReaderInit {
  /** The TAP fd (blocking); file descriptors are shared by every thread of the process. */
  fd: number;
  control: SharedArrayBuffer;
  /** Read buffer size: the largest frame, virtio-net header included. */
  maxFrame: number;
  /** Most frames posted and not released before the worker waits. */
  maxInFlight: number;
}
