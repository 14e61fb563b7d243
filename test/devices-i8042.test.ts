// The i8042 controller and its keyboard, driven only through its two ports' BusDevice read/write and sendKeys().

import { expect, test } from "bun:test";
import { I8042_COMMAND_PORT, I8042_DATA_PORT, I8042_KEYBOARD_IRQ } from "../src/arch/x86_64/layout.ts";
import {
  I8042,
  I8042_CMD_AUX_LOOP,
  I8042_CMD_AUX_TEST,
  I8042_CMD_CTL_RCTR,
  I8042_CMD_CTL_TEST,
  I8042_CMD_CTL_WCTR,
  I8042_CMD_PULSE_RESET,
  I8042_STR_AUXDATA,
  I8042_STR_IBF,
  I8042_STR_OBF,
  I8042_CMD_KBD_DISABLE,
  I8042_CMD_KBD_ENABLE,
  I8042_CTR_KBDINT,
  CTRL_ALT_DEL,
  KEYBOARD_QUEUE_LIMIT,
} from "../src/devices/i8042.ts";

function setup() {
  let resets = 0;
  const irq = { gsi: I8042_KEYBOARD_IRQ, count: 0, trigger() { this.count++; } };
  const kbc = new I8042(() => resets++, irq);
  const rd = (port: "data" | "status") => {
    const data = new Uint8Array(1);
    (port === "data" ? kbc.dataPort : kbc.commandPort).read(0, data);
    return data[0]!;
  };
  const command = (value: number) => kbc.commandPort.write(0, Uint8Array.of(value));
  const data = (value: number) => kbc.dataPort.write(0, Uint8Array.of(value));
  /** What Linux's i8042_interrupt() does: read the status, then the byte, while OBF is set. */
  const drain = () => {
    const bytes: number[] = [];
    while (rd("status") & I8042_STR_OBF && bytes.length < 64) bytes.push(rd("data"));
    return bytes;
  };
  return { kbc, rd, command, data, drain, irq, resets: () => resets };
}

test("status: no data waiting, input buffer empty, not a floating bus", () => {
  const { rd } = setup();
  const status = rd("status");
  expect(status & (I8042_STR_OBF | I8042_STR_IBF)).toBe(0);
  expect(status).not.toBe(0xff);
});

test("0xFE on the command port calls onReset exactly once", () => {
  const { kbc, command, resets } = setup();
  expect(resets()).toBe(0);
  command(I8042_CMD_PULSE_RESET);
  expect(resets()).toBe(1);
  expect(kbc.resetPending).toBe(true);
  for (let i = 0; i < 9; i++) command(I8042_CMD_PULSE_RESET); // Linux tries ten times
  expect(resets()).toBe(1);
});

test("0xFE on the data port, or another command, does not reset", () => {
  const { command, data, resets } = setup();
  data(I8042_CMD_PULSE_RESET);
  command(0xfd);
  command(I8042_CMD_CTL_TEST);
  expect(resets()).toBe(0);
});

test("the command byte can be read (0x20) and written (0x60)", () => {
  const { rd, command, data } = setup();
  command(I8042_CMD_CTL_RCTR);
  expect(rd("status") & I8042_STR_OBF).toBe(I8042_STR_OBF);
  const initial = rd("data");
  expect(rd("status") & I8042_STR_OBF).toBe(0);

  command(I8042_CMD_CTL_WCTR);
  data(initial ^ 0x30);
  command(I8042_CMD_CTL_RCTR);
  expect(rd("data")).toBe(initial ^ 0x30);
});

test("controller self test answers 0x55", () => {
  const { rd, command } = setup();
  command(I8042_CMD_CTL_TEST);
  expect(rd("status") & I8042_STR_OBF).toBe(I8042_STR_OBF);
  expect(rd("data")).toBe(0x55);
});

test("the AUX probe fails at once: the loop byte is not AUX data, and AUX_TEST reports an error", () => {
  const { rd, command, data } = setup();
  command(I8042_CMD_AUX_LOOP);
  data(0x5a);
  const status = rd("status");
  expect(status & I8042_STR_OBF).toBe(I8042_STR_OBF); // an answer, so Linux does not wait for one
  expect(status & I8042_STR_AUXDATA).toBe(0);
  command(I8042_CMD_AUX_TEST);
  const result = rd("data");
  expect(result === 0x00 || result === 0xfa || result === 0xff).toBe(false);
});

test("unknown commands are ignored", () => {
  const { rd, command, resets } = setup();
  command(0x12);
  expect(rd("status") & I8042_STR_OBF).toBe(0);
  expect(resets()).toBe(0);
});

test("ports() places the two devices at the data and command ports", () => {
  const { kbc } = setup();
  expect(kbc.ports().map((p) => [p.port, p.device.name])).toEqual([
    [I8042_DATA_PORT, "i8042"],
    [I8042_COMMAND_PORT, "i8042"],
  ]);
  expect(kbc.ports()[1]!.device).toBe(kbc.commandPort);
});

test("SendCtrlAltDel: set-1 make codes 1D 38 E0 53, then break codes E0 D3 B8 9D, one IRQ 1 per byte read", () => {
  const { kbc, rd, irq } = setup();
  expect(rd("status") & I8042_STR_OBF).toBe(0);
  expect(kbc.sendCtrlAltDel()).toBe(true);
  expect(CTRL_ALT_DEL).toEqual([0x1d, 0x38, 0xe0, 0x53, 0xe0, 0xd3, 0xb8, 0x9d]);
  const bytes: number[] = [];
  // The guest's interrupt handler reads one byte per interrupt; the next interrupt comes after the read.
  for (let i = 0; i < 8; i++) {
    expect(irq.count).toBe(i + 1);
    expect(rd("status") & I8042_STR_OBF).toBe(I8042_STR_OBF);
    bytes.push(rd("data"));
  }
  expect(bytes).toEqual([...CTRL_ALT_DEL]);
  expect(irq.count).toBe(8);
  expect(rd("status") & I8042_STR_OBF).toBe(0);
});

test("no interrupt while the command byte's KBDINT is clear; the held byte interrupts once it is set", () => {
  const { kbc, rd, command, data, irq } = setup();
  command(I8042_CMD_CTL_RCTR);
  const ctr = rd("data");
  command(I8042_CMD_CTL_WCTR);
  data(ctr & ~I8042_CTR_KBDINT);
  kbc.sendKeys([0x1e]);
  expect(irq.count).toBe(0);
  expect(rd("status") & I8042_STR_OBF).toBe(I8042_STR_OBF); // still visible to a polling driver
  command(I8042_CMD_CTL_WCTR);
  data(ctr);
  expect(irq.count).toBe(1);
  expect(rd("data")).toBe(0x1e);
});

test("a disabled keyboard (0xAD) holds its bytes; 0xAE lets them through", () => {
  const { kbc, rd, command, irq } = setup();
  command(I8042_CMD_KBD_DISABLE);
  kbc.sendKeys([0x1e, 0x9e]);
  expect(rd("status") & I8042_STR_OBF).toBe(0);
  expect(irq.count).toBe(0);
  command(I8042_CMD_KBD_ENABLE);
  expect(irq.count).toBe(1);
  expect([rd("data"), rd("data")]).toEqual([0x1e, 0x9e]);
});

test("a controller answer goes ahead of the keyboard's bytes", () => {
  const { kbc, rd, command } = setup();
  kbc.sendKeys([0x1e]);
  command(I8042_CMD_CTL_TEST);
  expect(rd("data")).toBe(0x55);
  expect(rd("data")).toBe(0x1e);
});

test("the keyboard answers atkbd's probe: GETID gives ACK AB 41, SETLEDS and its parameter are ACKed, reset gives ACK AA", () => {
  const { data, drain, irq } = setup();
  data(0xf2);
  expect(drain()).toEqual([0xfa, 0xab, 0x41]);
  expect(irq.count).toBeGreaterThan(0);
  data(0xed);
  expect(drain()).toEqual([0xfa]);
  data(0xff); // the LED parameter, not a reset
  expect(drain()).toEqual([0xfa]);
  data(0xf4); // enable
  expect(drain()).toEqual([0xfa]);
  data(0xff);
  expect(drain()).toEqual([0xfa, 0xaa]);
  data(0xee);
  expect(drain()).toEqual([0xee]);
});

test("a guest that never reads cannot make the keyboard hold more than its buffer", () => {
  const { kbc, drain } = setup();
  expect(kbc.sendCtrlAltDel()).toBe(true);
  expect(kbc.sendCtrlAltDel()).toBe(true);
  expect(kbc.sendCtrlAltDel()).toBe(false); // 24 > KEYBOARD_QUEUE_LIMIT
  expect(drain().length).toBe(KEYBOARD_QUEUE_LIMIT);
});
