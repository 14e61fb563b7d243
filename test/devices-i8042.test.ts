// The i8042 stub, driven only through its two ports' BusDevice read/write.

import { expect, test } from "bun:test";
import { I8042_COMMAND_PORT, I8042_DATA_PORT } from "../src/arch/x86_64/layout.ts";
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
} from "../src/devices/i8042.ts";

function setup() {
  let resets = 0;
  const kbc = new I8042(() => resets++);
  const rd = (port: "data" | "status") => {
    const data = new Uint8Array(1);
    (port === "data" ? kbc.dataPort : kbc.commandPort).read(0, data);
    return data[0]!;
  };
  const command = (value: number) => kbc.commandPort.write(0, Uint8Array.of(value));
  const data = (value: number) => kbc.dataPort.write(0, Uint8Array.of(value));
  return { kbc, rd, command, data, resets: () => resets };
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
