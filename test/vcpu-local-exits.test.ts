// Exits the vCPU's own thread completes (src/vcpu/local.ts): the exits probe's 2 x EXIT_LOOPS accesses to
// two `counter` devices are all counted, all on the vCPU thread, and all in the vCPU's exit counts; with an
// exit trace attached every one of them reaches the main thread and the trace instead; two threads writing
// one counter lose nothing; and the worker-side decoder completes exactly the accesses it should.

import { describe, expect, test } from "bun:test";
import { bootProbe } from "../src/boot/probe.ts";
import { PAGE_SIZE, POST_CODE_PORT, SCRATCH_MMIO_START, SCRATCH_PORT } from "../src/arch/x86_64/layout.ts";
import { EXIT_LOOPS } from "../guest/probes/probes.ts";
import { KVM_EXIT, KVM_EXIT_IO_OUT, KVM_EXIT_IO_IN } from "../src/kvm/uapi.ts";
import { OFF } from "../src/vcpu/exit.ts";
import { LocalExits, ModelServer } from "../src/vcpu/local.ts";
import type { ExitRecord } from "../src/vcpu/vcpu.ts";
import { Stopwatch } from "../bench/exit-latency.ts";
import { kvmTest } from "./support/kvm.ts";

async function exitsProbe(opts: { trace?: ExitRecord[] } = {}) {
  const pio = new Stopwatch("test-pio");
  const mmio = new Stopwatch("test-mmio");
  const vm = await bootProbe("exits", {
    beforeStart: (v) => {
      v.pio.register(SCRATCH_PORT, 4, pio);
      v.mmio.register(SCRATCH_MMIO_START, PAGE_SIZE, mmio);
      if (opts.trace) v.vcpus[0]!.tracer = (r) => opts.trace!.push(r);
    },
  });
  const timer = setTimeout(() => void vm.stop("test timeout"), 120_000);
  const end = await vm.exited;
  clearTimeout(timer);
  expect(end.reason).toBe("reset");
  return { pio, mmio, vcpu: vm.vcpus[0]! };
}

describe("exits completed on the vCPU thread", () => {
  kvmTest("every access of the exits probe is counted, on the vCPU thread, and in the exit counts", async () => {
    const { pio, mmio, vcpu } = await exitsProbe();
    expect(pio.count).toBe(EXIT_LOOPS);
    expect(mmio.count).toBe(EXIT_LOOPS);
    expect(Object.fromEntries(vcpu.thread.localExitCounts())).toEqual({ [KVM_EXIT.IO]: EXIT_LOOPS, [KVM_EXIT.MMIO]: EXIT_LOOPS });
    // The i8042 reset at the end still reached the main thread: one more port exit than the loop's.
    expect(vcpu.exitCounts.get(KVM_EXIT.IO)).toBe(EXIT_LOOPS + 1);
    expect(vcpu.exitCounts.get(KVM_EXIT.MMIO)).toBe(EXIT_LOOPS);
  }, 180_000);

  kvmTest("with an exit trace attached, every exit goes to the main thread and into the trace", async () => {
    const trace: ExitRecord[] = [];
    const { pio, mmio, vcpu } = await exitsProbe({ trace });
    expect(pio.count).toBe(EXIT_LOOPS);
    expect(mmio.count).toBe(EXIT_LOOPS);
    expect(Object.fromEntries(vcpu.thread.localExitCounts())).toEqual({ [KVM_EXIT.IO]: 0, [KVM_EXIT.MMIO]: 0 });
    expect(trace.filter((r) => r.addr === SCRATCH_PORT && r.device === "test-pio").length).toBe(EXIT_LOOPS);
    expect(trace.filter((r) => r.addr === SCRATCH_MMIO_START && r.device === "test-mmio").length).toBe(EXIT_LOOPS);
  }, 180_000);
});

test("two threads writing one counter: every write counted", async () => {
  const model = { kind: "counter", state: new SharedArrayBuffer(24) } as const;
  const n = 20_000;
  const src = `
    import { ModelServer } from "${import.meta.dir}/../src/vcpu/local.ts";
    self.onmessage = (e) => {
      const s = new ModelServer(e.data);
      const d = new Uint8Array(4);
      for (let i = 0; i < ${n}; i++) s.serve(true, d);
      postMessage("done");
    };`;
  const url = URL.createObjectURL(new Blob([src], { type: "application/typescript" }));
  const workers = [new Worker(url), new Worker(url)];
  await Promise.all(workers.map((w) => new Promise<void>((resolve) => {
    w.onmessage = () => resolve();
    w.postMessage(model);
  })));
  for (const w of workers) w.terminate();
  const c = new BigInt64Array(model.state);
  expect(c[0]).toBe(BigInt(2 * n));
  expect(c[2]! >= c[1]!).toBe(true);
});

test("the worker's decoder completes local accesses only, as the device kind says", () => {
  const run = new ArrayBuffer(4096);
  const dv = new DataView(run);
  const bytes = new Uint8Array(run);
  const counter = { kind: "counter", state: new SharedArrayBuffer(24) } as const;
  const local = new LocalExits(
    {
      run: { addr: 0, size: 4096 }, off: OFF, exitIo: KVM_EXIT.IO, exitMmio: KVM_EXIT.MMIO, ioOut: KVM_EXIT_IO_OUT,
      pio: [{ base: POST_CODE_PORT, size: 1, model: { kind: "sink", fill: 0xff } }, { base: SCRATCH_PORT, size: 4, model: counter }],
      mmio: [{ base: SCRATCH_MMIO_START, size: PAGE_SIZE, model: counter }],
      counts: new SharedArrayBuffer(8),
    },
    run,
  );
  const io = (port: number, dir: number, size: number, count: number) => {
    dv.setUint32(OFF.exit_reason, KVM_EXIT.IO, true);
    dv.setUint16(OFF.io_port, port, true);
    bytes[OFF.io_direction] = dir;
    bytes[OFF.io_size] = size;
    dv.setUint32(OFF.io_count, count, true);
    dv.setBigUint64(OFF.io_data_offset, 2048n, true);
    bytes.fill(0x11, 2048, 2048 + 64);
    return local.serve();
  };
  expect(io(POST_CODE_PORT, KVM_EXIT_IO_IN, 1, 1)).toBe(true);
  expect(bytes[2048]).toBe(0xff); // a sink reads as all ones
  expect(io(SCRATCH_PORT, KVM_EXIT_IO_OUT, 4, 3)).toBe(true); // rep outsd: three accesses
  expect(new BigInt64Array(counter.state)[0]).toBe(3n);
  expect(io(0x3f8, KVM_EXIT_IO_OUT, 1, 1)).toBe(false); // the UART: the main thread's
  dv.setUint32(OFF.exit_reason, KVM_EXIT.MMIO, true);
  dv.setBigUint64(OFF.mmio_phys_addr, BigInt(SCRATCH_MMIO_START + 8), true);
  dv.setUint32(OFF.mmio_len, 4, true);
  bytes[OFF.mmio_is_write] = 1;
  expect(local.serve()).toBe(true);
  dv.setBigUint64(OFF.mmio_phys_addr, BigInt(SCRATCH_MMIO_START + PAGE_SIZE), true); // just past the window
  expect(local.serve()).toBe(false);
  dv.setUint32(OFF.exit_reason, KVM_EXIT.HLT, true);
  expect(local.serve()).toBe(false);
  expect(new BigInt64Array(counter.state)[0]).toBe(4n);
  expect([...new Int32Array(local["counts"].buffer)]).toEqual([2, 1]);
});

test("a sink and a counter read and write the same through ModelServer on any thread", () => {
  const sink = new ModelServer({ kind: "sink", fill: 0xff });
  const d = new Uint8Array(2);
  sink.serve(false, d);
  expect([...d]).toEqual([0xff, 0xff]);
});
