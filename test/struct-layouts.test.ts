// Every kernel struct kindling declares must match the kernel's UAPI headers byte for byte: a wrong offset
// would make KVM read garbage registers. The expected values in fixtures/kvm-uapi.json were computed by a C
// compiler from the Linux 6.1 headers (sizeof, offsetof, and the KVM_* ioctl macros).

import { describe, expect, test } from "bun:test";
import * as uapi from "../src/kvm/uapi.ts";
import { KVM } from "../src/kvm/ioctl.ts";
import type { Layout } from "../src/kvm/struct.ts";
import fixture from "./fixtures/kvm-uapi.json";

const layouts: Record<string, Layout> = {
  kvm_regs: uapi.kvm_regs, kvm_segment: uapi.kvm_segment, kvm_dtable: uapi.kvm_dtable, kvm_sregs: uapi.kvm_sregs,
  kvm_fpu: uapi.kvm_fpu, kvm_msr_entry: uapi.kvm_msr_entry, kvm_msrs: uapi.kvm_msrs,
  kvm_cpuid_entry2: uapi.kvm_cpuid_entry2, kvm_cpuid2: uapi.kvm_cpuid2,
  kvm_userspace_memory_region: uapi.kvm_userspace_memory_region, kvm_irqfd: uapi.kvm_irqfd,
  kvm_ioeventfd: uapi.kvm_ioeventfd, kvm_irq_level: uapi.kvm_irq_level, kvm_pit_config: uapi.kvm_pit_config,
  kvm_lapic_state: uapi.kvm_lapic_state, kvm_vcpu_events: uapi.kvm_vcpu_events, kvm_run: uapi.kvm_run,
  kvm_mp_state: uapi.kvm_mp_state, kvm_xsave: uapi.kvm_xsave, kvm_xcr: uapi.kvm_xcr, kvm_xcrs: uapi.kvm_xcrs,
  kvm_debugregs: uapi.kvm_debugregs, kvm_msr_list: uapi.kvm_msr_list, kvm_pit_channel_state: uapi.kvm_pit_channel_state,
  kvm_pit_state2: uapi.kvm_pit_state2, kvm_clock_data: uapi.kvm_clock_data, kvm_pic_state: uapi.kvm_pic_state,
  kvm_ioapic_state: uapi.kvm_ioapic_state, kvm_irqchip: uapi.kvm_irqchip, kvm_dirty_log: uapi.kvm_dirty_log,
  kvm_guest_debug: uapi.kvm_guest_debug, kvm_signal_mask: uapi.kvm_signal_mask,
};

/** kvm_run's exit union is anonymous in C and named `exit` in kindling. */
const EXIT_MEMBERS = new Set(["hw", "fail_entry", "ex", "debug", "io", "mmio", "internal", "emulation_failure", "system_event"]);
const kindlingPath = (struct: string, path: string) =>
  struct === "kvm_run" && EXIT_MEMBERS.has(path.split(".")[0]!) ? `exit.${path}` : path;

describe("struct layouts match the kernel's UAPI headers", () => {
  for (const [name, expected] of Object.entries(fixture.structs)) {
    test(name, () => {
      const layout = layouts[name];
      expect(layout).toBeDefined();
      expect({ name, size: layout!.size }).toEqual({ name, size: expected.size });
      for (const [path, offset] of Object.entries(expected.offsets)) {
        expect({ path, offset: layout!.offsetOf(kindlingPath(name, path)) }).toEqual({ path, offset });
      }
    });
  }
  test("every declared struct is checked", () => {
    expect(Object.keys(layouts).sort()).toEqual(Object.keys(fixture.structs).sort());
  });
});

describe("ioctl numbers match the kernel's _IO/_IOR/_IOW/_IOWR macros", () => {
  test("every KVM ioctl kindling issues", () => {
    for (const [name, request] of Object.entries(KVM)) {
      expect({ name, request }).toEqual({ name, request: (fixture.ioctls as Record<string, number>)[name]! });
    }
  });
});
