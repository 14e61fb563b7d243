// The body of a TAP reader thread (see TapReader in tap.ts for the other side).
//
// read() on a TAP fd returns exactly one frame. The main thread must not sit in a blocking read, and Bun's
// stream readers join several reads into one chunk (frame boundaries would be lost), so one Worker per TAP
// does nothing but block in read() and post each frame to the main thread, the way a vCPU thread blocks in
// KVM_RUN. Control words shared with the main thread:
//   STOP       set by the main thread; the loop ends at its next check (a kick interrupts a blocked read)
//   IN_FLIGHT  frames posted and not yet released by the main thread; at the limit the thread waits, so
//              the frames the guest has no room for stay in the kernel's queue (which drops beyond
//              txqueuelen and counts it), never in our memory.

import { ERRNO, installKickHandler, kickSignal, pthreadSelf, read_, SysError, unblockSignal } from "../kvm/libc.ts";
import { TAP_READER, type TapReaderInit } from "./tap-reader-protocol.ts";

declare const self: Worker;

self.onmessage = (e: MessageEvent<TapReaderInit>) => {
  const { fd, control, maxFrame, maxInFlight } = e.data;
  const ctl = new Int32Array(control);
  // The kick signal's handler does nothing, and without SA_RESTART a blocked read() returns EINTR.
  installKickHandler();
  unblockSignal(kickSignal());
  postMessage({ thread: pthreadSelf() });
  const buf = new Uint8Array(maxFrame);
  let error: string | undefined;
  while (Atomics.load(ctl, TAP_READER.STOP) === 0) {
    const inFlight = Atomics.load(ctl, TAP_READER.IN_FLIGHT);
    if (inFlight >= maxInFlight) {
      Atomics.wait(ctl, TAP_READER.IN_FLIGHT, inFlight);
      continue;
    }
    let n: number;
    try {
      n = read_(fd, buf);
    } catch (err) {
      if (err instanceof SysError && (err.errno === ERRNO.EINTR || err.errno === ERRNO.EAGAIN)) continue;
      error = err instanceof Error ? err.message : String(err);
      break;
    }
    Atomics.add(ctl, TAP_READER.IN_FLIGHT, 1);
    const frame = buf.slice(0, n);
    postMessage(frame, [frame.buffer]);
  }
  postMessage({ stopped: true, error });
};
