// Classic BPF, as seccomp runs it: the instruction encoding (struct sock_filter), the program header
// (struct sock_fprog), the data a filter reads (struct seccomp_data) and the return values (SECCOMP_RET_*).
//
// A seccomp filter is a classic BPF program (Documentation/networking/filter.rst, "BPF engine and
// instruction set"; Documentation/userspace-api/seccomp_filter.rst) that the kernel runs on every system
// call of the threads it is attached to. Its input is a struct seccomp_data; it loads 32-bit words of it
// into the accumulator A, compares A with constants and jumps forward, and finally returns a 32-bit action.
// Jumps only go forward, so every program ends: the kernel checks that when the filter is installed.
//
// kindling assembles its filter in TypeScript from these pieces (filter.ts); no libseccomp, no C.

import { struct, array, StructView } from "../kvm/struct.ts";

/** <linux/filter.h>: one instruction. `jt`/`jf`: how many instructions to skip when a test is true/false. */
export const sock_filter = struct("sock_filter", [["code", "u16"], ["jt", "u8"], ["jf", "u8"], ["k", "u32"]], { size: 8 });

/** <linux/filter.h>: the program handed to seccomp(2): its length in instructions and a pointer to them. */
export const sock_fprog = struct("sock_fprog", [["len", "u16"], ["filter", "u64"]], { size: 16 });

/** <linux/seccomp.h>: what the filter sees of a system call. args[i] is 64 bits, low word first (x86_64). */
export const seccomp_data = struct("seccomp_data", [
  ["nr", "i32"], ["arch", "u32"], ["instruction_pointer", "u64"], ["args", array("u64", 6)],
], { size: 64 });

// <linux/bpf_common.h>: instruction classes, sizes, modes, operations and sources, ORed into `code`.
export const BPF_LD = 0x00;
export const BPF_ALU = 0x04;
export const BPF_JMP = 0x05;
export const BPF_RET = 0x06;
export const BPF_W = 0x00;
export const BPF_ABS = 0x20;
export const BPF_AND = 0x50;
export const BPF_JA = 0x00;
export const BPF_JEQ = 0x10;
export const BPF_JGT = 0x20;
export const BPF_JGE = 0x30;
export const BPF_JSET = 0x40;
export const BPF_K = 0x00;

/** <linux/filter.h>: BPF_MAXINSNS, the longest program the kernel takes. */
export const BPF_MAXINSNS = 4096;

// <linux/seccomp.h>: actions a filter returns (the high 16 bits; the low 16 are SECCOMP_RET_DATA).
export const SECCOMP_RET_KILL_PROCESS = 0x80000000;
export const SECCOMP_RET_KILL_THREAD = 0x00000000;
export const SECCOMP_RET_TRAP = 0x00030000;
export const SECCOMP_RET_ERRNO = 0x00050000;
export const SECCOMP_RET_LOG = 0x7ffc0000;
export const SECCOMP_RET_ALLOW = 0x7fff0000;
export const SECCOMP_RET_DATA = 0x0000ffff;

/** <linux/audit.h>: AUDIT_ARCH_X86_64 = EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE. */
export const AUDIT_ARCH_X86_64 = 0xc000003e;
/** arch/x86/include/uapi/asm/unistd.h: x32 system calls have this bit set in nr; kindling refuses them. */
export const __X32_SYSCALL_BIT = 0x40000000;

/** One instruction, as numbers (encode() turns a program into the kernel's bytes). */
export interface Insn {
  code: number;
  jt: number;
  jf: number;
  k: number;
}

/** BPF_STMT(code, k): an instruction without jumps. */
export function stmt(code: number, k: number): Insn {
  return { code, jt: 0, jf: 0, k: k >>> 0 };
}

/** BPF_JUMP(code, k, jt, jf): a conditional jump; jt and jf are 8-bit forward offsets. */
export function jump(code: number, k: number, jt: number, jf: number): Insn {
  if (jt < 0 || jt > 255 || jf < 0 || jf > 255) throw new Error(`BPF jump offsets ${jt}/${jf} do not fit in 8 bits`);
  return { code, jt, jf, k: k >>> 0 };
}

/** A = the 32-bit word at `offset` of seccomp_data. */
export const loadWord = (offset: number) => stmt(BPF_LD | BPF_W | BPF_ABS, offset);
/** return `action`. */
export const ret = (action: number) => stmt(BPF_RET | BPF_K, action);

/** The program as the kernel reads it: an array of struct sock_filter. */
export function encode(program: readonly Insn[]): Uint8Array {
  if (program.length === 0 || program.length > BPF_MAXINSNS) throw new Error(`a BPF program has 1 to ${BPF_MAXINSNS} instructions, not ${program.length}`);
  const bytes = new Uint8Array(program.length * sock_filter.size);
  program.forEach((insn, i) => new StructView(sock_filter, bytes, i * sock_filter.size).assign({ ...insn }));
  return bytes;
}

/**
 * Run a program on one system call, as the kernel would (for tests and for explaining a filter without
 * installing it). Returns the action.
 */
export function run(program: readonly Insn[], data: { nr: number; arch?: number; args?: readonly (number | bigint)[] }): number {
  const d = new StructView(seccomp_data);
  d.assign({ nr: data.nr, arch: data.arch ?? AUDIT_ARCH_X86_64 });
  (data.args ?? []).forEach((a, i) => d.set(`args.${i}`, BigInt(a)));
  const words = new DataView(d.bytes.buffer, d.bytes.byteOffset, d.bytes.byteLength);
  let a = 0;
  for (let pc = 0; pc < program.length; pc++) {
    const { code, jt, jf, k } = program[pc]!;
    switch (code) {
      case BPF_LD | BPF_W | BPF_ABS:
        a = words.getUint32(k, true);
        break;
      case BPF_ALU | BPF_AND | BPF_K:
        a = (a & k) >>> 0;
        break;
      case BPF_JMP | BPF_JA:
        pc += k;
        break;
      case BPF_JMP | BPF_JEQ | BPF_K:
        pc += a === k ? jt : jf;
        break;
      case BPF_JMP | BPF_JGT | BPF_K:
        pc += a > k ? jt : jf;
        break;
      case BPF_JMP | BPF_JGE | BPF_K:
        pc += a >= k ? jt : jf;
        break;
      case BPF_JMP | BPF_JSET | BPF_K:
        pc += (a & k) !== 0 ? jt : jf;
        break;
      case BPF_RET | BPF_K:
        return k;
      default:
        throw new Error(`instruction ${pc}: opcode 0x${code.toString(16)} is not one kindling emits`);
    }
  }
  throw new Error("the program ran off its end without returning");
}
