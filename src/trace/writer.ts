// Recording an exit trace: traceToFile(vm, path) sets every vCPU's tracer (src/vcpu/vcpu.ts) and writes the
// records to `path` as JSON Lines (format.ts). Call it before the vCPUs start (bootProbe's `beforeStart`)
// to see every exit; it returns the function that stops tracing and closes the file.
//
// The exit path only appends the record to an array: a vCPU waits for its exit to be handled, so nothing
// slow may happen there. The array is turned into text and written out in batches, when it is long or when
// a timer says the file should catch up. Without a tracer the vCPU loop builds no record at all.
//
// The serial console's input is traced too: it changes what the guest reads from the UART, and a replay
// (replay.ts) has to feed the same bytes between the same two exits.

import { closeSync, openSync, writeSync } from "node:fs";
import type { Vm } from "../vm.ts";
import type { ExitRecord } from "../vcpu/vcpu.ts";
import { CONFIG_SNAPSHOT_SIZE, TRACE_VERSION, exitLine, inputLine, type TraceHeader } from "./format.ts";

/** Records per write, and the longest a record waits before it reaches the file. */
const BATCH_RECORDS = 4096;
const FLUSH_INTERVAL_MS = 250;

/** Stops tracing, writes what is left and closes the file; resolves with the number of exits written. */
export type TraceCloser = () => Promise<number>;

/** What the VM looks like now: the trace's first line. */
export function traceHeaderOf(vm: Vm): TraceHeader {
  return {
    kindling_trace: TRACE_VERSION,
    started: new Date().toISOString(),
    vcpus: vm.vcpus.length,
    ram: vm.memory.regions.map((r) => ({ gpa: r.gpa, size: r.bytes.byteLength })),
    pio: vm.pio.list(),
    mmio: vm.mmio.list(),
    virtio: vm.virtio.map((a) => {
      const config = new Uint8Array(CONFIG_SNAPSHOT_SIZE);
      a.transport.device.readConfig(0, config);
      return {
        name: a.transport.name, addr: a.addr, irq: a.irq, deviceId: a.transport.device.deviceId,
        features: `0x${a.transport.offeredFeatures.toString(16)}`, queueMaxSizes: [...a.transport.device.queueMaxSizes],
        config: Buffer.from(config).toString("hex"),
      };
    }),
  };
}

/** The trace file could not be created. */
export class TraceFileError extends Error {
  override name = "TraceFileError";
}

export function traceToFile(vm: Vm, path: string): TraceCloser {
  let fd: number;
  try {
    fd = openSync(path, "w");
  } catch (e) {
    throw new TraceFileError(`cannot write the exit trace to ${path}: ${(e as Error).message}`);
  }
  writeSync(fd, JSON.stringify(traceHeaderOf(vm)) + "\n");
  const epoch = performance.now();
  // Records wait here as objects (exits) or finished lines (input), in the order they happened.
  let pending: (ExitRecord | string)[] = [];
  let exits = 0;

  const flush = () => {
    if (pending.length === 0) return;
    const batch = pending;
    pending = [];
    writeSync(fd, batch.map((r) => (typeof r === "string" ? r : exitLine(r))).join("\n") + "\n");
  };
  // A full batch is written from a task of its own: the vCPU this exit came from is back in the guest by then.
  let flushQueued = false;
  const flushSoon = () => {
    flushQueued = false;
    flush();
  };
  const tracer = (rec: ExitRecord) => {
    exits++;
    if (pending.push(rec) >= BATCH_RECORDS && !flushQueued) {
      flushQueued = true;
      setImmediate(flushSoon);
    }
  };
  const timer = setInterval(flush, FLUSH_INTERVAL_MS);
  timer.unref();

  for (const v of vm.vcpus) {
    v.tracerEpoch = epoch;
    v.tracer = tracer;
  }
  // Wrap the serial console's input queue for as long as the trace runs (restored by the closer).
  const serial = vm.serial;
  const queueInput = serial.queueInput;
  const ownMethod = Object.hasOwn(serial, "queueInput");
  serial.queueInput = (bytes: Uint8Array) => {
    pending.push(inputLine(performance.now() - epoch, serial.name, bytes));
    return queueInput.call(serial, bytes);
  };

  let closed: Promise<number> | undefined;
  return () =>
    (closed ??= Promise.resolve().then(() => {
      for (const v of vm.vcpus) if (v.tracer === tracer) v.tracer = undefined;
      if (ownMethod) serial.queueInput = queueInput;
      else delete (serial as { queueInput?: unknown }).queueInput; // the class's method shows through again
      clearInterval(timer);
      flush();
      closeSync(fd);
      return exits;
    }));
}
