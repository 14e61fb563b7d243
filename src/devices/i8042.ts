// The i8042 keyboard controller, reduced to what a microVM needs: a way for the guest to reset the machine,
// and a keyboard that can press Ctrl+Alt+Del (Firecracker's SendCtrlAltDel).
//
// On a PC the 8042 sits at two ports: 0x60 (data, I8042_DATA_PORT) and 0x64 (status on read, command on
// write, I8042_COMMAND_PORT). Command 0xFE pulses the controller's output line 0 low, which is wired to the
// CPU's reset pin; Linux's `reboot=k` does exactly that (arch/x86/kernel/reboot.c, BOOT_KBD), and kindling
// treats it as "the guest asked to stop": `onReset` is called and the VM ends cleanly.
//
// Two sources fill the output buffer at 0x60:
//   - the controller itself, answering a command written to 0x64 (read the command byte, self tests);
//     these answers never interrupt, Linux polls for them (drivers/input/serio/i8042.c, __i8042_command);
//   - the keyboard behind it: its answers to the bytes the driver writes to 0x60 (ACK 0xFA, its ID), and
//     key scancodes. A real keyboard holds its bytes until the one-byte buffer is free and the keyboard
//     clock is enabled; here they wait in `keyboardQueue`. Each keyboard byte that reaches the buffer
//     raises IRQ 1 when the command byte's KBDINT bit is set: Linux's i8042_interrupt() reads one byte per
//     interrupt, so the next byte's interrupt comes when the guest has read the previous one.
// The keyboard is just enough for Linux's atkbd driver (drivers/input/keyboard/atkbd.c) to probe it and
// then listen: it acknowledges every command, reports an MF2 keyboard's ID, and types what sendKeys() is
// given. The command byte's XLATE bit is set, as firmware leaves it, so scancodes are set 1 ("translated").
// There is no AUX (mouse) port: the AUX probe fails at once instead of timing out.
//
// Bus wiring: the two ports are not adjacent (0x61 between them is the PIT's "port B", not ours), so the
// controller offers two BusDevices that share its state, one per port. Register each with size 1:
//   for (const p of i8042.ports()) pio.register(p.port, 1, p.device);
//
// Names follow drivers/input/serio/i8042.h and include/linux/libps2.h / atkbd.c. Linux's I8042_CMD_* and
// ATKBD_CMD_* values also encode how many parameter and result bytes a command has in their upper bits;
// the byte the controller or keyboard sees is the low byte.

import { bool, checkKind, DeviceStateError, int, type Stateful } from "./state.ts";
import type { BusDevice, InterruptLine } from "../bus.ts";
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

// ---- Controller commands (written to 0x64) ----
export const I8042_CMD_CTL_RCTR = 0x20; // read the command byte: it appears at 0x60
export const I8042_CMD_CTL_WCTR = 0x60; // write the command byte: the next byte written to 0x60 is it
export const I8042_CMD_AUX_DISABLE = 0xa7; // sets CTR AUXDIS
export const I8042_CMD_AUX_ENABLE = 0xa8; // clears CTR AUXDIS
export const I8042_CMD_AUX_TEST = 0xa9; // test the AUX clock and data lines: 0x00 = ok
export const I8042_CMD_CTL_TEST = 0xaa; // controller self test: 0x55 = ok
export const I8042_CMD_KBD_TEST = 0xab; // test the keyboard clock and data lines: 0x00 = ok
export const I8042_CMD_KBD_DISABLE = 0xad; // sets CTR KBDDIS: keyboard bytes wait
export const I8042_CMD_KBD_ENABLE = 0xae; // clears CTR KBDDIS
export const I8042_CMD_AUX_LOOP = 0xd3; // echo the next data byte back as if the mouse had sent it
/** Pulse output line 0 (CPU reset) low: Intel's 8042 datasheet, commands 0xF0-0xFF pulse output bits 0-3. */
export const I8042_CMD_PULSE_RESET = 0xfe;

const CTL_TEST_PASSED = 0x55;
const LINE_TEST_PASSED = 0x00;
/** AUX_TEST's "clock line stuck low": how this controller says it has no mouse port. */
const LINE_TEST_CLOCK_STUCK_LOW = 0x01;

// ---- The keyboard's side (bytes written to 0x60 with no controller command pending) ----
// Commands, atkbd.c's ATKBD_CMD_* low bytes.
export const ATKBD_CMD_SETLEDS = 0xed; // + 1 parameter byte
export const ATKBD_CMD_ECHO = 0xee; // answered with 0xEE, no ACK
export const ATKBD_CMD_SSCANSET = 0xf0; // + 1 parameter byte (0 = report the current set)
export const ATKBD_CMD_GETID = 0xf2; // ACK, then two ID bytes
export const ATKBD_CMD_SETREP = 0xf3; // + 1 parameter byte (typematic rate)
export const ATKBD_CMD_RESET_BAT = 0xff; // ACK, then the self-test result
/** Commands followed by one parameter byte, which the keyboard also acknowledges. */
const COMMANDS_WITH_PARAMETER = new Set([ATKBD_CMD_SETLEDS, ATKBD_CMD_SSCANSET, ATKBD_CMD_SETREP]);
// Replies, libps2.h / atkbd.c.
export const PS2_RET_ACK = 0xfa;
export const ATKBD_RET_BAT = 0xaa; // basic assurance test passed
/**
 * The ID of an MF2 keyboard as a translating controller delivers it: the keyboard sends 0xAB 0x83 and the
 * 8042's translation turns 0x83 into 0x41. Linux's ps2_is_keyboard_id() accepts the 0xAB.
 */
export const KEYBOARD_ID = [0xab, 0x41] as const;
/** The scancode set reported for SSCANSET 0 (set 2, which translation presents to the host as set 1). */
const CURRENT_SCANCODE_SET = 0x02;

// Scancode set 1 (what the host reads with XLATE on). Break (release) codes are the make code | 0x80;
// keys of the extended block are prefixed with 0xE0.
export const SCANCODE_EXTENDED = 0xe0;
const SCANCODE_BREAK = 0x80;
export const SCANCODE_LEFT_CTRL = 0x1d;
export const SCANCODE_LEFT_ALT = 0x38;
export const SCANCODE_DELETE = 0x53; // extended: E0 53
/**
 * Ctrl, Alt, Del pressed in that order, then released in reverse, as Firecracker's SendCtrlAltDel types
 * them: 1D 38 E0 53, then E0 D3 B8 9D. Linux's VT keymap maps Ctrl+Alt+Del to "Boot" (ctrl_alt_del()).
 */
export const CTRL_ALT_DEL = [
  SCANCODE_LEFT_CTRL, SCANCODE_LEFT_ALT, SCANCODE_EXTENDED, SCANCODE_DELETE,
  SCANCODE_EXTENDED, SCANCODE_DELETE | SCANCODE_BREAK, SCANCODE_LEFT_ALT | SCANCODE_BREAK, SCANCODE_LEFT_CTRL | SCANCODE_BREAK,
] as const;
/** A real keyboard's buffer is 16 bytes; a guest that never reads should not make the VMM hold more. */
export const KEYBOARD_QUEUE_LIMIT = 16;

/**
 * The controller's command byte, its own answer and the keyboard's bytes waiting for 0x60, commands
 * awaiting their parameter, and the reset latch.
 */
export type I8042State = {
  kind: "i8042";
  ctr: number;
  /** The controller's answer waiting at 0x60, or null. */
  controllerByte: number | null;
  /** The keyboard's bytes not yet read, oldest first (at most KEYBOARD_QUEUE_LIMIT). */
  keyboardQueue: number[];
  pendingCommand: number | null;
  pendingKeyboardCommand: number | null;
  lastWriteWasCommand: boolean;
  resetRequested: boolean;
};

export class I8042 implements Stateful<I8042State> {
  readonly name = "i8042";
  private ctr = INITIAL_CTR;
  /** The controller's own answer waiting at 0x60, if any: it goes ahead of keyboard bytes. */
  private controllerByte: number | undefined;
  /** Bytes the keyboard has to send, oldest first; the first is at 0x60 once the keyboard is enabled. */
  private readonly keyboardQueue: number[] = [];
  /** The controller command waiting for its parameter byte at 0x60, if any. */
  private pendingCommand: number | undefined;
  /** The keyboard command waiting for its parameter byte, if any. */
  private pendingKeyboardCommand: number | undefined;
  private lastWriteWasCommand = false;
  private resetRequested = false;

  /** The data port, 0x60. */
  readonly dataPort: BusDevice;
  /** The status (read) and command (write) port, 0x64. */
  readonly commandPort: BusDevice;

  constructor(
    /** Called once, the first time the guest pulses the reset line. */
    private readonly onReset: () => void,
    /** IRQ 1 (I8042_KEYBOARD_IRQ). Without it the keyboard's bytes can only be polled. */
    private readonly keyboardIrq?: InterruptLine,
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
      kind: "i8042", ctr: this.ctr, controllerByte: this.controllerByte ?? null, keyboardQueue: [...this.keyboardQueue],
      pendingCommand: this.pendingCommand ?? null, pendingKeyboardCommand: this.pendingKeyboardCommand ?? null,
      lastWriteWasCommand: this.lastWriteWasCommand, resetRequested: this.resetRequested,
    };
  }

  /** A restored controller whose guest had already pulsed reset does not call onReset again. */
  restore(s: I8042State): void {
    const D = this.name;
    checkKind(D, s, "i8042");
    const optByte = (f: "controllerByte" | "pendingCommand" | "pendingKeyboardCommand") => (s[f] === null ? undefined : int(D, f, s[f], 0, 0xff));
    if (!Array.isArray(s.keyboardQueue) || s.keyboardQueue.length > KEYBOARD_QUEUE_LIMIT) {
      throw new DeviceStateError(D, `keyboardQueue: not an array of at most ${KEYBOARD_QUEUE_LIMIT} bytes`);
    }
    const queue = s.keyboardQueue.map((b, i) => int(D, `keyboardQueue[${i}]`, b, 0, 0xff));
    const next = {
      ctr: int(D, "ctr", s.ctr, 0, 0xff), controllerByte: optByte("controllerByte"), pendingCommand: optByte("pendingCommand"),
      pendingKeyboardCommand: optByte("pendingKeyboardCommand"),
      lastWriteWasCommand: bool(D, "lastWriteWasCommand", s.lastWriteWasCommand), resetRequested: bool(D, "resetRequested", s.resetRequested),
    };
    Object.assign(this, next);
    this.keyboardQueue.splice(0, this.keyboardQueue.length, ...queue);
  }

  /** Whether the guest has asked for a reset. */
  get resetPending(): boolean {
    return this.resetRequested;
  }

  /**
   * The keyboard types these scancodes (set 1). Returns false, typing nothing, when the keyboard's buffer
   * cannot take them all (a guest that does not read its keyboard).
   */
  sendKeys(scancodes: readonly number[]): boolean {
    if (this.keyboardQueue.length + scancodes.length > KEYBOARD_QUEUE_LIMIT) return false;
    this.keyboardSends(...scancodes);
    return true;
  }

  /** Firecracker's SendCtrlAltDel: press and release Ctrl+Alt+Del. */
  sendCtrlAltDel(): boolean {
    return this.sendKeys(CTRL_ALT_DEL);
  }

  private get keyboardEnabled(): boolean {
    return (this.ctr & I8042_CTR_KBDDIS) === 0;
  }

  /** Whether a byte is at 0x60: the controller's answer, or the keyboard's next byte if it may send. */
  private get outputFull(): boolean {
    return this.controllerByte !== undefined || (this.keyboardEnabled && this.keyboardQueue.length > 0);
  }

  private status(): number {
    // IBF is never set: every write is taken at once, so Linux's i8042_wait_write() never waits.
    let status = I8042_STR_KEYLOCK | (this.ctr & I8042_CTR_SYSFLAG ? I8042_STR_SYSFLAG : 0);
    if (this.outputFull) status |= I8042_STR_OBF;
    if (this.lastWriteWasCommand) status |= I8042_STR_CMDDAT;
    return status;
  }

  private readData(): number {
    if (this.controllerByte !== undefined) {
      const byte = this.controllerByte;
      this.controllerByte = undefined;
      this.interruptIfKeyboardByte();
      return byte;
    }
    if (!this.keyboardEnabled || this.keyboardQueue.length === 0) return 0;
    const byte = this.keyboardQueue.shift()!;
    this.interruptIfKeyboardByte();
    return byte;
  }

  /** The keyboard puts bytes in its queue; the first one interrupts if it lands in an empty buffer. */
  private keyboardSends(...bytes: number[]): void {
    const wasFull = this.outputFull;
    for (const b of bytes) if (this.keyboardQueue.length < KEYBOARD_QUEUE_LIMIT) this.keyboardQueue.push(b & 0xff);
    if (!wasFull) this.interruptIfKeyboardByte();
  }

  /** Raise IRQ 1 if the byte now at 0x60 is the keyboard's and the command byte lets it interrupt. */
  private interruptIfKeyboardByte(): void {
    if (this.controllerByte !== undefined || !this.keyboardEnabled || this.keyboardQueue.length === 0) return;
    if (this.ctr & I8042_CTR_KBDINT) this.keyboardIrq?.trigger();
  }

  /** Change the command byte; a keyboard byte that was held back may now reach the buffer and interrupt. */
  private setCtr(value: number): void {
    const couldSend = this.keyboardEnabled && (this.ctr & I8042_CTR_KBDINT) !== 0;
    this.ctr = value & 0xff;
    if (!couldSend) this.interruptIfKeyboardByte();
  }

  private writeData(value: number): void {
    this.lastWriteWasCommand = false;
    const command = this.pendingCommand;
    this.pendingCommand = undefined;
    switch (command) {
      case I8042_CMD_CTL_WCTR:
        this.setCtr(value);
        break;
      case I8042_CMD_AUX_LOOP:
        // A real PS/2 controller echoes the byte from the AUX side (status AUXDATA set). There is no AUX port
        // here, so it comes back from the keyboard side: Linux's __i8042_command() sees "auxerr" at once,
        // instead of waiting 500 ms (I8042_CTL_TIMEOUT) for a reply that would never come.
        this.controllerByte = value;
        break;
      default:
        this.keyboardReceives(value);
        break;
    }
  }

  /** A byte the driver sent to the keyboard (atkbd.c's ps2_command() then waits for the ACK on IRQ 1). */
  private keyboardReceives(value: number): void {
    const awaited = this.pendingKeyboardCommand;
    this.pendingKeyboardCommand = undefined;
    if (awaited !== undefined) {
      // The parameter of SETLEDS, SETREP or SSCANSET: acknowledged; "which set?" is answered too.
      if (awaited === ATKBD_CMD_SSCANSET && value === 0) this.keyboardSends(PS2_RET_ACK, CURRENT_SCANCODE_SET);
      else this.keyboardSends(PS2_RET_ACK);
      return;
    }
    if (COMMANDS_WITH_PARAMETER.has(value)) this.pendingKeyboardCommand = value;
    switch (value) {
      case ATKBD_CMD_ECHO:
        this.keyboardSends(ATKBD_CMD_ECHO);
        break;
      case ATKBD_CMD_GETID:
        this.keyboardSends(PS2_RET_ACK, ...KEYBOARD_ID);
        break;
      case ATKBD_CMD_RESET_BAT:
        this.keyboardQueue.length = 0; // a reset drops whatever the keyboard still held
        this.keyboardSends(PS2_RET_ACK, ATKBD_RET_BAT);
        break;
      default:
        // Enable, disable, set defaults and the rest need no state here: acknowledged.
        this.keyboardSends(PS2_RET_ACK);
        break;
    }
  }

  private writeCommand(command: number): void {
    this.lastWriteWasCommand = true;
    this.pendingCommand = undefined;
    switch (command) {
      case I8042_CMD_CTL_RCTR:
        this.controllerByte = this.ctr;
        break;
      case I8042_CMD_CTL_WCTR:
      case I8042_CMD_AUX_LOOP:
        this.pendingCommand = command;
        break;
      case I8042_CMD_CTL_TEST:
        this.controllerByte = CTL_TEST_PASSED;
        break;
      case I8042_CMD_KBD_TEST:
        this.controllerByte = LINE_TEST_PASSED;
        break;
      case I8042_CMD_AUX_TEST:
        this.controllerByte = LINE_TEST_CLOCK_STUCK_LOW; // Linux's i8042_check_aux() then gives up on the mouse
        break;
      case I8042_CMD_KBD_DISABLE:
        this.setCtr(this.ctr | I8042_CTR_KBDDIS);
        break;
      case I8042_CMD_KBD_ENABLE:
        this.setCtr(this.ctr & ~I8042_CTR_KBDDIS);
        break;
      case I8042_CMD_AUX_DISABLE:
        this.setCtr(this.ctr | I8042_CTR_AUXDIS);
        break;
      case I8042_CMD_AUX_ENABLE:
        this.setCtr(this.ctr & ~I8042_CTR_AUXDIS);
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
