// The 16550A model, driven only through BusDevice read/write as the vCPU exit path drives it.

import { describe, expect, test } from "bun:test";
import type { InterruptLine } from "../src/bus.ts";
import { COM1_IRQ } from "../src/arch/x86_64/layout.ts";
import {
  Serial,
  UART_DLL,
  UART_DLM,
  UART_FCR,
  UART_FCR_ENABLE_FIFO,
  UART_IER,
  UART_IER_MSI,
  UART_IER_RDI,
  UART_IER_RLSI,
  UART_IER_THRI,
  UART_IIR,
  UART_IIR_FIFO_ENABLED,
  UART_IIR_MSI,
  UART_IIR_NO_INT,
  UART_IIR_RDI,
  UART_IIR_RLSI,
  UART_IIR_THRI,
  UART_LCR,
  UART_LCR_DLAB,
  UART_LSR,
  UART_LSR_DR,
  UART_LSR_OE,
  UART_LSR_TEMT,
  UART_LSR_THRE,
  UART_MCR,
  UART_MCR_LOOP,
  UART_MSR,
  UART_RX,
  UART_SCR,
  UART_TX,
  type SerialOptions,
} from "../src/devices/serial.ts";

const bytes = (s: string) => new TextEncoder().encode(s);

function setup(options?: SerialOptions) {
  const irq = { gsi: COM1_IRQ, count: 0, trigger() { this.count++; } } satisfies InterruptLine & { count: number };
  const out: number[] = [];
  const uart = new Serial((b) => out.push(...b), irq, options);
  const rd = (offset: number) => {
    const data = new Uint8Array(1);
    uart.read(offset, data);
    return data[0]!;
  };
  const wr = (offset: number, value: number) => uart.write(offset, Uint8Array.of(value));
  const text = () => new TextDecoder().decode(Uint8Array.from(out));
  return { uart, irq, out, rd, wr, text };
}

describe("transmit", () => {
  test("THR writes reach the output sink, after flush()", () => {
    const { uart, wr, text } = setup();
    for (const b of bytes("hello")) wr(UART_TX, b);
    uart.flush();
    expect(text()).toBe("hello");
    expect(uart.counters.bytesOut).toBe(5);
  });

  test("batched bytes are flushed without an explicit flush() once the exit handler returns", async () => {
    const { wr, text } = setup();
    for (const b of bytes("hi")) wr(UART_TX, b);
    await new Promise((r) => setTimeout(r, 0));
    expect(text()).toBe("hi");
  });

  test("the transmitter is always ready: LSR has THRE and TEMT", () => {
    const { rd, wr } = setup();
    expect(rd(UART_LSR) & (UART_LSR_THRE | UART_LSR_TEMT)).toBe(UART_LSR_THRE | UART_LSR_TEMT);
    wr(UART_TX, 0x41);
    expect(rd(UART_LSR) & (UART_LSR_THRE | UART_LSR_TEMT)).toBe(UART_LSR_THRE | UART_LSR_TEMT);
  });
});

describe("receive", () => {
  test("queued input sets LSR.DR and is read back from RBR in order", () => {
    const { uart, rd } = setup();
    expect(rd(UART_LSR) & UART_LSR_DR).toBe(0);
    expect(uart.queueInput(bytes("ab"))).toBe(2);
    expect(rd(UART_LSR) & UART_LSR_DR).toBe(UART_LSR_DR);
    expect(rd(UART_RX)).toBe(0x61);
    expect(rd(UART_LSR) & UART_LSR_DR).toBe(UART_LSR_DR);
    expect(rd(UART_RX)).toBe(0x62);
    expect(rd(UART_LSR) & UART_LSR_DR).toBe(0);
    expect(uart.counters.bytesIn).toBe(2);
  });

  test("input beyond the queue's capacity is dropped, counted, and reported once as an overrun", () => {
    const { uart, rd } = setup();
    const cap = 64 * 1024;
    expect(uart.queueInput(new Uint8Array(cap - 1).fill(0x78))).toBe(cap - 1);
    expect(uart.queueInput(bytes("yz!"))).toBe(1);
    expect(uart.counters.inputDropped).toBe(2);
    expect(uart.counters.bytesIn).toBe(cap);
    expect(rd(UART_LSR) & UART_LSR_OE).toBe(UART_LSR_OE);
    expect(rd(UART_LSR) & UART_LSR_OE).toBe(0); // cleared by the read
    for (let i = 0; i < cap - 1; i++) rd(UART_RX);
    expect(rd(UART_RX)).toBe(0x79); // the "y" that fit; "z!" were dropped
    expect(rd(UART_LSR) & UART_LSR_DR).toBe(0);
  });

  test("the ring buffer wraps around", () => {
    const { uart, rd } = setup({ rxCapacity: 4 });
    uart.queueInput(bytes("abc"));
    rd(UART_RX);
    rd(UART_RX);
    uart.queueInput(bytes("def"));
    expect([rd(UART_RX), rd(UART_RX), rd(UART_RX), rd(UART_RX)]).toEqual([...bytes("cdef")]);
    expect(uart.counters.inputDropped).toBe(0);
  });
});

describe("interrupts", () => {
  test("received data interrupts only when IER.RDI is set", () => {
    const { uart, irq, rd, wr } = setup();
    uart.queueInput(bytes("a"));
    expect(irq.count).toBe(0);
    expect(rd(UART_IIR)).toBe(UART_IIR_NO_INT);

    wr(UART_IER, UART_IER_RDI); // enabling RDI with data already waiting interrupts at once
    expect(irq.count).toBe(1);
    expect(rd(UART_IIR)).toBe(UART_IIR_RDI);

    uart.queueInput(bytes("b")); // still pending: no new edge
    expect(irq.count).toBe(1);
    rd(UART_RX);
    rd(UART_RX);
    expect(rd(UART_IIR)).toBe(UART_IIR_NO_INT);

    uart.queueInput(bytes("c")); // newly pending again
    expect(irq.count).toBe(2);
  });

  test("enabling interrupts with nothing pending does not trigger", () => {
    const { irq, wr, rd } = setup();
    wr(UART_IER, UART_IER_RDI | UART_IER_RLSI | UART_IER_MSI);
    expect(irq.count).toBe(0);
    expect(rd(UART_IIR)).toBe(UART_IIR_NO_INT);
  });

  test("THR empty: raised by enabling THRI and by each THR write, acknowledged by reading IIR", () => {
    const { irq, rd, wr } = setup();
    wr(UART_TX, 0x41); // THRI off: no interrupt
    expect(irq.count).toBe(0);

    wr(UART_IER, UART_IER_THRI);
    expect(irq.count).toBe(1);
    expect(rd(UART_IIR)).toBe(UART_IIR_THRI);
    expect(rd(UART_IIR)).toBe(UART_IIR_NO_INT); // the first read acknowledged it

    wr(UART_TX, 0x42);
    expect(irq.count).toBe(2);
    wr(UART_TX, 0x43); // not acknowledged in between: the write clears it and the empty THR raises it again
    expect(irq.count).toBe(3);
    expect(rd(UART_IIR)).toBe(UART_IIR_THRI);
    expect(rd(UART_IIR)).toBe(UART_IIR_NO_INT);

    wr(UART_IER, UART_IER_THRI); // already on: no re-assertion
    expect(irq.count).toBe(3);
    wr(UART_IER, 0);
    wr(UART_IER, UART_IER_THRI); // off then on: a 16550 re-asserts THR empty (Linux's UART_BUG_THRE test)
    expect(irq.count).toBe(4);
    expect(rd(UART_IIR)).toBe(UART_IIR_THRI);
  });

  test("IIR reports line status > received data > THR empty > modem status", () => {
    const { uart, irq, rd, wr } = setup({ rxCapacity: 2 });
    wr(UART_IER, UART_IER_RLSI | UART_IER_RDI | UART_IER_THRI | UART_IER_MSI); // THR empty
    wr(UART_MCR, UART_MCR_LOOP); // the modem lines all drop: modem status
    uart.queueInput(bytes("abc")); // data, and an overrun: line status
    expect(irq.count).toBe(3);

    expect(rd(UART_IIR)).toBe(UART_IIR_RLSI);
    expect(rd(UART_IIR)).toBe(UART_IIR_RLSI); // reading IIR does not clear line status...
    rd(UART_LSR); // ...reading LSR does
    expect(rd(UART_IIR)).toBe(UART_IIR_RDI);
    rd(UART_RX);
    rd(UART_RX);
    expect(rd(UART_IIR)).toBe(UART_IIR_THRI);
    expect(rd(UART_IIR)).toBe(UART_IIR_MSI);
    rd(UART_MSR);
    expect(rd(UART_IIR)).toBe(UART_IIR_NO_INT);
    expect(irq.count).toBe(3);
  });

  test("IIR bits 6-7 say whether the FIFOs are enabled", () => {
    const { rd, wr } = setup();
    wr(UART_FCR, UART_FCR_ENABLE_FIFO);
    expect(rd(UART_IIR)).toBe(UART_IIR_FIFO_ENABLED | UART_IIR_NO_INT);
    wr(UART_FCR, 0);
    expect(rd(UART_IIR)).toBe(UART_IIR_NO_INT);
  });
});

describe("modem control and loopback", () => {
  test("outside loopback MSR shows a connected terminal: DCD, DSR, CTS", () => {
    const { rd } = setup();
    expect(rd(UART_MSR) & 0xf0).toBe(0xb0);
  });

  test("Linux's autoconfig check: MCR = LOOP|OUT2|RTS gives MSR & 0xF0 == 0x90", () => {
    const { rd, wr } = setup();
    wr(UART_MCR, 0x1a);
    expect(rd(UART_MCR)).toBe(0x1a);
    expect(rd(UART_MSR) & 0xf0).toBe(0x90);
    wr(UART_MCR, UART_MCR_LOOP | 0x0f); // all four outputs: DCD, RI, DSR, CTS
    expect(rd(UART_MSR) & 0xf0).toBe(0xf0);
    wr(UART_MCR, 0);
    expect(rd(UART_MSR) & 0xf0).toBe(0xb0);
  });

  test("in loopback THR writes come back on RBR instead of going out", () => {
    const { uart, rd, wr, out } = setup();
    wr(UART_MCR, UART_MCR_LOOP);
    wr(UART_TX, 0x5a);
    uart.flush();
    expect(out).toEqual([]);
    expect(uart.counters.bytesOut).toBe(0);
    expect(rd(UART_LSR) & UART_LSR_DR).toBe(UART_LSR_DR);
    expect(rd(UART_RX)).toBe(0x5a);
  });
});

describe("registers", () => {
  test("DLAB switches offsets 0 and 1 between RBR/THR/IER and the divisor latch", () => {
    const { uart, rd, wr, out } = setup();
    wr(UART_IER, UART_IER_RDI);
    wr(UART_LCR, UART_LCR_DLAB | 0x03);
    expect(uart.registerName(UART_DLL, true)).toBe("DLL");
    expect(uart.registerName(UART_DLM, false)).toBe("DLM");
    wr(UART_DLL, 0x01);
    wr(UART_DLM, 0x02);
    expect(rd(UART_DLL)).toBe(0x01);
    expect(rd(UART_DLM)).toBe(0x02);
    uart.flush();
    expect(out).toEqual([]); // the DLL write did not transmit

    wr(UART_LCR, 0x03);
    expect(rd(UART_LCR)).toBe(0x03);
    expect(uart.registerName(UART_TX, true)).toBe("THR");
    expect(uart.registerName(UART_RX, false)).toBe("RBR");
    expect(uart.registerName(UART_IER, false)).toBe("IER");
    expect(rd(UART_IER)).toBe(UART_IER_RDI); // untouched by the DLM write
    wr(UART_TX, 0x21);
    uart.flush();
    expect(out).toEqual([0x21]);

    wr(UART_LCR, UART_LCR_DLAB);
    expect(rd(UART_DLL)).toBe(0x01); // the latch kept its value
  });

  test("IER keeps only bits 0-3, as Linux's probe expects of a 16550A", () => {
    const { rd, wr } = setup();
    wr(UART_IER, 0xff);
    expect(rd(UART_IER)).toBe(0x0f);
  });

  test("the scratch register holds what was written", () => {
    const { rd, wr } = setup();
    wr(UART_SCR, 0xa5);
    expect(rd(UART_SCR)).toBe(0xa5);
  });

  test("register names for traces", () => {
    const { uart } = setup();
    expect(uart.registerName(UART_LSR, false)).toBe("LSR");
    expect(uart.registerName(UART_IIR, false)).toBe("IIR");
    expect(uart.registerName(UART_FCR, true)).toBe("FCR");
    expect(uart.registerName(UART_MSR, false)).toBe("MSR");
  });

  test("writes to read-only registers are ignored", () => {
    const { rd, wr } = setup();
    wr(UART_LSR, 0xff);
    wr(UART_MSR, 0x00);
    expect(rd(UART_LSR)).toBe(UART_LSR_THRE | UART_LSR_TEMT);
    expect(rd(UART_MSR) & 0xf0).toBe(0xb0);
  });
});
