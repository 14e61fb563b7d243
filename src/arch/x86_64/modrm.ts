// The memory operand of a 64-bit instruction, decoded from its bytes: what the emulation assist needs to
// complete an instruction that reads or writes memory (emulation-assist.ts).
//
// An instruction in 64-bit mode is: legacy prefixes, an optional REX prefix (0x40-0x4f), the opcode, a
// ModRM byte, an optional SIB byte and an optional displacement (Intel SDM vol. 2A 2.1 and 2.2, Tables 2-2
// and 2-3 for 32/64-bit addressing, Table 2-4 for REX). The operand's address is
//   segment base (FS or GS only; the others are 0 in 64-bit mode) + base + index * scale + displacement,
// or RIP-relative (ModRM mod = 00, r/m = 101): the address of the next instruction + a 32-bit displacement.
// Only what completes a memory-operand instruction is decoded; anything else (a register operand, a
// 32-bit address-size prefix, an unexpected opcode) gives undefined, and the caller does not guess.

/** General-purpose registers in encoding order (SDM vol. 2A Table 2-2, with REX.B/X/R giving r8-r15), as KVM's kvm_regs names them. */
export const GPR_BY_NUMBER = ["rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"] as const;

/** The prefixes that change a memory operand's segment in 64-bit mode (SDM vol. 1 3.3.7.1). */
const FS_PREFIX = 0x64;
const GS_PREFIX = 0x65;
/** CS, SS, DS and ES overrides: accepted and ignored in 64-bit mode. */
const NULL_SEGMENT_PREFIXES = [0x2e, 0x36, 0x3e, 0x26];

export interface MemoryOperand {
  /** ModRM.reg without REX.R: the /digit that selects the operation in group opcodes such as 0F AE. */
  digit: number;
  /** The operand's linear address. */
  address: bigint;
  /** Bytes of the whole instruction: RIP moves on by this much once it is done. */
  length: number;
}

export interface OperandContext {
  /** A general-purpose register's value, by kvm_regs name. */
  gpr(name: (typeof GPR_BY_NUMBER)[number]): bigint;
  /** The instruction's own address (RIP), for RIP-relative operands. */
  rip: bigint;
  /** FS and GS bases, for those prefixes. */
  fsBase: bigint;
  gsBase: bigint;
}

const MASK64 = (1n << 64n) - 1n;

/**
 * Decode `bytes` as `opcode` with a memory operand. Returns undefined if the bytes are not that opcode,
 * the operand is a register, or the instruction uses something outside what this decoder reads.
 */
export function decodeMemoryOperand(bytes: readonly number[], opcode: readonly number[], ctx: OperandContext): MemoryOperand | undefined {
  let i = 0;
  let segmentBase = 0n;
  for (; i < bytes.length; i++) {
    const b = bytes[i]!;
    if (b === FS_PREFIX) segmentBase = ctx.fsBase;
    else if (b === GS_PREFIX) segmentBase = ctx.gsBase;
    else if (!NULL_SEGMENT_PREFIXES.includes(b)) break;
  }
  // REX: 0100WRXB. W (operand size) does not move the operand; R is not needed for a /digit.
  const rex = bytes[i] !== undefined && (bytes[i]! & 0xf0) === 0x40 ? bytes[i++]! : 0;
  const rexX = (rex >> 1) & 1;
  const rexB = rex & 1;
  for (const o of opcode) if (bytes[i++] !== o) return undefined;
  const modrm = bytes[i++];
  if (modrm === undefined) return undefined;
  const mod = modrm >> 6;
  const rm = modrm & 7;
  if (mod === 3) return undefined; // a register operand
  const reg = (n: number) => ctx.gpr(GPR_BY_NUMBER[n]!);

  let address = 0n;
  let ripRelative = false;
  let disp32 = mod === 2;
  if (rm === 4) {
    // SIB: scale (2 bits), index (3 bits, + REX.X), base (3 bits, + REX.B) (SDM vol. 2A Table 2-3).
    const sib = bytes[i++];
    if (sib === undefined) return undefined;
    const index = ((sib >> 3) & 7) | (rexX << 3);
    if (index !== 4) address += reg(index) << BigInt(sib >> 6); // index 100 (rsp) means "no index"
    if ((sib & 7) === 5 && mod === 0) disp32 = true; // no base, a 32-bit displacement
    else address += reg((sib & 7) | (rexB << 3));
  } else if (rm === 5 && mod === 0) {
    ripRelative = true;
    disp32 = true;
  } else {
    address += reg(rm | (rexB << 3));
  }
  if (mod === 1) {
    const d = bytes[i++];
    if (d === undefined) return undefined;
    address += BigInt((d << 24) >> 24); // sign-extended 8-bit displacement
  } else if (disp32) {
    if (i + 4 > bytes.length) return undefined;
    address += BigInt((bytes[i]! | (bytes[i + 1]! << 8) | (bytes[i + 2]! << 16) | (bytes[i + 3]! << 24)) | 0);
    i += 4;
  }
  if (ripRelative) address += ctx.rip + BigInt(i);
  return { digit: (modrm >> 3) & 7, address: (address + segmentBase) & MASK64, length: i };
}
