// The guest-physical memory map of a kindling microVM, in ascending order.
//
// Every guest-physical address kindling uses is defined here and nowhere else. Each region is derived from
// its neighbour where it can be, and docs/memory-map.md shows the same map as a table (a test keeps them in
// agreement).
//
//   0x0000_0000  real-mode IVT and BIOS data area (left zero; Linux's 64-bit entry never reads them)
//   0x0000_0500  boot GDT and IDT (what the vCPU's descriptor-table registers point at on entry)
//   0x0000_1000  boot TSS and its I/O permission bitmap
//   0x0000_6000  PVH boot: hvm_start_info, module list and memory map (only when booting through PVH)
//   0x0000_7000  zero page (struct boot_params)
//   0x0000_8000  boot stack (grows down from BOOT_STACK_POINTER)
//   0x0000_9000  identity-mapping page tables (PML4, PDPT, 4 page directories)
//   0x0001_0000  real-mode probe guests are loaded here
//   0x0002_0000  kernel command line
//   0x0009_fc00  EBDA: the MP table for the vCPUs
//   0x000a_0000  legacy VGA and ROM hole: not RAM in the e820 map
//   0x0010_0000  HIMEM: the kernel (and long-mode probe guests) load here; RAM continues
//   0xc000_0000  32-bit MMIO gap: boot timer, virtio-mmio devices, IOAPIC, local APIC, KVM's TSS
//   0x1_0000_0000 RAM above 4 GiB, when the VM has more than fits below the gap

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;
export const PAGE_SIZE = 4 * KiB;

// ---- Low memory: boot structures ----

/** Boot GDT (8 entries of 8 bytes, the TSS takes two): see gdt.ts. */
export const BOOT_GDT_START = 0x500;
export const BOOT_GDT_MAX_ENTRIES = 8;
/** Boot IDT: empty. Interrupts stay disabled until the guest loads its own (Linux does, early). */
export const BOOT_IDT_START = BOOT_GDT_START + BOOT_GDT_MAX_ENTRIES * 8;
export const BOOT_IDT_SIZE = 8;
/**
 * 64-bit TSS (104 bytes, Intel SDM vol. 3A 8.7): its RSP0 is the stack a CPL3 probe's interrupts land on.
 * An I/O permission bitmap follows it (SDM vol. 1 19.5.2): one bit per port, 0 = CPL3 may use the port,
 * and a final all-ones byte. Probe guests do port I/O at CPL3 through it.
 */
export const BOOT_TSS_START = 0x1000;
export const BOOT_TSS_SIZE = 0x68;
export const BOOT_TSS_IO_BITMAP_START = BOOT_TSS_START + BOOT_TSS_SIZE;
export const BOOT_TSS_IO_BITMAP_SIZE = 0x10000 / 8 + 1;
export const BOOT_TSS_END = BOOT_TSS_IO_BITMAP_START + BOOT_TSS_IO_BITMAP_SIZE;

/** PVH boot: struct hvm_start_info (xen/include/public/arch-x86/hvm/start_info.h); RBX points here. */
export const PVH_INFO_START = 0x6000;
/** PVH boot: the module list (one struct hvm_modlist_entry, the initrd), after hvm_start_info. */
export const PVH_MODLIST_START = PVH_INFO_START + 0x40;
/** PVH boot: the memory map (struct hvm_memmap_table_entry[]), up to the zero page. */
export const PVH_MEMMAP_START = PVH_MODLIST_START + 0x40;
export const PVH_MEMMAP_MAX_ENTRIES = 128;

/** struct boot_params, "the zero page" (Documentation/x86/boot.rst). */
export const ZERO_PAGE_START = 0x7000;
/** Initial RSP for the kernel and for probes' CPL0 code; 16-byte aligned below the page tables. */
export const BOOT_STACK_START = 0x8000;
export const BOOT_STACK_POINTER = 0x8ff0;

/** Identity-mapping page tables: 1 PML4 page, 1 PDPT page, and 4 page directories of 2 MiB pages. */
export const PML4_START = 0x9000;
export const PDPTE_START = PML4_START + PAGE_SIZE;
export const PDE_START = PDPTE_START + PAGE_SIZE;
/** The identity map covers the low 4 GiB: RAM below the gap and the MMIO gap itself. */
export const IDENTITY_MAP_SIZE = 4 * GiB;
export const PDE_PAGES = IDENTITY_MAP_SIZE / GiB;
export const PAGE_TABLES_END = PDE_START + PDE_PAGES * PAGE_SIZE;

/** Real-mode probe guests (guest/probes/hello.S) are linked to run here, as CS:IP = 0x1000:0000. */
export const REAL_MODE_PROBE_START = 0x10000;

/** The kernel command line, NUL-terminated (boot_params.hdr.cmd_line_ptr points here). */
export const CMDLINE_START = 0x20000;
/** Linux 6.1 x86 COMMAND_LINE_SIZE; the kernel's boot_params.hdr.cmdline_size may be smaller. */
export const CMDLINE_MAX_SIZE = 2048;

/** Extended BIOS Data Area, where the MP floating pointer and table go (MultiProcessor Spec 1.4, 4). */
export const EBDA_START = 0x9fc00;
/** Start of the legacy VGA/ROM hole; RAM below 1 MiB ends here in the e820 map. */
export const LEGACY_HOLE_START = 0xa0000;

/** The first byte above 1 MiB: where the protected-mode kernel is loaded (boot.rst, "64-bit boot protocol"). */
export const HIMEM_START = 0x100000;

// ---- The 32-bit MMIO gap: devices, never RAM ----

/** Start of the MMIO gap below 4 GiB. RAM that does not fit below it continues at 4 GiB. */
export const MMIO32_START = 3 * GiB;
/** Firecracker's boot-timer device: a 1-byte write of 123 marks "boot complete". */
export const BOOT_TIMER_START = MMIO32_START;
export const BOOT_TIMER_SIZE = PAGE_SIZE;
/** virtio-mmio devices, one 4 KiB window each, from here on (the kernel learns them from the command line). */
export const VIRTIO_MMIO_START = BOOT_TIMER_START + BOOT_TIMER_SIZE;
export const VIRTIO_MMIO_SIZE = PAGE_SIZE;
export const VIRTIO_MMIO_MAX_DEVICES = 32;
/** A window tests and benchmarks may claim for their own MMIO devices. */
export const SCRATCH_MMIO_START = VIRTIO_MMIO_START + VIRTIO_MMIO_MAX_DEVICES * VIRTIO_MMIO_SIZE;
export const SCRATCH_MMIO_SIZE = 16 * PAGE_SIZE;
/** The in-kernel IOAPIC's register window (Intel 82093AA datasheet). */
export const IOAPIC_START = 0xfec00000;
/** The local APIC's register page (Intel SDM vol. 3A 11.4.1, the reset value of IA32_APIC_BASE). */
export const APIC_START = 0xfee00000;
/** Three pages KVM needs for VMX real-mode emulation (KVM_SET_TSS_ADDR); Firecracker's address. */
export const KVM_TSS_ADDRESS = 0xfffbd000;
export const KVM_TSS_SIZE = 3 * PAGE_SIZE;
/** End of the 32-bit address space. */
export const MMIO32_END = 4 * GiB;

/**
 * RAM that does not fit below MMIO32_START continues here, at 4 GiB (cloud-hypervisor's name). Not to be
 * confused with HIMEM_START, the 1 MiB mark where the kernel loads.
 */
export const RAM_64BIT_START = MMIO32_END;

/** The first GSI free for virtio devices (IRQs 0-4 are the PIT, keyboard, cascade, COM2 and COM1). */
export const IRQ_BASE = 5;
export const IRQ_MAX = 23;
/** How many virtio devices fit: one IRQ each from IRQ_BASE to IRQ_MAX (19), and one MMIO window each. */
export const VIRTIO_DEVICES_MAX = Math.min(VIRTIO_MMIO_MAX_DEVICES, IRQ_MAX - IRQ_BASE + 1);

/** Where RAM lives for a VM of `memSize` bytes: below the gap, then above 4 GiB. */
export function ramRegions(memSize: number): { gpa: number; size: number }[] {
  if (memSize <= MMIO32_START) return [{ gpa: 0, size: memSize }];
  return [
    { gpa: 0, size: MMIO32_START },
    { gpa: RAM_64BIT_START, size: memSize - MMIO32_START },
  ];
}

export { KiB, MiB, GiB };

// ---- The I/O port space (a separate 64 KiB address space reached with in/out) ----

/** COM1, the 16550 UART Linux's `console=ttyS0` writes to, on ISA IRQ 4. */
export const COM1_PORT = 0x3f8;
export const COM1_IRQ = 4;
/** The i8042 keyboard controller: data at 0x60, status/command at 0x64 (0xFE there pulses CPU reset). */
export const I8042_DATA_PORT = 0x60;
export const I8042_COMMAND_PORT = 0x64;
/** The keyboard behind the i8042 interrupts on ISA IRQ 1 (the mouse would use 12; there is none). */
export const I8042_KEYBOARD_IRQ = 1;
/** The CMOS/RTC (MC146818): write a register number to 0x70, then read or write it at 0x71. */
export const CMOS_INDEX_PORT = 0x70;
export const CMOS_DATA_PORT = 0x71;
/** Port 0x80: POST code / "io_delay" writes; Linux writes here to wait a moment. */
export const POST_CODE_PORT = 0x80;
/** A port tests and benchmarks may claim for their own port-IO devices (unused by PC hardware). */
export const SCRATCH_PORT = 0x510;
