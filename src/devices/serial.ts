// COM1: a 16550A UART, the serial port Linux's `console=ttyS0` writes its log to and reads the shell from.
//
// The guest drives eight byte-wide registers at the port base (COM1_PORT in layout.ts). Register and bit
// names are those of Linux's include/uapi/linux/serial_reg.h, which drivers/tty/serial/8250 uses; the
// behaviour follows the National Semiconductor / TI PC16550D datasheet ("Register Description").
//
// What is modelled, and what is not:
//   - The transmitter is infinitely fast: LSR always says THR empty (THRE) and transmitter empty (TEMT),
//     and every byte written to THR goes straight to the host's output sink (batched, see `flush`).
//   - The receive FIFO is the host's input queue, bounded (64 KiB by default). Bytes that do not fit are
//     dropped, counted, and reported to the guest as an overrun error (LSR.OE), as a real UART would.
//   - Baud rate, word length, parity and FIFO trigger levels are stored where the guest can read them back,
//     and otherwise ignored: there is no wire.
//   - FCR's "clear receive FIFO" does not discard the host's input queue, so what the user typed before the
//     guest opened the port is not lost. (Linux clears the FIFOs every time it opens ttyS0.)
//   - Interrupts are edges on an InterruptLine (an irqfd on a real VM): the line is triggered each time a
//     new interrupt condition becomes pending, never while nothing is pending. Linux's handler then reads
//     IIR until it says "no interrupt", so one edge per new condition is enough.

import { bool, checkKind, fromBase64, int, toBase64, type Stateful } from "./state.ts";
import type { BusDevice, InterruptLine } from "../bus.ts";

// ---- Register offsets from the port base (serial_reg.h) ----
// Offsets 0 and 1 mean something else while LCR.DLAB is set: the divisor latch.
export const UART_RX = 0; // in:  receive buffer (RBR)
export const UART_TX = 0; // out: transmit holding register (THR)
export const UART_DLL = 0; // DLAB: divisor latch, low byte
export const UART_DLM = 1; // DLAB: divisor latch, high byte
export const UART_IER = 1; // interrupt enable
export const UART_IIR = 2; // in:  interrupt identification
export const UART_FCR = 2; // out: FIFO control
export const UART_LCR = 3; // line control
export const UART_MCR = 4; // modem control
export const UART_LSR = 5; // line status
export const UART_MSR = 6; // modem status
export const UART_SCR = 7; // scratch
/** How many ports the UART decodes: register it on the bus as (COM1_PORT, UART_REGISTER_COUNT). */
export const UART_REGISTER_COUNT = 8;

// ---- IER: which conditions may interrupt ----
export const UART_IER_RDI = 0x01; // received data available
export const UART_IER_THRI = 0x02; // transmit holding register empty
export const UART_IER_RLSI = 0x04; // receiver line status (errors)
export const UART_IER_MSI = 0x08; // modem status change
/** A 16550A implements IER bits 0-3 only; the rest read as 0 (Linux's probe checks this: bit 6 means XScale). */
const UART_IER_MASK = 0x0f;

// ---- IIR: the highest-priority pending interrupt (datasheet table "Interrupt Control Functions") ----
export const UART_IIR_NO_INT = 0x01;
export const UART_IIR_MSI = 0x00; // priority 4 (lowest): modem status; cleared by reading MSR
export const UART_IIR_THRI = 0x02; // priority 3: THR empty; cleared by reading IIR or writing THR
export const UART_IIR_RDI = 0x04; // priority 2: received data; cleared by reading RBR until empty
export const UART_IIR_RLSI = 0x06; // priority 1 (highest): line status; cleared by reading LSR
/** IIR bits 6-7 both set: "FIFOs enabled". Linux's autoconfig reads them to tell a 16550A from an 8250. */
export const UART_IIR_FIFO_ENABLED = 0xc0;

// ---- FCR ----
export const UART_FCR_ENABLE_FIFO = 0x01;

// ---- LCR ----
export const UART_LCR_DLAB = 0x80; // divisor latch access bit

// ---- MCR ----
export const UART_MCR_DTR = 0x01;
export const UART_MCR_RTS = 0x02;
export const UART_MCR_OUT1 = 0x04;
export const UART_MCR_OUT2 = 0x08;
export const UART_MCR_LOOP = 0x10;
/** A 16550A has MCR bits 0-4; bits 5-7 read as 0. */
const UART_MCR_MASK = 0x1f;

// ---- LSR ----
export const UART_LSR_DR = 0x01; // data ready
export const UART_LSR_OE = 0x02; // overrun error
export const UART_LSR_THRE = 0x20; // transmit holding register empty
export const UART_LSR_TEMT = 0x40; // transmitter empty
/** The error bits that raise a line-status interrupt and clear when LSR is read (we only ever set OE). */
const UART_LSR_ERRORS = 0x1e; // OE | PE | FE | BI

// ---- MSR: low nibble = "changed since last read", high nibble = the current input lines ----
export const UART_MSR_DCTS = 0x01;
export const UART_MSR_DDSR = 0x02;
export const UART_MSR_TERI = 0x04; // trailing edge of RI (1 -> 0)
export const UART_MSR_DDCD = 0x08;
export const UART_MSR_CTS = 0x10;
export const UART_MSR_DSR = 0x20;
export const UART_MSR_RI = 0x40;
export const UART_MSR_DCD = 0x80;
/** The lines when not in loopback: a terminal is attached and ready (carrier, data set ready, clear to send). */
const MSR_CONNECTED = UART_MSR_DCD | UART_MSR_DSR | UART_MSR_CTS;

/** 115200 / 9600: the divisor for 9600 baud with the PC's 1.8432 MHz clock; the guest reprograms it anyway. */
const DEFAULT_DIVISOR = 12;
const DEFAULT_RX_CAPACITY = 64 * 1024;
const TX_BATCH_SIZE = 4096;

// Pending interrupt sources, as bits in priority order (used to spot *newly* pending ones).
const PENDING_LINE_STATUS = 1;
const PENDING_RX = 2;
const PENDING_THR = 4;
const PENDING_MODEM = 8;

export interface SerialCounters {
  /** Bytes the guest wrote to THR that went to the output sink (loopback bytes excluded). */
  bytesOut: number;
  /** Host bytes accepted into the receive queue by `queueInput` (loopback bytes excluded). */
  bytesIn: number;
  /** Bytes dropped because the receive queue was full. */
  inputDropped: number;
  /** Edges raised on the interrupt line. */
  interrupts: number;
}

export interface SerialOptions {
  /** Receive queue size in bytes (default 64 KiB). */
  rxCapacity?: number;
}

/** The UART's registers, latched conditions, the bytes received and not yet read, and output not yet flushed. */
export type SerialState = {
  kind: "8250";
  ier: number;
  lcr: number;
  mcr: number;
  scr: number;
  dll: number;
  dlm: number;
  fifoEnabled: boolean;
  lsrErrors: number;
  msrDeltas: number;
  thrEmptyPending: boolean;
  /** The receive queue, oldest byte first (base64). */
  rx: string;
  /** Transmitted bytes batched for the output sink (base64). */
  tx: string;
  counters: SerialCounters;
};

export class Serial implements BusDevice, Stateful<SerialState> {
  readonly name = "8250";
  readonly counters: Readonly<SerialCounters>;
  private readonly count: SerialCounters = { bytesOut: 0, bytesIn: 0, inputDropped: 0, interrupts: 0 };

  // Registers.
  private ier = 0;
  private lcr = 0;
  private mcr = 0;
  private scr = 0;
  private dll = DEFAULT_DIVISOR & 0xff;
  private dlm = DEFAULT_DIVISOR >> 8;
  private fifoEnabled = false;
  /** LSR error bits latched since the last LSR read. */
  private lsrErrors = 0;
  /** MSR delta bits latched since the last MSR read. */
  private msrDeltas = 0;
  /** "THR empty" interrupt condition: set when THR empties, cleared by writing THR or by reading it in IIR. */
  private thrEmptyPending = false;

  // The receive queue: a ring buffer of rxCapacity bytes, allocated when the first byte arrives. Most VMs
  // never receive input, and a 64 KiB allocation while a VM starts is what made the JavaScript heap collect
  // garbage before the guest's first instruction (bench/README.md, start to first instruction).
  private readonly rxCapacity: number;
  private rxRing?: Uint8Array;
  private get rx(): Uint8Array {
    return (this.rxRing ??= new Uint8Array(this.rxCapacity));
  }
  private rxHead = 0;
  private rxCount = 0;

  // Transmitted bytes waiting to be handed to the sink.
  private readonly tx = new Uint8Array(TX_BATCH_SIZE);
  private txLength = 0;
  private flushQueued = false;
  private readonly flushTask = () => {
    this.flushQueued = false;
    this.flush();
  };

  constructor(
    /** Receives what the guest transmits. The array is the sink's to keep. */
    private readonly output: (bytes: Uint8Array) => void,
    private readonly irq: InterruptLine,
    options: SerialOptions = {},
  ) {
    const capacity = options.rxCapacity ?? DEFAULT_RX_CAPACITY;
    if (!Number.isSafeInteger(capacity) || capacity < 1) {
      throw new RangeError(`serial: rxCapacity must be a positive integer, got ${capacity}`);
    }
    this.rxCapacity = capacity;
    this.counters = this.count;
  }

  // ---- The host side ----

  /** Append host input (keyboard, pipe) to the receive queue. Returns how many bytes fit; the rest are dropped. */
  queueInput(bytes: Uint8Array): number {
    const before = this.pending();
    const accepted = this.receive(bytes);
    this.count.bytesIn += accepted;
    this.raiseNew(before);
    return accepted;
  }

  /** Hand any transmitted bytes still batched to the output sink now. */
  flush(): void {
    if (this.txLength === 0) return;
    const bytes = this.tx.slice(0, this.txLength);
    this.txLength = 0;
    this.output(bytes);
  }

  /** Bytes waiting in the receive queue. */
  get rxPending(): number {
    return this.rxCount;
  }

  // ---- State (src/devices/state.ts) ----

  describe(): SerialState {
    const rx = new Uint8Array(this.rxCount);
    for (let i = 0; i < this.rxCount; i++) rx[i] = this.rx[(this.rxHead + i) % this.rxCapacity]!;
    return {
      kind: "8250", ier: this.ier, lcr: this.lcr, mcr: this.mcr, scr: this.scr, dll: this.dll, dlm: this.dlm,
      fifoEnabled: this.fifoEnabled, lsrErrors: this.lsrErrors, msrDeltas: this.msrDeltas, thrEmptyPending: this.thrEmptyPending,
      rx: toBase64(rx), tx: toBase64(this.tx.subarray(0, this.txLength)), counters: { ...this.count },
    };
  }

  restore(s: SerialState): void {
    const D = this.name;
    checkKind(D, s, "8250");
    const rx = fromBase64(D, "rx", s.rx, this.rxCapacity);
    const tx = fromBase64(D, "tx", s.tx, TX_BATCH_SIZE);
    const byte = (f: "ier" | "lcr" | "mcr" | "scr" | "dll" | "dlm" | "lsrErrors" | "msrDeltas") => int(D, f, s[f], 0, 0xff);
    const [ier, lcr, mcr, scr, dll, dlm, lsrErrors, msrDeltas] = [byte("ier"), byte("lcr"), byte("mcr"), byte("scr"), byte("dll"), byte("dlm"), byte("lsrErrors"), byte("msrDeltas")];
    const fifoEnabled = bool(D, "fifoEnabled", s.fifoEnabled);
    const thrEmptyPending = bool(D, "thrEmptyPending", s.thrEmptyPending);
    const counters = Object.fromEntries((["bytesOut", "bytesIn", "inputDropped", "interrupts"] as const).map((k) => [k, int(D, `counters.${k}`, s.counters?.[k], 0, Number.MAX_SAFE_INTEGER)]));
    Object.assign(this, { ier, lcr, mcr, scr, dll, dlm, fifoEnabled, lsrErrors, msrDeltas, thrEmptyPending });
    Object.assign(this.count, counters);
    if (rx.byteLength > 0) this.rx.set(rx);
    this.rxHead = 0;
    this.rxCount = rx.byteLength;
    this.tx.set(tx);
    this.txLength = tx.byteLength;
    if (this.txLength > 0 && !this.flushQueued) {
      this.flushQueued = true;
      queueMicrotask(this.flushTask);
    }
  }

  // ---- The guest side: BusDevice ----

  /** Wider accesses are split into byte accesses to consecutive registers, as the ISA bus would. */
  read(offset: number, data: Uint8Array): void {
    for (let i = 0; i < data.length; i++) data[i] = this.readRegister(offset + i);
  }

  write(offset: number, data: Uint8Array): void {
    for (let i = 0; i < data.length; i++) this.writeRegister(offset + i, data[i]!);
  }

  registerName(offset: number, isWrite: boolean): string | undefined {
    const dlab = (this.lcr & UART_LCR_DLAB) !== 0;
    switch (offset) {
      case UART_RX:
        return dlab ? "DLL" : isWrite ? "THR" : "RBR";
      case UART_IER:
        return dlab ? "DLM" : "IER";
      case UART_IIR:
        return isWrite ? "FCR" : "IIR";
      case UART_LCR:
        return "LCR";
      case UART_MCR:
        return "MCR";
      case UART_LSR:
        return "LSR";
      case UART_MSR:
        return "MSR";
      case UART_SCR:
        return "SCR";
      default:
        return undefined;
    }
  }

  private readRegister(offset: number): number {
    const dlab = (this.lcr & UART_LCR_DLAB) !== 0;
    switch (offset) {
      case UART_RX:
        return dlab ? this.dll : this.popRx();
      case UART_IER:
        return dlab ? this.dlm : this.ier;
      case UART_IIR:
        return this.readIir();
      case UART_LCR:
        return this.lcr;
      case UART_MCR:
        return this.mcr;
      case UART_LSR: {
        let lsr = UART_LSR_THRE | UART_LSR_TEMT | this.lsrErrors;
        if (this.rxCount > 0) lsr |= UART_LSR_DR;
        this.lsrErrors = 0; // reading LSR clears the error bits, and with them a line-status interrupt
        return lsr;
      }
      case UART_MSR: {
        const msr = this.modemLines() | this.msrDeltas;
        this.msrDeltas = 0; // reading MSR clears the delta bits, and with them a modem-status interrupt
        return msr;
      }
      case UART_SCR:
        return this.scr;
      default:
        return 0xff; // outside the UART's eight ports: nothing drives the bus
    }
  }

  private writeRegister(offset: number, value: number): void {
    const dlab = (this.lcr & UART_LCR_DLAB) !== 0;
    const before = this.pending();
    switch (offset) {
      case UART_TX:
        if (!dlab) {
          this.writeThr(value); // raises its own interrupt
          return;
        }
        this.dll = value;
        break;
      case UART_IER:
        if (dlab) {
          this.dlm = value;
        } else {
          // Enabling THRI while the transmitter is empty raises "THR empty" again: a real 16550 re-asserts it,
          // and Linux's startup tests for exactly that (UART_BUG_THRE in 8250_port.c).
          if (value & UART_IER_THRI & ~this.ier) this.thrEmptyPending = true;
          this.ier = value & UART_IER_MASK;
        }
        break;
      case UART_FCR:
        this.fifoEnabled = (value & UART_FCR_ENABLE_FIFO) !== 0;
        break;
      case UART_LCR:
        this.lcr = value;
        break;
      case UART_MCR: {
        const linesBefore = this.modemLines();
        this.mcr = value & UART_MCR_MASK;
        this.noteModemLines(linesBefore, this.modemLines());
        break;
      }
      case UART_SCR:
        this.scr = value;
        break;
      default:
        break; // LSR and MSR writes (factory test only on real parts) and anything out of range: ignored
    }
    this.raiseNew(before);
  }

  private writeThr(value: number): void {
    this.thrEmptyPending = false; // writing THR clears "THR empty"...
    const before = this.pending();
    if (this.mcr & UART_MCR_LOOP) {
      // Loopback: the transmitter output is wired to the receiver input instead of the line.
      this.receive(Uint8Array.of(value));
    } else {
      this.tx[this.txLength++] = value;
      this.count.bytesOut++;
      if (this.txLength === this.tx.length) this.flush();
      else if (!this.flushQueued) {
        this.flushQueued = true;
        queueMicrotask(this.flushTask);
      }
    }
    this.thrEmptyPending = true; // ...and the byte is gone at once, so THR is empty again: a new edge.
    this.raiseNew(before);
  }

  private readIir(): number {
    const pending = this.pending();
    let iir = UART_IIR_NO_INT;
    if (pending & PENDING_LINE_STATUS) iir = UART_IIR_RLSI;
    else if (pending & PENDING_RX) iir = UART_IIR_RDI;
    else if (pending & PENDING_THR) {
      iir = UART_IIR_THRI;
      this.thrEmptyPending = false; // reading IIR while it reports THR empty acknowledges it
    } else if (pending & PENDING_MODEM) iir = UART_IIR_MSI;
    return this.fifoEnabled ? iir | UART_IIR_FIFO_ENABLED : iir;
  }

  // ---- Receive queue ----

  /** Append to the ring; on overflow drop the rest and latch an overrun error. Returns the bytes kept. */
  private receive(bytes: Uint8Array): number {
    const room = this.rx.length - this.rxCount;
    const n = Math.min(room, bytes.length);
    for (let i = 0; i < n; i++) this.rx[(this.rxHead + this.rxCount + i) % this.rx.length] = bytes[i]!;
    this.rxCount += n;
    if (n < bytes.length) {
      this.count.inputDropped += bytes.length - n;
      this.lsrErrors |= UART_LSR_OE;
    }
    return n;
  }

  private popRx(): number {
    if (this.rxCount === 0) return 0;
    const byte = this.rx[this.rxHead]!;
    this.rxHead = (this.rxHead + 1) % this.rx.length;
    this.rxCount--;
    return byte;
  }

  // ---- Modem lines ----

  /** MSR's high nibble. In loopback the inputs are wired to MCR's outputs (PC16550D, "Modem Control Register"). */
  private modemLines(): number {
    if (!(this.mcr & UART_MCR_LOOP)) return MSR_CONNECTED;
    let lines = 0;
    if (this.mcr & UART_MCR_DTR) lines |= UART_MSR_DSR;
    if (this.mcr & UART_MCR_RTS) lines |= UART_MSR_CTS;
    if (this.mcr & UART_MCR_OUT1) lines |= UART_MSR_RI;
    if (this.mcr & UART_MCR_OUT2) lines |= UART_MSR_DCD;
    return lines;
  }

  /** Latch MSR's delta bits for the lines that changed. */
  private noteModemLines(before: number, after: number): void {
    const changed = before ^ after;
    if (changed & UART_MSR_CTS) this.msrDeltas |= UART_MSR_DCTS;
    if (changed & UART_MSR_DSR) this.msrDeltas |= UART_MSR_DDSR;
    if (changed & UART_MSR_DCD) this.msrDeltas |= UART_MSR_DDCD;
    if (before & ~after & UART_MSR_RI) this.msrDeltas |= UART_MSR_TERI;
  }

  // ---- Interrupts ----

  /** The interrupt conditions that are both present and enabled in IER. */
  private pending(): number {
    let p = 0;
    if (this.ier & UART_IER_RLSI && this.lsrErrors) p |= PENDING_LINE_STATUS;
    if (this.ier & UART_IER_RDI && this.rxCount > 0) p |= PENDING_RX;
    if (this.ier & UART_IER_THRI && this.thrEmptyPending) p |= PENDING_THR;
    if (this.ier & UART_IER_MSI && this.msrDeltas) p |= PENDING_MODEM;
    return p;
  }

  /** Raise an edge if a condition is pending now that was not pending `before`. */
  private raiseNew(before: number): void {
    if (this.pending() & ~before) {
      this.count.interrupts++;
      this.irq.trigger();
    }
  }
}
