// A guest kernel the API can boot in milliseconds: an ELF64 executable (what PUT /boot-source takes) whose
// code, entered in 64-bit mode at CPL0 like a vmlinux's startup_64, writes a line to COM1 with `out` and
// then pulses the i8042 reset line (the VM ends with "reset"). A dozen instructions per character, so even
// a host that emulates guest CPL0 code runs it at once. For tests of the API path (jailer, seccomp) that
// need a real boot without the 1-2 minutes of a Linux kernel here.

import { Elf64_Ehdr, Elf64_Phdr, EI_CLASS, EI_DATA, ELFCLASS64, ELFDATA2LSB, ET_EXEC, EM_X86_64, PT_LOAD } from "../../src/loader/elf.ts";
import { StructView } from "../../src/kvm/struct.ts";
import { COM1_PORT, HIMEM_START, I8042_COMMAND_PORT } from "../../src/arch/x86_64/layout.ts";

/** The i8042 command that pulses the CPU reset line (the 8042's "pulse output port" 0xfe). */
const I8042_RESET_CPU = 0xfe;

/** x86-64 machine code: `mov dx, COM1; (mov al, c; out dx, al)*; mov al, 0xfe; out 0x64, al; hlt; jmp $-1`. */
function code(text: string): number[] {
  const out = [0x66, 0xba, COM1_PORT & 0xff, COM1_PORT >> 8]; // mov dx, imm16
  for (const c of new TextEncoder().encode(text)) out.push(0xb0, c, 0xee); // mov al, imm8; out dx, al
  out.push(0xb0, I8042_RESET_CPU, 0xe6, I8042_COMMAND_PORT); // mov al, 0xfe; out imm8, al
  out.push(0xf4, 0xeb, 0xfd); // hlt; jmp back to the hlt
  return out;
}

/** An ELF64 ET_EXEC with one PT_LOAD at HIMEM_START holding the code; e_entry is its first byte. */
export function serialElf(text: string): Uint8Array {
  const body = code(text);
  const at = Elf64_Ehdr.size + Elf64_Phdr.size;
  const image = new Uint8Array(at + body.length);
  image.set([0x7f, 0x45, 0x4c, 0x46]);
  const eh = new StructView(Elf64_Ehdr, image);
  eh.set(`e_ident.${EI_CLASS}`, ELFCLASS64);
  eh.set(`e_ident.${EI_DATA}`, ELFDATA2LSB);
  eh.set("e_ident.6", 1); // EV_CURRENT
  eh.assign({ e_type: ET_EXEC, e_machine: EM_X86_64, e_version: 1, e_entry: HIMEM_START, e_phoff: Elf64_Ehdr.size });
  eh.assign({ e_ehsize: Elf64_Ehdr.size, e_phentsize: Elf64_Phdr.size, e_phnum: 1 });
  const ph = new StructView(Elf64_Phdr, image, Elf64_Ehdr.size);
  ph.assign({ p_type: PT_LOAD, p_flags: 5, p_offset: at, p_vaddr: HIMEM_START, p_paddr: HIMEM_START });
  ph.assign({ p_filesz: body.length, p_memsz: body.length, p_align: 0x1000 });
  image.set(body, at);
  return image;
}

/** A log line of the VMM on stdout (consola's plain or fancy form), to remove from what the guest printed. */
export const LOG_LINE = /(?:\[(?:info|debug|success|warn|error)\]|[ℹ⚙✔]) [^\n]*\n/g;
