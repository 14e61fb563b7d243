// Recording exit traces through real KVM (src/trace/writer.ts), and the line format (format.ts).

import { describe, expect, test } from "bun:test";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { bootProbe } from "../src/boot/probe.ts";
import { PAGE_SIZE, SCRATCH_MMIO_START } from "../src/arch/x86_64/layout.ts";
import { traceToFile, type TraceCloser } from "../src/trace/writer.ts";
import { exitLine, isExit, parseTrace, readTrace, type TraceExit } from "../src/trace/format.ts";
import type { Vm } from "../src/vm.ts";
import { scratchDevice } from "./fixtures/traces/record.ts";
import { kvmTest } from "./support/kvm.ts";

const dir = mkdtempSync(join(tmpdir(), "kindling-trace-"));

async function traced(name: string, path: string, opts: Parameters<typeof bootProbe>[1] = {}) {
  let close: TraceCloser | undefined;
  let vmRef: Vm | undefined;
  const vm = await bootProbe(name, {
    ...opts,
    beforeStart: (v) => {
      opts.beforeStart?.(v);
      vmRef = v;
      close = traceToFile(v, path);
    },
  });
  const timer = setTimeout(() => void vm.stop("test timeout"), 10_000);
  const exit = await vm.exited;
  clearTimeout(timer);
  return { exit, written: await close!(), vm: vmRef! };
}

describe("traceToFile", () => {
  kvmTest("one line per exit: address, size, direction, data, device and register as the guest did them", async () => {
    const path = join(dir, "mmio.jsonl");
    const { exit, written, vm } = await traced("mmio", path, { beforeStart: (v) => v.mmio.register(SCRATCH_MMIO_START, PAGE_SIZE, scratchDevice()) });
    expect(exit.reason).toBe("reset");
    const trace = readTrace(path);
    const exits = trace.records.filter(isExit);
    expect(exits.length).toBe(written);
    expect(trace.header.mmio).toEqual([{ base: SCRATCH_MMIO_START, size: PAGE_SIZE, name: "scratch" }]);
    const mmio = exits.filter((e) => e.reason === "KVM_EXIT_MMIO").map(({ addr, size, dir, data, device, register }) => ({ addr, size, dir, data, device, register }));
    const at = (o: number) => SCRATCH_MMIO_START + o;
    expect(mmio).toEqual([
      { addr: at(0), size: 1, dir: "write", data: 0x11, device: "scratch", register: "reg+0x0" },
      { addr: at(2), size: 2, dir: "write", data: 0x2233, device: "scratch", register: "reg+0x2" },
      { addr: at(4), size: 4, dir: "write", data: 0x44556677, device: "scratch", register: "reg+0x4" },
      { addr: at(8), size: 8, dir: "write", data: "0x8899aabbccddeeff", device: "scratch", register: "reg+0x8" },
      { addr: at(0x10), size: 4, dir: "read", data: 0xfeedc0de, device: "scratch", register: "reg+0x10" },
      { addr: at(0x18), size: 4, dir: "write", data: 0xfeedc0df, device: "scratch", register: "reg+0x18" },
      { addr: at(0x2000), size: 4, dir: "read", data: 0xffffffff, device: undefined, register: undefined },
    ]);
    const thr = exits.filter((e) => e.register === "THR").map((e) => String.fromCharCode(Number(e.data))).join("");
    expect(thr).toBe("mmio: read 0xfeedc0de\nmmio: unclaimed read 0xffffffff\n");
    expect(exits.at(-1)).toMatchObject({ reason: "KVM_EXIT_IO", dir: "out", data: 0xfe, device: "i8042", register: "COMMAND" });
    const times = exits.map((e) => e.t);
    expect(times).toEqual([...times].sort((a, b) => a - b));
    expect(exits.every((e) => e.handleUs >= 0 && e.vcpu === 0)).toBe(true);
    // Closed: the vCPU's tracer is gone again.
    expect(vm.vcpus[0]!.tracer).toBeUndefined();
  });

  kvmTest("host input on the serial console is recorded between the exits it arrived between", async () => {
    const path = join(dir, "irq.jsonl");
    let serial: Vm["serial"] | undefined;
    let typed = false;
    let text = "";
    const { exit } = await traced("irq", path, {
      beforeStart: (v) => (serial = v.serial),
      consoleOutput: (b) => {
        text += new TextDecoder().decode(b);
        if (!typed && text.includes("irq: waiting")) {
          typed = true;
          serial!.queueInput(new TextEncoder().encode("k"));
        }
      },
    });
    expect(exit.reason).toBe("reset");
    const records = readTrace(path).records;
    const input = records.findIndex((r) => "event" in r);
    const rbr = records.findIndex((r) => isExit(r) && r.register === "RBR");
    expect(records[input]).toMatchObject({ event: "input", device: "8250", bytes: "6b" });
    expect(input).toBeLessThan(rbr);
    expect(records[rbr]).toMatchObject({ dir: "in", data: 0x6b });
    // The wrapper is removed when the trace closes.
    expect(Object.hasOwn(serial!, "queueInput")).toBe(false);
  });

  kvmTest("a trace file that cannot be created is a clear error", async () => {
    const vm = await bootProbe("hello", { beforeStart: (v) => expect(() => traceToFile(v, join(dir, "no", "such", "dir.jsonl"))).toThrow(/cannot write the exit trace to .*no\/such\/dir\.jsonl/) });
    await vm.exited;
  });
});

describe("trace lines", () => {
  test("an exit is one JSON object with the ExitRecord fields; data too wide for a double becomes hex", () => {
    const line = exitLine({ t: 1.23456, vcpu: 1, reason: "KVM_EXIT_MMIO", addr: 0xc0001000, size: 8, dir: "write", data: 0xfedcba9876543210n, device: "virtio-blk", register: "QueueNotify", handleUs: 2.345 });
    expect(line).toBe('{"t":1.235,"vcpu":1,"reason":"KVM_EXIT_MMIO","addr":3221229568,"size":8,"dir":"write","data":"0xfedcba9876543210","device":"virtio-blk","register":"QueueNotify","handleUs":2.3}');
    const header = JSON.stringify({ kindling_trace: 1, started: "now", vcpus: 2, ram: [], pio: [], mmio: [], virtio: [] });
    const back = parseTrace(`${header}\n${line}\n`).records[0] as TraceExit;
    expect(back).toMatchObject({ line: 2, data: "0xfedcba9876543210", register: "QueueNotify" });
  });
});
