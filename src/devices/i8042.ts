// The i8042 keyboard controller, reduced to what a microVM needs: a way for the guest to reset the machine.
//
// On a PC the 8042 sits at two ports: 0x60 (data, I8042_DATA_PORT) and 0x64 (status on read, command on
// write, I8042_COMMAND_PORT). Command 0xFE pulses the controller's output line 0 low, which is wired to the
// CPU's reset pin; Linux's `reboot=k` does exactly that (arch/x86/kernel/reboot.c, BOOT_KBD), and kindling
// treats it as "the guest asked to stop": `onReset` is called and the VM ends cleanly.
//
// There is no keyboard and no mouse behind this controller. The rest is just enough for Linux's driver
// (drivers/input/serio/i8042.c) to probe it without spinning: the command byte can be read and written,
// the self tests pass, and the AUX (mouse) probe fails at once instead of timing out. Keyboard bytes written
// to the data port go nowhere, and the controller never interrupts.
//
// Bus wiring: the two ports are not adjacent (0x61 between them is the PIT's "port B", not ours), so the
// controller offers two BusDevices that share its state, one per port. Register each with size 1:
//   for (const p of i8042.ports()) pio.register(p.port, 1, p.device);
//
// Names follow drivers/input/serio/i8042.h. Linux's I8042_CMD_* values also encode how many parameter and
// result bytes a command has in their upper bits; the command byte the controller sees is the low byte.

import { bool, checkKind, int, type Stateful } from "./state.ts";
import type { BusDevice } from "../bus.ts";
import { I8042_COMMAND_PORT, I8042_DATA_PORT } from "../arch/x86_64/layout.ts";

// ---- Status register (read from 0x64) ----
export const I8042_STR_OBF = 0x01; // output buffer full: a byte is waiting at 0x60
export const I8042_STR_IBF = 0x02; // input buffer full: the controller has not taken the last write yet
export const I8042_STR_SYSFLAG = 0x04; // the "system flag", a copy of I8042_CTR_SYSFLAG (POST passed)
export const I8042_STR_CMDDAT = 0x08; // the last write went to the command port
export const I8042_STR_KEYLOCK = 0x10; // set = keyboard NOT inhibited by the key lock
export const I8042_STR_AUXDATA = 0x20; // the byte at 0x60 came from the AUX (mouse) port

// ---- Controller command byte, "CTR" ----
export const I8042_CTR_KBDINT = 0x01; // keyboard interrupt enable
export const I8042_CTR_AUXINT = 0x02; // AUX interrupt enable
export const I8042_CTR_SYSFLAG = 0x04;
export const I8042_CTR_KBDDIS = 0x10; // keyboard clock disabled
export const I8042_CTR_AUXDIS = 0x20; // AUX clock disabled
export const I8042_CTR_XLATE = 0x40; // translate scan codes to set 1
/** What firmware leaves behind: keyboard interrupt on, POST passed, translation on. */
const INITIAL_CTR = I8042_CTR_KBDINT | I8042_CTR_SYSFLAG | I8042_CTR_XLATE;

// ---- Commands (written to 0x64) ----
export const I8042_CMD_CTL_RCTR = 0x20; // read the command byte: it appears at 0x60
export const I8042_CMD_CTL_WCTR = 0x60; // write the command byte: the next byte written to 0x60 is it
export const I8042_CMD_AUX_TEST = 0xa9; // test the AUX clock and data lines: 0x00 = ok
export const I8042_CMD_CTL_TEST = 0xaa; // controller self test: 0x55 = ok
export const I8042_CMD_KBD_TEST = 0xab; // test the keyboard clock and data lines: 0x00 = ok
export const I8042_CMD_AUX_LOOP = 0xd3; // echo the next data byte back as if the mouse had sent it
/** Pulse output line 0 (CPU reset) low: Intel's 8042 datasheet, commands 0xF0-0xFF pulse output bits 0-3. */
export const I8042_CMD_PULSE_RESET = 0xfe;

const CTL_TEST_PASSED = 0x55;
const LINE_TEST_PASSED = 0x00;
/** AUX_TEST's "clock line stuck low": how this controller says it has no mouse port. */
const LINE_TEST_CLOCK_STUCK_LOW = 0x01;

/** The controller's command byte, its output buffer, a command awaiting its parameter, and the reset latch. */
export type I8042State = {
  kind: "i8042";
  ctr: number;
  /** The byte waiting at 0x60, or null when the output buffer is empty. */
  outputByte: number | null;
  pendingCommand: number | null;
  lastWriteWasCommand: boolean;
  resetRequested: boolean;
};

export class I8042 implements Stateful<I8042State> {
  readonly name = "i8042";
  private ctr = INITIAL_CTR;
  /** The one-byte output buffer at 0x60, or undefined when empty (OBF clear). */
  private outputByte: number | undefined;
  /** The command waiting for its parameter byte at 0x60, if any. */
  private pendingCommand: number | undefined;
  private lastWriteWasCommand = false;
  private resetRequested = false;

  /** The data port, 0x60. */
  readonly dataPort: BusDevice;
  /** The status (read) and command (write) port, 0x64. */
  readonly commandPort: BusDevice;

  constructor(
    /** Called once, the first time the guest pulses the reset line. */
    private readonly onReset: () => void,
  ) {
    this.dataPort = {
      name: this.name,
      read: (_offset, data) => fillByte(data, this.readData()),
      write: (_offset, data) => this.writeData(data[0] ?? 0),
      registerName: (_offset, isWrite) => (isWrite ? "DATA (write)" : "DATA (read)"),
    };
    this.commandPort = {
      name: this.name,
      read: (_offset, data) => fillByte(data, this.status()),
      write: (_offset, data) => this.writeCommand(data[0] ?? 0),
      registerName: (_offset, isWrite) => (isWrite ? "COMMAND" : "STATUS"),
    };
  }

  /** Where each BusDevice goes on the port-IO bus (each is one port wide). */
  ports(): { port: number; device: BusDevice }[] {
    return [
      { port: I8042_DATA_PORT, device: this.dataPort },
      { port: I8042_COMMAND_PORT, device: this.commandPort },
    ];
  }

  describe(): I8042State {
    return {
      kind: "i8042", ctr: this.ctr, outputByte: this.outputByte ?? null, pendingCommand: this.pendingCommand ?? null,
      lastWriteWasCommand: this.lastWriteWasCommand, resetRequested: this.resetRequested,
    };
  }

  /** A restored controller whose guest had already pulsed reset does not call onReset again. */
  restore(s: I8042State): void {
    const D = this.name;
    checkKind(D, s, "i8042");
    const optByte = (f: "outputByte" | "pendingCommand") => (s[f] === null ? undefined : int(D, f, s[f], 0, 0xff));
    const next = {
      ctr: int(D, "ctr", s.ctr, 0, 0xff), outputByte: optByte("outputByte"), pendingCommand: optByte("pendingCommand"),
      lastWriteWasCommand: bool(D, "lastWriteWasCommand", s.lastWriteWasCommand), resetRequested: bool(D, "resetRequested", s.resetRequested),
    };
    Object.assign(this, next);
  }

  /** Whether the guest has asked for a reset. */
  get resetPending(): boolean {
    return this.resetRequested;
  }

  private status(): number {
    // IBF is never set: every write is taken at once, so Linux's i8042_wait_write() never waits.
    let status = I8042_STR_KEYLOCK | (this.ctr & I8042_CTR_SYSFLAG ? I8042_STR_SYSFLAG : 0);
    if (this.outputByte !== undefined) status |= I8042_STR_OBF;
    if (this.lastWriteWasCommand) status |= I8042_STR_CMDDAT;
    return status;
  }

  private readData(): number {
    const byte = this.outputByte ?? 0;
    this.outputByte = undefined;
    return byte;
  }

  private writeData(value: number): void {
    this.lastWriteWasCommand = false;
    const command = this.pendingCommand;
    this.pendingCommand = undefined;
    switch (command) {
      case I8042_CMD_CTL_WCTR:
        this.ctr = value;
        break;
      case I8042_CMD_AUX_LOOP:
        // A real PS/2 controller echoes the byte from the AUX side (status AUXDATA set). There is no AUX port
        // here, so it comes back from the keyboard side: Linux's __i8042_command() sees "auxerr" at once,
        // instead of waiting 500 ms (I8042_CTL_TIMEOUT) for a reply that would never come.
        this.outputByte = value;
        break;
      default:
        break; // a byte for the keyboard: there is none
    }
  }

  private writeCommand(command: number): void {
    this.lastWriteWasCommand = true;
    this.pendingCommand = undefined;
    switch (command) {
      case I8042_CMD_CTL_RCTR:
        this.outputByte = this.ctr;
        break;
      case I8042_CMD_CTL_WCTR:
      case I8042_CMD_AUX_LOOP:
        this.pendingCommand = command;
        break;
      case I8042_CMD_CTL_TEST:
        this.outputByte = CTL_TEST_PASSED;
        break;
      case I8042_CMD_KBD_TEST:
        this.outputByte = LINE_TEST_PASSED;
        break;
      case I8042_CMD_AUX_TEST:
        this.outputByte = LINE_TEST_CLOCK_STUCK_LOW; // Linux's i8042_check_aux() then gives up on the mouse
        break;
      case I8042_CMD_PULSE_RESET:
        // Linux writes it up to ten times in a row; the VMM needs to hear it once.
        if (!this.resetRequested) {
          this.resetRequested = true;
          this.onReset();
        }
        break;
      default:
        break; // unknown commands are ignored
    }
  }
}

/** Both ports are one byte wide: a wider read gets the byte in its low lane and zeroes above. */
function fillByte(data: Uint8Array, value: number): void {
  data.fill(0);
  if (data.length > 0) data[0] = value;
}
