// Loading an uncompressed kernel: the ELF64 `vmlinux` the kernel build leaves at the top of its tree.
//
// The ELF header (System V gABI, "ELF Header") says what the file is; its program headers ("Program
// Header") say which bytes go where. Every PT_LOAD segment is copied to its physical address p_paddr, and
// the part of p_memsz beyond p_filesz (.bss) is zeroed. For x86_64 vmlinux, e_entry is already physical:
// arch/x86/kernel/vmlinux.lds.S sets ENTRY(phys_startup_64), the physical address of startup_64, while the
// segments' p_vaddr are the kernel's virtual addresses (0xffffffff81000000 and up). A loader that finds
// e_entry inside a segment's virtual range instead converts it with that segment's p_vaddr -> p_paddr.
//
// A kernel built with CONFIG_PVH also carries an ELF note, XEN_ELFNOTE_PHYS32_ENTRY, naming a 32-bit
// entry point for PVH boot (pvh.ts); it is returned as pvhEntry.

import type { GuestMemory } from "../memory.ts";
import { StructView, array, struct } from "../kvm/struct.ts";
import { HIMEM_START, MMIO32_END } from "../arch/x86_64/layout.ts";

export const Elf64_Ehdr = struct("Elf64_Ehdr", [
  ["e_ident", array("u8", 16)],
  ["e_type", "u16"],
  ["e_machine", "u16"],
  ["e_version", "u32"],
  ["e_entry", "u64"],
  ["e_phoff", "u64"],
  ["e_shoff", "u64"],
  ["e_flags", "u32"],
  ["e_ehsize", "u16"],
  ["e_phentsize", "u16"],
  ["e_phnum", "u16"],
  ["e_shentsize", "u16"],
  ["e_shnum", "u16"],
  ["e_shstrndx", "u16"],
], { size: 64 });

export const Elf64_Phdr = struct("Elf64_Phdr", [
  ["p_type", "u32"],
  ["p_flags", "u32"],
  ["p_offset", "u64"],
  ["p_vaddr", "u64"],
  ["p_paddr", "u64"],
  ["p_filesz", "u64"],
  ["p_memsz", "u64"],
  ["p_align", "u64"],
], { size: 56 });

export const Elf64_Nhdr = struct("Elf64_Nhdr", [["n_namesz", "u32"], ["n_descsz", "u32"], ["n_type", "u32"]], { size: 12 });

// <elf.h> names.
export const ELFMAG = "\x7fELF";
export const EI_CLASS = 4;
export const EI_DATA = 5;
export const ELFCLASS32 = 1;
export const ELFCLASS64 = 2;
export const ELFDATA2LSB = 1;
export const ET_EXEC = 2;
export const ET_DYN = 3;
export const EM_X86_64 = 62;
export const PT_LOAD = 1;
export const PT_NOTE = 4;
/** xen/include/public/elfnote.h: the note (owner "Xen") holding the PVH 32-bit entry's physical address. */
export const XEN_ELFNOTE_PHYS32_ENTRY = 18;

export class KernelImageError extends Error {
  override name = "KernelImageError";
}

export interface ElfSegment {
  paddr: number;
  filesz: number;
  memsz: number;
}

export interface ElfKernel {
  /** Physical address of the 64-bit entry point (startup_64). */
  entry: number;
  /** Physical address of the PVH 32-bit entry, when the kernel has a XEN_ELFNOTE_PHYS32_ENTRY note. */
  pvhEntry?: number;
  /** First byte after the highest loaded segment (its .bss included). */
  kernelEnd: number;
  segments: ElfSegment[];
}

const hex = (n: number | bigint) => `0x${n.toString(16)}`;
const SAFE = BigInt(Number.MAX_SAFE_INTEGER);

export function isElf(image: Uint8Array): boolean {
  return image.byteLength >= 4 && [...ELFMAG].every((c, i) => image[i] === c.charCodeAt(0));
}

/** Check an ELF64 x86_64 executable and copy its PT_LOAD segments into guest memory. */
export function loadElf(mem: GuestMemory, image: Uint8Array): ElfKernel {
  if (image.byteLength < Elf64_Ehdr.size) {
    throw new KernelImageError(`ELF: truncated file: ${image.byteLength} bytes, an ELF64 header needs ${Elf64_Ehdr.size}`);
  }
  if (!isElf(image)) throw new KernelImageError("ELF: bad magic: the file does not start with \\x7fELF");
  const eh = new StructView(Elf64_Ehdr, image);
  const cls = eh.get(`e_ident.${EI_CLASS}`);
  if (cls === ELFCLASS32) throw new KernelImageError("ELF: 32-bit ELF (ELFCLASS32); kindling boots 64-bit x86_64 kernels only");
  if (cls !== ELFCLASS64) throw new KernelImageError(`ELF: unknown class ${cls} in e_ident[EI_CLASS]; expected ELFCLASS64 (2)`);
  const data = eh.get(`e_ident.${EI_DATA}`);
  if (data !== ELFDATA2LSB) throw new KernelImageError(`ELF: not little-endian (e_ident[EI_DATA] is ${data}, expected ELFDATA2LSB)`);
  const machine = eh.get("e_machine");
  if (machine !== EM_X86_64) throw new KernelImageError(`ELF: e_machine is ${machine}, expected EM_X86_64 (${EM_X86_64})`);
  const type = eh.get("e_type");
  if (type !== ET_EXEC) {
    throw new KernelImageError(`ELF: e_type is ${type}${type === ET_DYN ? " (ET_DYN)" : ""}, expected ET_EXEC (${ET_EXEC}): a vmlinux is a fixed-address executable`);
  }
  if (eh.get("e_phentsize") !== Elf64_Phdr.size) {
    throw new KernelImageError(`ELF: e_phentsize is ${eh.get("e_phentsize")}, expected ${Elf64_Phdr.size}`);
  }

  // Program headers: all inside the file.
  const phnum = eh.get("e_phnum");
  const phoff = eh.getBig("e_phoff");
  if (phnum === 0) throw new KernelImageError("ELF: no program headers (e_phnum is 0)");
  if (phoff + BigInt(phnum * Elf64_Phdr.size) > BigInt(image.byteLength)) {
    throw new KernelImageError(`ELF: truncated file: ${phnum} program headers at ${hex(phoff)} run past its ${image.byteLength} bytes`);
  }
  const phdrs = Array.from({ length: phnum }, (_, i) => new StructView(Elf64_Phdr, image, Number(phoff) + i * Elf64_Phdr.size));

  // Check every PT_LOAD segment before copying anything.
  const loads: { paddr: number; vaddr: bigint; offset: number; filesz: number; memsz: number }[] = [];
  phdrs.forEach((ph, i) => {
    if (ph.get("p_type") !== PT_LOAD) return;
    const [offset, filesz, memsz, paddr] = [ph.getBig("p_offset"), ph.getBig("p_filesz"), ph.getBig("p_memsz"), ph.getBig("p_paddr")];
    if (offset + filesz > BigInt(image.byteLength)) {
      throw new KernelImageError(`ELF: truncated file: segment ${i}'s ${filesz} bytes at file offset ${hex(offset)} run past its ${image.byteLength} bytes`);
    }
    if (filesz > memsz) throw new KernelImageError(`ELF: segment ${i} has p_filesz ${filesz} > p_memsz ${memsz}`);
    if (paddr < BigInt(HIMEM_START)) {
      throw new KernelImageError(`ELF: segment ${i} loads at ${hex(paddr)}, below HIMEM_START (${hex(HIMEM_START)}) where kindling keeps its boot structures`);
    }
    if (paddr + memsz > SAFE || !mem.contains(Number(paddr), Number(memsz))) {
      throw new KernelImageError(`ELF: segment ${i} [${hex(paddr)}, ${hex(paddr + memsz)}) is outside guest memory: it does not fit in RAM (${describeRam(mem)})`);
    }
    loads.push({ paddr: Number(paddr), vaddr: ph.getBig("p_vaddr"), offset: Number(offset), filesz: Number(filesz), memsz: Number(memsz) });
  });
  if (loads.length === 0) throw new KernelImageError("ELF: no PT_LOAD segments: nothing to load");

  for (const s of loads) {
    mem.write(s.paddr, image.subarray(s.offset, s.offset + s.filesz));
    mem.fill(s.paddr + s.filesz, s.memsz - s.filesz, 0);
  }

  // The entry point: physical already, or virtual inside a segment (converted).
  const e = eh.getBig("e_entry");
  let entry: number | undefined;
  for (const s of loads) {
    if (e >= BigInt(s.paddr) && e < BigInt(s.paddr + s.memsz)) entry = Number(e);
  }
  if (entry === undefined) {
    for (const s of loads) {
      if (e >= s.vaddr && e < s.vaddr + BigInt(s.memsz)) entry = s.paddr + Number(e - s.vaddr);
    }
  }
  if (entry === undefined) throw new KernelImageError(`ELF: e_entry ${hex(e)} is not inside any PT_LOAD segment`);

  const inLoaded = (a: number) => loads.some((s) => a >= s.paddr && a < s.paddr + s.memsz);
  const pvhEntry = findPvhEntry(image, phdrs);
  if (pvhEntry !== undefined && !inLoaded(pvhEntry)) {
    throw new KernelImageError(`ELF: PVH entry ${hex(pvhEntry)} (XEN_ELFNOTE_PHYS32_ENTRY) is not inside any PT_LOAD segment`);
  }

  return {
    entry,
    pvhEntry,
    kernelEnd: Math.max(...loads.map((s) => s.paddr + s.memsz)),
    segments: loads.map(({ paddr, filesz, memsz }) => ({ paddr, filesz, memsz })),
  };
}

/**
 * Search the PT_NOTE segments for the "Xen" note XEN_ELFNOTE_PHYS32_ENTRY. Each note is an Elf64_Nhdr,
 * then the name and the descriptor, each padded to 4 bytes (gABI, "Note Section"). Linux emits the address
 * as a .quad on x86_64 (arch/x86/platform/pvh/head.S); a 4-byte descriptor is accepted too.
 */
function findPvhEntry(image: Uint8Array, phdrs: StructView[]): number | undefined {
  // Plain arithmetic, not `(n + 3) & ~3`: the sizes are 32-bit unsigned and bitwise operators would wrap
  // them to negative numbers (n_namesz 0x7ffffffd pads to -2^31), letting a crafted note point back at itself.
  const pad4 = (n: number) => n + ((4 - (n % 4)) % 4);
  for (const [i, ph] of phdrs.entries()) {
    if (ph.get("p_type") !== PT_NOTE) continue;
    const offset = ph.getBig("p_offset");
    const size = ph.getBig("p_filesz");
    if (offset + size > BigInt(image.byteLength)) {
      throw new KernelImageError(`ELF: truncated file: note segment ${i} at ${hex(offset)} runs past its ${image.byteLength} bytes`);
    }
    const notes = image.subarray(Number(offset), Number(offset + size));
    let at = 0;
    while (at + Elf64_Nhdr.size <= notes.byteLength) {
      const nh = new StructView(Elf64_Nhdr, notes, at);
      const namesz = nh.get("n_namesz");
      const descsz = nh.get("n_descsz");
      const nameAt = at + Elf64_Nhdr.size;
      const descAt = nameAt + pad4(namesz);
      const next = descAt + pad4(descsz);
      if (next > notes.byteLength) throw new KernelImageError(`ELF: malformed note in segment ${i}: it runs past the segment's end`);
      // Every step moves forward (the header alone is 12 bytes); a note that does not would loop forever.
      if (next <= at) throw new KernelImageError(`ELF: malformed note in segment ${i}: its sizes do not move past it`);
      const name = new TextDecoder().decode(notes.subarray(nameAt, nameAt + namesz)).replace(/\0+$/, "");
      if (name === "Xen" && nh.get("n_type") === XEN_ELFNOTE_PHYS32_ENTRY) {
        const dv = new DataView(notes.buffer, notes.byteOffset + descAt, descsz);
        let addr: bigint;
        if (descsz === 8) addr = dv.getBigUint64(0, true);
        else if (descsz === 4) addr = BigInt(dv.getUint32(0, true));
        else throw new KernelImageError(`ELF: XEN_ELFNOTE_PHYS32_ENTRY has a ${descsz}-byte descriptor, expected 4 or 8`);
        if (addr >= BigInt(MMIO32_END)) throw new KernelImageError(`ELF: PVH entry ${hex(addr)} is not a 32-bit address`);
        return Number(addr);
      }
      at = next;
    }
  }
  return undefined;
}

function describeRam(mem: GuestMemory): string {
  return mem.regions.map((r) => `[${hex(r.gpa)}, ${hex(r.gpa + r.bytes.byteLength)})`).join(", ");
}
