// Replaying recorded traces against fresh device models, without /dev/kvm (src/trace/replay.ts).
// The fixtures were recorded through KVM by test/fixtures/traces/record.ts.

import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { isExit, parseTrace, readTrace, TraceFormatError, type Trace } from "../src/trace/format.ts";
import { replayTrace } from "../src/trace/replay.ts";
import { Serial, UART_LSR, UART_LSR_TEMT } from "../src/devices/serial.ts";
import type { InterruptLine } from "../src/bus.ts";

const fixture = (name: string) => readTrace(join(import.meta.dir, "fixtures", "traces", name));

/** A UART whose line status register forgets "transmitter empty": a deliberately broken model. */
class ForgetfulSerial extends Serial {
  constructor(irq: InterruptLine) {
    super(() => {}, irq);
  }
  override read(offset: number, data: Uint8Array): void {
    super.read(offset, data);
    if (offset === UART_LSR) data[0]! &= ~UART_LSR_TEMT;
  }
}

describe("trace replay", () => {
  test("a Linux boot's device accesses replay with every read answering as recorded", () => {
    const trace = fixture("linux-quiet.jsonl");
    const report = replayTrace(trace);
    expect(report.mismatch).toBeUndefined();
    expect(report.accesses).toBeGreaterThan(500);
    // The 8250 driver's probing (LSR, IIR, MSR, scratch tests) and the virtio drivers' register reads.
    const reads = trace.records.filter(isExit).filter((r) => r.dir === "in" || r.dir === "read");
    const virtioReads = reads.filter((r) => r.device?.startsWith("virtio") && r.register !== "InterruptStatus");
    expect(virtioReads.length).toBeGreaterThan(20);
    expect(report.compared).toBe(reads.length - report.skipped["virtio InterruptStatus reads (depend on ring processing)"]!);
  });

  test("the CMOS RTC is in the replay set (the Vm's legacy devices): CMOS RAM reads compared, clock reads skipped", () => {
    const header = JSON.stringify(fixture("irq.jsonl").header);
    const io = (addr: number, dir: "in" | "out", data: number) =>
      JSON.stringify({ t: 1, vcpu: 0, reason: "KVM_EXIT_IO", addr, size: 1, dir, data, device: "rtc", handleUs: 1 });
    const lines = [
      io(0x70, "out", 0x0b), io(0x71, "in", 0x02), // status B: 24-hour, BCD
      io(0x70, "out", 0x00), io(0x71, "in", 0x37), // seconds: the recorded run's clock
    ];
    const report = replayTrace(parseTrace([header, ...lines].join("\n"), "t"));
    expect(report.mismatch).toBeUndefined();
    expect(report.compared).toBe(1);
    expect(report.skipped["CMOS clock reads (the host's time)"]).toBe(1);
  });

  test("a changed device model is caught at the first read it answers differently", () => {
    const trace = fixture("linux-quiet.jsonl");
    const firstLsrRead = trace.records.find((r) => isExit(r) && r.register === "LSR" && r.dir === "in")!;
    const report = replayTrace(trace, { serial: (irq) => new ForgetfulSerial(irq) });
    expect(report.mismatch?.line).toBe(firstLsrRead.line);
    expect(report.mismatch?.message).toBe("1-byte in of 8250.LSR at 0x3fd: recorded 0x60, the model answers 0x20");
  });

  test("host input is part of the record: without the typed key, the guest's RBR read differs", () => {
    const trace = fixture("irq.jsonl");
    expect(replayTrace(trace).mismatch).toBeUndefined();
    const withoutInput: Trace = { ...trace, records: trace.records.filter((r) => !("event" in r)) };
    expect(replayTrace(withoutInput).mismatch?.message).toBe("1-byte in of 8250.RBR at 0x3f8: recorded 0x6b, the model answers 0x0");
  });

  test("virtio transport registers are compared: a different feature set in the header is caught", () => {
    const trace = fixture("linux-quiet.jsonl");
    const virtio = trace.header.virtio.map((v) => (v.name === "virtio-rng" ? { ...v, features: "0x130000001" } : v));
    const report = replayTrace({ ...trace, header: { ...trace.header, virtio } });
    expect(report.mismatch?.record.register).toBe("DeviceFeatures");
    expect(report.mismatch?.record.device).toBe("virtio-rng");
  });

  test("accesses to a device without a model are skipped and counted; an unclaimed read still compares", () => {
    const report = replayTrace(fixture("mmio.jsonl"));
    expect(report.mismatch).toBeUndefined();
    expect(report.skipped).toEqual({ "accesses to scratch (no model)": 6 });
    expect(report.compared).toBe(1); // the read nobody claims: all ones
  });

  test("a device in a different place is reported, not replayed", () => {
    const trace = fixture("irq.jsonl");
    const moved = trace.records.map((r) => ("device" in r && r.device === "i8042" ? { ...r, device: "8250" } : r));
    const report = replayTrace({ ...trace, records: moved });
    expect(report.mismatch?.message).toBe("pio 0x64: the trace has 8250 there, the replay set has i8042");
  });
});

describe("trace files are checked as input", () => {
  const header = JSON.stringify(fixture("irq.jsonl").header);
  test.each([
    ["an empty file", "", "t: empty; a trace starts with its header line"],
    ["a foreign header", '{"hello":1}', "t:1: not a kindling trace header"],
    ["a line that is not JSON", `${header}\nnot json`, "t:2: not a JSON object"],
    ["a negative address", `${header}\n{"t":1,"vcpu":0,"reason":"KVM_EXIT_IO","addr":-5,"handleUs":1}`, "t:2: addr:"],
    ["a 16-byte access", `${header}\n{"t":1,"vcpu":0,"reason":"KVM_EXIT_IO","size":16,"handleUs":1}`, "t:2: size:"],
    ["input bytes that are not hex", `${header}\n{"t":1,"event":"input","device":"8250","bytes":"zz"}`, "t:2: bytes:"],
  ])("%s is refused, naming the line", (_what, text, message) => {
    expect(() => parseTrace(text, "t")).toThrow(TraceFormatError);
    expect(() => parseTrace(text, "t")).toThrow(message);
  });
});
