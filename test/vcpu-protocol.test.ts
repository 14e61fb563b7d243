// The vCPU worker's init message travels flattened (src/vcpu/protocol.ts, encodeInit): it must come back
// as the same VcpuWorkerInit, ranges, models and shared buffers included.

import { expect, test } from "bun:test";
import { decodeInit, encodeInit, type VcpuWorkerInit } from "../src/vcpu/protocol.ts";

test("the init message decodes to what was encoded", () => {
  const control = new SharedArrayBuffer(12);
  const counts = new SharedArrayBuffer(8);
  const counter = new SharedArrayBuffer(24);
  const init: VcpuWorkerInit = {
    fd: 17, control, runRequest: 0xae80, kickSignal: 40, hold: true,
    local: {
      run: { addr: 0x7f12_3456_7000, size: 12288 },
      off: { exit_reason: 8, io_direction: 32, io_size: 33, io_port: 34, io_count: 36, io_data_offset: 40, mmio_phys_addr: 32, mmio_data: 40, mmio_len: 48, mmio_is_write: 52 },
      exitIo: 2, exitMmio: 6, ioOut: 1,
      pio: [{ base: 0x80, size: 1, model: { kind: "sink", fill: 0xff } }, { base: 0x3f8, size: 4, model: { kind: "counter", state: counter } }],
      mmio: [{ base: 0xd000_0000, size: 4096, model: { kind: "sink", fill: 0 } }],
      counts,
    },
  };
  const back = decodeInit(structuredClone(encodeInit(init)));
  expect(back).toEqual(init);
  const model = back.local.pio[1]!.model;
  expect(model.kind === "counter" && model.state).toBeInstanceOf(SharedArrayBuffer);
  expect(decodeInit(encodeInit({ ...init, hold: false, local: { ...init.local, pio: [], mmio: [] } })).local.pio).toEqual([]);
});
