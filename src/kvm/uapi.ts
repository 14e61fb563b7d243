// The KVM userspace API as kindling uses it: the structs of <linux/kvm.h> and <asm/kvm.h> (Linux 6.1),
// declared with the kernel's names, plus the constants that go with them.
// Reference: Documentation/virt/kvm/api.rst in the kernel source (Debian package linux-source-6.1).

import { array, struct, union } from "./struct.ts";

// ---- Registers (api.rst 4.11 KVM_GET_REGS, 4.13 KVM_GET_SREGS, 4.22 KVM_GET_FPU) ----

export const kvm_regs = struct("kvm_regs", [
  ["rax", "u64"], ["rbx", "u64"], ["rcx", "u64"], ["rdx", "u64"],
  ["rsi", "u64"], ["rdi", "u64"], ["rsp", "u64"], ["rbp", "u64"],
  ["r8", "u64"], ["r9", "u64"], ["r10", "u64"], ["r11", "u64"],
  ["r12", "u64"], ["r13", "u64"], ["r14", "u64"], ["r15", "u64"],
  ["rip", "u64"], ["rflags", "u64"],
]);

export const kvm_segment = struct("kvm_segment", [
  ["base", "u64"], ["limit", "u32"], ["selector", "u16"],
  ["type", "u8"], ["present", "u8"], ["dpl", "u8"], ["db", "u8"], ["s", "u8"], ["l", "u8"], ["g", "u8"], ["avl", "u8"],
  ["unusable", "u8"], ["padding", "u8"],
]);

export const kvm_dtable = struct("kvm_dtable", [
  ["base", "u64"], ["limit", "u16"], ["padding", array("u16", 3)],
]);

/** Number of interrupt bits in kvm_sregs.interrupt_bitmap: (KVM_NR_INTERRUPTS + 63) / 64 words. */
export const KVM_NR_INTERRUPTS = 256;

export const kvm_sregs = struct("kvm_sregs", [
  ["cs", kvm_segment], ["ds", kvm_segment], ["es", kvm_segment], ["fs", kvm_segment],
  ["gs", kvm_segment], ["ss", kvm_segment], ["tr", kvm_segment], ["ldt", kvm_segment],
  ["gdt", kvm_dtable], ["idt", kvm_dtable],
  ["cr0", "u64"], ["cr2", "u64"], ["cr3", "u64"], ["cr4", "u64"], ["cr8", "u64"],
  ["efer", "u64"], ["apic_base", "u64"],
  ["interrupt_bitmap", array("u64", Math.floor((KVM_NR_INTERRUPTS + 63) / 64))],
]);

export const kvm_fpu = struct("kvm_fpu", [
  ["fpr", array("u8", 8 * 16)],
  ["fcw", "u16"], ["fsw", "u16"], ["ftwx", "u8"], ["pad1", "u8"], ["last_opcode", "u16"],
  ["last_ip", "u64"], ["last_dp", "u64"],
  ["xmm", array("u8", 16 * 16)],
  ["mxcsr", "u32"], ["pad2", "u32"],
]);

// ---- MSRs (api.rst 4.18 KVM_GET_MSRS) ----

export const kvm_msr_entry = struct("kvm_msr_entry", [["index", "u32"], ["reserved", "u32"], ["data", "u64"]]);
/** The fixed header; `entries[nmsrs]` follows it. */
export const kvm_msrs = struct("kvm_msrs", [["nmsrs", "u32"], ["pad", "u32"]]);

// ---- CPUID (api.rst 4.46 KVM_SET_CPUID2, 4.88 KVM_GET_SUPPORTED_CPUID) ----

export const kvm_cpuid_entry2 = struct("kvm_cpuid_entry2", [
  ["function", "u32"], ["index", "u32"], ["flags", "u32"],
  ["eax", "u32"], ["ebx", "u32"], ["ecx", "u32"], ["edx", "u32"],
  ["padding", array("u32", 3)],
]);
/** The fixed header; `entries[nent]` follows it. */
export const kvm_cpuid2 = struct("kvm_cpuid2", [["nent", "u32"], ["padding", "u32"]]);
/** kvm_cpuid_entry2.flags: the leaf has sub-leaves selected by ECX (`index`). */
export const KVM_CPUID_FLAG_SIGNIFCANT_INDEX = 1 << 0;

// ---- Memory, interrupts, notifications (api.rst 4.35, 4.75, 4.59) ----

export const kvm_userspace_memory_region = struct("kvm_userspace_memory_region", [
  ["slot", "u32"], ["flags", "u32"], ["guest_phys_addr", "u64"], ["memory_size", "u64"], ["userspace_addr", "u64"],
]);

export const kvm_irqfd = struct("kvm_irqfd", [
  ["fd", "u32"], ["gsi", "u32"], ["flags", "u32"], ["resamplefd", "u32"], ["pad", array("u8", 16)],
]);
export const KVM_IRQFD_FLAG_DEASSIGN = 1 << 0;

export const kvm_ioeventfd = struct("kvm_ioeventfd", [
  ["datamatch", "u64"], ["addr", "u64"], ["len", "u32"], ["fd", "i32"], ["flags", "u32"], ["pad", array("u8", 36)],
]);
export const KVM_IOEVENTFD_FLAG_DATAMATCH = 1 << 0;
export const KVM_IOEVENTFD_FLAG_PIO = 1 << 1;
export const KVM_IOEVENTFD_FLAG_DEASSIGN = 1 << 2;

export const kvm_irq_level = struct("kvm_irq_level", [["irq", "u32"], ["level", "u32"]]);

export const kvm_pit_config = struct("kvm_pit_config", [["flags", "u32"], ["pad", array("u32", 15)]]);
/** kvm_pit_config.flags: the PIT has a speaker port (0x61) too. */
export const KVM_PIT_SPEAKER_DUMMY = 1;

/** The local APIC's 1 KiB register page as KVM_GET_LAPIC returns it (api.rst 4.57). */
export const KVM_APIC_REG_SIZE = 0x400;
export const kvm_lapic_state = struct("kvm_lapic_state", [["regs", array("u8", KVM_APIC_REG_SIZE)]]);

export const kvm_vcpu_events = struct("kvm_vcpu_events", [
  ["exception", struct("exception", [["injected", "u8"], ["nr", "u8"], ["has_error_code", "u8"], ["pending", "u8"], ["error_code", "u32"]])],
  ["interrupt", struct("interrupt", [["injected", "u8"], ["nr", "u8"], ["soft", "u8"], ["shadow", "u8"]])],
  ["nmi", struct("nmi", [["injected", "u8"], ["pending", "u8"], ["masked", "u8"], ["pad", "u8"]])],
  ["sipi_vector", "u32"],
  ["flags", "u32"],
  ["smi", struct("smi", [["smm", "u8"], ["pending", "u8"], ["smm_inside_nmi", "u8"], ["latched_init", "u8"]])],
  ["triple_fault", struct("triple_fault", [["pending", "u8"]])],
  ["reserved", array("u8", 26)],
  ["exception_has_payload", "u8"],
  ["exception_payload", "u64"],
]);
export const KVM_VCPUEVENT_VALID_NMI_PENDING = 0x1;
export const KVM_VCPUEVENT_VALID_SIPI_VECTOR = 0x2;
export const KVM_VCPUEVENT_VALID_SHADOW = 0x4;

/** KVM_SET_SIGNAL_MASK's header (api.rst 4.25); `len` bytes of kernel sigset_t follow it. */
export const kvm_signal_mask = struct("kvm_signal_mask", [["len", "u32"]]);
/** The kernel's sigset_t: 64 signals, one bit each (signal n is bit n - 1). */
export const KERNEL_SIGSET_BYTES = 8;

// ---- Guest debugging (api.rst 4.59, KVM_SET_GUEST_DEBUG) ----

/** x86's part of kvm_guest_debug: the eight debug registers DR0-DR7 (DR4/DR5 unused), as the VMM wants them. */
export const kvm_guest_debug_arch = struct("kvm_guest_debug_arch", [["debugreg", array("u64", 8)]]);
export const kvm_guest_debug = struct("kvm_guest_debug", [["control", "u32"], ["pad", "u32"], ["arch", kvm_guest_debug_arch]]);
/** kvm_guest_debug.control bits (<linux/kvm.h>, <asm/kvm.h>). */
export const KVM_GUESTDBG_ENABLE = 0x1;
export const KVM_GUESTDBG_SINGLESTEP = 0x2;
export const KVM_GUESTDBG_USE_HW_BP = 0x20000;

// ---- struct kvm_run: the page shared with the kernel, mmap'd from the vCPU fd (api.rst 5) ----

const kvm_run_exit = union("kvm_run.exit", [
  ["hw", struct("hw", [["hardware_exit_reason", "u64"]])],
  ["fail_entry", struct("fail_entry", [["hardware_entry_failure_reason", "u64"], ["cpu", "u32"]])],
  ["ex", struct("ex", [["exception", "u32"], ["error_code", "u32"]])],
  // KVM_EXIT_DEBUG: which exception (1 = #DB, 3 = #BP), where, and DR6/DR7 at the time (struct kvm_debug_exit_arch).
  ["debug", struct("debug", [["arch", struct("kvm_debug_exit_arch", [["exception", "u32"], ["pad", "u32"], ["pc", "u64"], ["dr6", "u64"], ["dr7", "u64"]])]])],
  ["io", struct("io", [["direction", "u8"], ["size", "u8"], ["port", "u16"], ["count", "u32"], ["data_offset", "u64"]])],
  ["mmio", struct("mmio", [["phys_addr", "u64"], ["data", array("u8", 8)], ["len", "u32"], ["is_write", "u8"]])],
  ["internal", struct("internal", [["suberror", "u32"], ["ndata", "u32"], ["data", array("u64", 16)]])],
  ["emulation_failure", struct("emulation_failure", [
    ["suberror", "u32"], ["ndata", "u32"], ["flags", "u64"], ["insn_size", "u8"], ["insn_bytes", array("u8", 15)],
  ])],
  ["system_event", struct("system_event", [["type", "u32"], ["ndata", "u32"], ["data", array("u64", 16)]])],
  ["padding", array("u8", 256)],
]);

export const kvm_run = struct("kvm_run", [
  ["request_interrupt_window", "u8"], ["immediate_exit", "u8"], ["padding1", array("u8", 6)],
  ["exit_reason", "u32"], ["ready_for_interrupt_injection", "u8"], ["if_flag", "u8"], ["flags", "u16"],
  ["cr8", "u64"], ["apic_base", "u64"],
  // The exit union is anonymous in C; kindling names it so its members read `io.port`, `mmio.phys_addr`.
  ["exit", kvm_run_exit],
  ["kvm_valid_regs", "u64"], ["kvm_dirty_regs", "u64"],
  ["s", array("u8", 2048)],
]);

// ---- Exit reasons (KVM_EXIT_*) and their sub-codes ----

export const KVM_EXIT = {
  UNKNOWN: 0, EXCEPTION: 1, IO: 2, HYPERCALL: 3, DEBUG: 4, HLT: 5, MMIO: 6, IRQ_WINDOW_OPEN: 7,
  SHUTDOWN: 8, FAIL_ENTRY: 9, INTR: 10, SET_TPR: 11, TPR_ACCESS: 12, NMI: 16, INTERNAL_ERROR: 17,
  SYSTEM_EVENT: 24, X86_RDMSR: 29, X86_WRMSR: 30,
} as const;

/** KVM_EXIT_* number to name, for logs and traces. */
export const KVM_EXIT_NAME: Record<number, string> = Object.fromEntries(
  Object.entries(KVM_EXIT).map(([k, v]) => [v, `KVM_EXIT_${k}`]),
);

export const KVM_EXIT_IO_IN = 0;
export const KVM_EXIT_IO_OUT = 1;

export const KVM_INTERNAL_ERROR = { EMULATION: 1, SIMUL_EX: 2, DELIVERY_EV: 3, UNEXPECTED_EXIT_REASON: 4 } as const;
/** kvm_run.emulation_failure.flags: insn_size/insn_bytes are valid. */
export const KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES = 1 << 0;

export const KVM_SYSTEM_EVENT = { SHUTDOWN: 1, RESET: 2, CRASH: 3, WAKEUP: 4, SUSPEND: 5, SEV_TERM: 6 } as const;

// ---- Capabilities (KVM_CHECK_EXTENSION) kindling relies on ----

export const KVM_CAP = {
  IRQCHIP: 0, HLT: 1, USER_MEMORY: 3, SET_TSS_ADDR: 4, EXT_CPUID: 7, PIT2: 33, IOEVENTFD: 36,
  IRQFD: 32, IMMEDIATE_EXIT: 136, VCPU_EVENTS: 41, NR_VCPUS: 9, MAX_VCPUS: 66, INTERNAL_ERROR_DATA: 40,
} as const;

/** KVM_GET_API_VERSION has returned 12 since Linux 2.6.22 and must (api.rst 4.1). */
export const KVM_API_VERSION = 12;

// ---- Saving and restoring a VM (snapshots): vCPU state beyond the registers, and the in-kernel devices ----

/** KVM_GET/SET_MP_STATE (api.rst 4.38): whether the vCPU runs, waits for INIT/SIPI, or is halted. */
export const kvm_mp_state = struct("kvm_mp_state", [["mp_state", "u32"]]);
export const KVM_MP_STATE = { RUNNABLE: 0, UNINITIALIZED: 1, INIT_RECEIVED: 2, HALTED: 3, SIPI_RECEIVED: 4 } as const;

/** KVM_GET/SET_XSAVE (api.rst 4.42): the XSAVE area as XSAVE would store it (legacy 4 KiB size). */
export const kvm_xsave = struct("kvm_xsave", [["region", array("u32", 1024)]]);

/** KVM_GET/SET_XCRS (api.rst 4.44): the extended control registers (XCR0). */
export const kvm_xcr = struct("kvm_xcr", [["xcr", "u32"], ["reserved", "u32"], ["value", "u64"]]);
export const KVM_MAX_XCRS = 16;
export const kvm_xcrs = struct("kvm_xcrs", [
  ["nr_xcrs", "u32"], ["flags", "u32"], ["xcrs", array(kvm_xcr, KVM_MAX_XCRS)], ["padding", array("u64", 16)],
]);

/** KVM_GET/SET_DEBUGREGS (api.rst 4.32): DR0-DR3, DR6, DR7. */
export const kvm_debugregs = struct("kvm_debugregs", [
  ["db", array("u64", 4)], ["dr6", "u64"], ["dr7", "u64"], ["flags", "u64"], ["reserved", array("u64", 9)],
]);

/** KVM_GET_MSR_INDEX_LIST (api.rst 4.3): the fixed header; `indices[nmsrs]` (u32 each) follows it. */
export const kvm_msr_list = struct("kvm_msr_list", [["nmsrs", "u32"]]);

/** KVM_GET/SET_PIT2 (api.rst 4.63): the i8254's three counters. */
export const kvm_pit_channel_state = struct("kvm_pit_channel_state", [
  ["count", "u32"], ["latched_count", "u16"], ["count_latched", "u8"], ["status_latched", "u8"], ["status", "u8"],
  ["read_state", "u8"], ["write_state", "u8"], ["write_latch", "u8"], ["rw_mode", "u8"], ["mode", "u8"], ["bcd", "u8"],
  ["gate", "u8"], ["count_load_time", "i64"],
]);
export const kvm_pit_state2 = struct("kvm_pit_state2", [
  ["channels", array(kvm_pit_channel_state, 3)], ["flags", "u32"], ["reserved", array("u32", 9)],
]);

/** KVM_GET/SET_CLOCK (api.rst 4.29): the guest's kvmclock base, in nanoseconds. */
export const kvm_clock_data = struct("kvm_clock_data", [
  ["clock", "u64"], ["flags", "u32"], ["pad0", "u32"], ["realtime", "u64"], ["host_tsc", "u64"], ["pad", array("u32", 4)],
]);
/** kvm_clock_data.flags: the clock is the same on every host CPU; `realtime` and `host_tsc` are valid. */
export const KVM_CLOCK_TSC_STABLE = 2;
export const KVM_CLOCK_REALTIME = 1 << 2;
export const KVM_CLOCK_HOST_TSC = 1 << 3;

/** KVM_GET/SET_IRQCHIP (api.rst 4.26): one of the in-kernel interrupt controllers. */
export const kvm_pic_state = struct("kvm_pic_state", [
  ["last_irr", "u8"], ["irr", "u8"], ["imr", "u8"], ["isr", "u8"], ["priority_add", "u8"], ["irq_base", "u8"],
  ["read_reg_select", "u8"], ["poll", "u8"], ["special_mask", "u8"], ["init_state", "u8"], ["auto_eoi", "u8"],
  ["rotate_on_auto_eoi", "u8"], ["special_fully_nested_mode", "u8"], ["init4", "u8"], ["elcr", "u8"], ["elcr_mask", "u8"],
]);
/** KVM_IOAPIC_NUM_PINS */
export const KVM_IOAPIC_NUM_PINS = 24;
export const kvm_ioapic_state = struct("kvm_ioapic_state", [
  ["base_address", "u64"], ["ioregsel", "u32"], ["id", "u32"], ["irr", "u32"], ["pad", "u32"],
  ["redirtbl", array("u64", KVM_IOAPIC_NUM_PINS)],
]);
export const kvm_irqchip = struct("kvm_irqchip", [
  ["chip_id", "u32"], ["pad", "u32"],
  ["chip", union("chip", [["dummy", array("u8", 512)], ["pic", kvm_pic_state], ["ioapic", kvm_ioapic_state]])],
]);
/** kvm_irqchip.chip_id */
export const KVM_IRQCHIP_PIC_MASTER = 0;
export const KVM_IRQCHIP_PIC_SLAVE = 1;
export const KVM_IRQCHIP_IOAPIC = 2;

/** KVM_GET_DIRTY_LOG (api.rst 4.8): a bitmap, one bit per page of the slot, of pages written since last asked. */
export const kvm_dirty_log = struct("kvm_dirty_log", [["slot", "u32"], ["padding1", "u32"], ["dirty_bitmap", "u64"]]);
/** kvm_userspace_memory_region.flags: have KVM track writes to the slot (for KVM_GET_DIRTY_LOG). */
export const KVM_MEM_LOG_DIRTY_PAGES = 1 << 0;

/** Capabilities that decide which of the state ioctls a host has (KVM_CHECK_EXTENSION). */
export const KVM_CAP_STATE = {
  ADJUST_CLOCK: 39, DEBUGREGS: 50, XSAVE: 55, XCRS: 56, GET_TSC_KHZ: 61, TSC_CONTROL: 60, KVMCLOCK_CTRL: 76,
  GET_MSR_FEATURES: 153, XSAVE2: 208,
} as const;
