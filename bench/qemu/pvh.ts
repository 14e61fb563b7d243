// The probe guests as PVH ELF kernels for QEMU, so QEMU boots the very bytes kindling boots.
//
// kindling copies a probe's flat binary to HIMEM_START and enters it in 64-bit mode. QEMU's microvm loads
// an ELF through its firmware (qboot) and enters it at the address in the ELF's XEN_ELFNOTE_PHYS32_ENTRY
// note, in 32-bit protected mode with paging off. This file assembles the probe sources again with the
// same --defsym values as guest/probes/build.ts, and links them at HIMEM_START with:
//   - first-write: only the note (pvh-note.S), pointing at _start. The probe's instructions encode the same
//     way in 32-bit and 64-bit mode (see first-write.S), so it needs nothing else.
//   - exits: the note and pvh-long.S, which enters 64-bit mode and CPL3 as kindling's VMM would have set it
//     up, then jumps to one of three places in the probe: `user` (the port loop, then the MMIO loop), the
//     MMIO loop, or `reset` (no loop: the baseline). The bench times each from a marker byte to QEMU's exit.

import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PROBE_SYMBOLS } from "../../guest/probes/probes.ts";
import { BOOT_CS, BOOT_DS, USER_CS, USER_DS, bootGdt } from "../../src/arch/x86_64/gdt.ts";
import { GiB, HIMEM_START, MiB, SCRATCH_MMIO_START } from "../../src/arch/x86_64/layout.ts";
import { EFER_LME, X86_CR0_ET, X86_CR0_NE, X86_CR0_PE, X86_CR0_PG, X86_CR4_PAE } from "../../src/arch/x86_64/regs.ts";
import { PTE_P, PTE_PS, PTE_RW, PTE_US } from "../../src/arch/x86_64/paging.ts";

const PROBE_DIR = join(import.meta.dir, "../../guest/probes");
/** xen/include/public/elfnote.h */
const XEN_ELFNOTE_PHYS32_ENTRY = 18;
/** IA32_EFER (Intel SDM vol. 4, Table 2-2). */
const MSR_EFER = 0xc0000080;
/** RFLAGS: the reserved bit 1, and IOPL = 3 in bits 12-13 (SDM vol. 1 3.4.3). */
const RFLAGS_IOPL3 = 0x3002;
/** The byte pvh-long.S prints on COM1 just before it drops to CPL3. */
export const PVH_MARKER = "<";
const TWO_MIB = 2 * MiB;

export interface PvhProbes {
  dir: string;
  firstWrite: string;
  /** The counter probe (snapshots): its instructions, like first-write's, run in 32-bit mode as they are. */
  counter: string;
  /** The exits probe entered at `user` (both loops), at its MMIO loop, and at `reset` (no loop). */
  exits: { both: string; mmio: string; none: string };
}

function run(cmd: string[], cwd: string): string {
  const r = Bun.spawnSync(cmd, { cwd, stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`${cmd.join(" ")} failed:\n${r.stderr.toString()}${r.stdout.toString()}`);
  return r.stdout.toString();
}

const hex = (v: number | bigint) => `0x${v.toString(16)}`;
const defsyms = (syms: Record<string, number | bigint>) => Object.entries(syms).flatMap(([k, v]) => ["--defsym", `${k}=${hex(v)}`]);

function benchSymbols(): Record<string, number | bigint> {
  const gdt = bootGdt();
  const scratchPage = Math.floor(SCRATCH_MMIO_START / TWO_MIB) * TWO_MIB;
  const pdptIndex = Math.floor(scratchPage / GiB);
  if (pdptIndex < 1 || pdptIndex > 3) throw new Error("pvh-long.S maps SCRATCH_MMIO_START through PDPT entries 1-3 only");
  return {
    XEN_ELFNOTE_PHYS32_ENTRY, MSR_EFER, EFER_LME, X86_CR4_PAE, COM1_PORT: PROBE_SYMBOLS.COM1_PORT!,
    PVH_CR0: (X86_CR0_PE | X86_CR0_ET | X86_CR0_NE | X86_CR0_PG) >>> 0,
    BOOT_CS, BOOT_DS, USER_CS, USER_DS, PVH_RFLAGS_USER: RFLAGS_IOPL3, PVH_MARKER: PVH_MARKER.charCodeAt(0),
    // Descriptors 0-5 of kindling's boot GDT (null, unused, kernel code/data, user data/code); no TSS.
    ...Object.fromEntries(gdt.slice(0, 6).map((d, i) => [`GDT_${i}`, d])),
    PTE_FLAGS: PTE_P | PTE_RW | PTE_US, PTE_PS,
    SCRATCH_2M_PAGE: scratchPage, SCRATCH_PDPT_INDEX: pdptIndex, SCRATCH_PD_INDEX: (scratchPage % GiB) / TWO_MIB,
  };
}

function assemble(src: string, out: string, dir: string, extra: Record<string, number | bigint> = {}): string {
  run(["as", "--64", "-I", PROBE_DIR, ...defsyms({ ...PROBE_SYMBOLS, ...extra }), "-o", out, src], dir);
  return out;
}

function link(out: string, objs: string[], dir: string, syms: Record<string, string> = {}): string {
  const ds = Object.entries(syms).flatMap(([k, v]) => ["--defsym", `${k}=${v}`]);
  // -n: no page alignment, so nothing lands below HIMEM_START (qboot lives just under 1 MiB).
  run(["ld", "-m", "elf_x86_64", "-n", "--no-warn-rwx-segments", "-Ttext", hex(HIMEM_START), "-e", "pvh_entry", ...ds, "-o", out, ...objs], dir);
  return out;
}

/** The address of a symbol (local ones too) in a linked ELF, from `nm`. */
function symbol(elf: string, name: string, dir: string): number {
  const line = run(["nm", elf], dir).split("\n").find((l) => l.split(" ")[2] === name);
  if (!line) throw new Error(`${elf}: no symbol ${name}`);
  return parseInt(line.split(" ")[0]!, 16);
}

/** The address of the only occurrence of an instruction (assembled alone) in a linked ELF's .text. */
function instructionAddress(elf: string, insn: string, dir: string): number {
  const src = join(dir, "insn.S");
  writeFileSync(src, `\t.code64\n\t${insn}\n`);
  assemble(src, join(dir, "insn.o"), dir);
  run(["objcopy", "-O", "binary", "-j", ".text", join(dir, "insn.o"), join(dir, "insn.bin")], dir);
  run(["objcopy", "-O", "binary", "-j", ".text", elf, join(dir, "text.bin")], dir);
  const needle = readFileSync(join(dir, "insn.bin"));
  const text = readFileSync(join(dir, "text.bin"));
  const at = text.indexOf(needle);
  if (at < 0 || text.indexOf(needle, at + 1) >= 0) throw new Error(`"${insn}" is not exactly once in ${elf}`);
  return HIMEM_START + at;
}

/** Build the PVH ELFs into a fresh temporary directory (a few `as`/`ld` runs, tens of milliseconds). */
export function buildPvhProbes(): PvhProbes {
  const dir = mkdtempSync(join(tmpdir(), "kindling-bench-pvh-"));
  const syms = benchSymbols();
  const note = assemble(join(import.meta.dir, "pvh-note.S"), join(dir, "pvh-note.o"), dir, syms);
  const long = assemble(join(import.meta.dir, "pvh-long.S"), join(dir, "pvh-long.o"), dir, syms);

  const fw = assemble(join(PROBE_DIR, "first-write.S"), join(dir, "first-write.o"), dir);
  const firstWrite = link(join(dir, "first-write.elf"), [fw, note], dir, { pvh_entry: "_start" });
  const ct = assemble(join(PROBE_DIR, "counter.S"), join(dir, "counter.o"), dir);
  const counter = link(join(dir, "counter.elf"), [ct, note], dir, { pvh_entry: "_start" });

  // The probe's object comes first, so its addresses do not depend on USER_ENTRY: link once to find them.
  const ex = assemble(join(PROBE_DIR, "exits.S"), join(dir, "exits.o"), dir);
  const probe = link(join(dir, "exits-probe.elf"), [ex, long, note], dir, { USER_ENTRY: "0" });
  const entries = {
    both: symbol(probe, "user", dir),
    mmio: instructionAddress(probe, `mov $${hex(SCRATCH_MMIO_START)}, %rbx`, dir),
    none: symbol(probe, "reset", dir),
  };
  if (symbol(probe, "pvh_user_stack_top", dir) > TWO_MIB) throw new Error("the exits PVH image outgrew the 2 MiB page pvh-long.S maps");
  const exits = Object.fromEntries(
    Object.entries(entries).map(([k, addr]) => [k, link(join(dir, `exits-${k}.elf`), [ex, long, note], dir, { USER_ENTRY: hex(addr) })]),
  ) as PvhProbes["exits"];
  return { dir, firstWrite, counter, exits };
}

if (import.meta.main) console.log(buildPvhProbes());
