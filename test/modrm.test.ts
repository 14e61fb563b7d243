// The memory-operand decoder the emulation assist completes ldmxcsr/stmxcsr with (src/arch/x86_64/modrm.ts).
// Each case is an instruction GNU as assembled, with the address the CPU would compute.

import { describe, expect, test } from "bun:test";
import { decodeMemoryOperand, GPR_BY_NUMBER, type OperandContext } from "../src/arch/x86_64/modrm.ts";

const REGS: Record<(typeof GPR_BY_NUMBER)[number], bigint> = Object.fromEntries(
  GPR_BY_NUMBER.map((name, i) => [name, 0x1000n * BigInt(i + 1)]),
) as Record<(typeof GPR_BY_NUMBER)[number], bigint>;
const ctx: OperandContext = { gpr: (n) => REGS[n], rip: 0xffffffff81000000n, fsBase: 0x7f0000000000n, gsBase: 0xffff888007a00000n };
const OPCODE = [0x0f, 0xae];

describe("decodeMemoryOperand (SDM vol. 2A 2.1-2.2)", () => {
  const cases: [string, number[], number, bigint, number][] = [
    ["ldmxcsr 0x4(%rsp): SIB with no index, disp8", [0x0f, 0xae, 0x54, 0x24, 0x04], 2, REGS.rsp + 4n, 5],
    ["stmxcsr -0x8(%rbp): negative disp8", [0x0f, 0xae, 0x5d, 0xf8], 3, REGS.rbp - 8n, 4],
    ["ldmxcsr 0x10(%rip): RIP-relative, from the next instruction", [0x0f, 0xae, 0x15, 0x10, 0, 0, 0], 2, ctx.rip + 7n + 0x10n, 7],
    ["ldmxcsr 0x8(%r12,%rcx,4): REX.B base, scaled index", [0x41, 0x0f, 0xae, 0x54, 0x8c, 0x08], 2, REGS.r12 + REGS.rcx * 4n + 8n, 6],
    ["stmxcsr %gs:0x1000: GS base, SIB with neither base nor index", [0x65, 0x0f, 0xae, 0x1c, 0x25, 0x00, 0x10, 0, 0], 3, ctx.gsBase + 0x1000n, 9],
    ["ldmxcsr 0x0(%r13,%r9,8): REX.X and REX.B, r13 needs a displacement", [0x43, 0x0f, 0xae, 0x54, 0xcd, 0x00], 2, REGS.r13 + REGS.r9 * 8n, 6],
  ];
  for (const [name, bytes, digit, address, length] of cases) {
    test(name, () => {
      expect(decodeMemoryOperand(bytes, OPCODE, ctx)).toEqual({ digit, address, length });
    });
  }

  test("a register operand (lfence is 0F AE E8), another opcode, or cut-off bytes: undefined", () => {
    expect(decodeMemoryOperand([0x0f, 0xae, 0xe8], OPCODE, ctx)).toBeUndefined();
    expect(decodeMemoryOperand([0x0f, 0xaf, 0x54, 0x24, 0x04], OPCODE, ctx)).toBeUndefined();
    expect(decodeMemoryOperand([0x0f, 0xae, 0x15, 0x10], OPCODE, ctx)).toBeUndefined();
    expect(decodeMemoryOperand([0x0f, 0xae], OPCODE, ctx)).toBeUndefined();
  });

  test("addresses wrap at 64 bits", () => {
    const low: OperandContext = { ...ctx, gpr: () => 0n };
    expect(decodeMemoryOperand([0x0f, 0xae, 0x5d, 0xf8], OPCODE, low)?.address).toBe((1n << 64n) - 8n);
  });
});
