// A hostile guest on another thread, for test/virtio-rx-flood.test.ts: it keeps one receive ring full of
// zero-length device-writable chains, rewriting avail.idx as fast as the device uses them, in guest RAM
// shared with the main thread (a SharedArrayBuffer), the way a guest vCPU writes RAM while the VMM runs.
//
// Message in: { ram, stop, desc, avail, used, size, bufferAddr, durationMs }. `stop` is an Int32Array's
// SharedArrayBuffer; the worker stops when its first element becomes nonzero or after `durationMs`.
// Messages out: "ready" once the ring is full, then { refills } when it stops.

import { VRING_DESC_F_WRITE, vring_avail, vring_desc, vring_used } from "../../src/devices/virtio/uapi.ts";

declare const self: Worker;

interface Start {
  ram: SharedArrayBuffer;
  stop: SharedArrayBuffer;
  desc: number;
  avail: number;
  used: number;
  size: number;
  bufferAddr: number;
  durationMs: number;
}

self.onmessage = (e: MessageEvent<Start>) => {
  const { ram, stop, desc, avail, used, size, bufferAddr, durationMs } = e.data;
  const m = new DataView(ram);
  const stopFlag = new Int32Array(stop);
  for (let i = 0; i < size; i++) {
    const d = desc + vring_desc.size * i;
    m.setBigUint64(d + vring_desc.offsetOf("addr"), BigInt(bufferAddr), true);
    m.setUint32(d + vring_desc.offsetOf("len"), 0, true);
    m.setUint16(d + vring_desc.offsetOf("flags"), VRING_DESC_F_WRITE, true);
    m.setUint16(d + vring_desc.offsetOf("next"), 0, true);
    m.setUint16(avail + vring_avail.offsetOf("ring") + 2 * i, i, true);
  }
  const availIdx = avail + vring_avail.offsetOf("idx");
  const usedIdx = used + vring_used.offsetOf("idx");
  // Atomics (x86 is little-endian, as the ring is): a plain load in this hot loop may be hoisted by the JIT
  // and never see the device's used.idx move.
  const u16 = new Uint16Array(ram);
  const refill = () => Atomics.store(u16, availIdx / 2, (Atomics.load(u16, usedIdx / 2) + size) & 0xffff);
  refill();
  postMessage("ready");
  // Every chain the device hands back is made available again at once: the ring never empties.
  const end = performance.now() + durationMs;
  let refills = 0;
  while (Atomics.load(stopFlag, 0) === 0 && performance.now() < end) {
    refill();
    refills++;
  }
  postMessage({ refills });
};
