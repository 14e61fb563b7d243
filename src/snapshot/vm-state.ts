// The VM-wide state KVM keeps in the kernel: the i8254 PIT, the kvmclock base, and the interrupt
// controllers (the two 8259 PICs and the IOAPIC; each local APIC belongs to its vCPU). Saved with
// KVM_GET_PIT2, KVM_GET_CLOCK and KVM_GET_IRQCHIP (api.rst 4.63, 4.29, 4.26), restored with the SET forms.
//
// The guest clock: by default the restored guest's kvmclock continues from the value it had when the
// snapshot was taken, so the guest does not see the time it spent on disk (Firecracker's default). With
// `clockRealtime` (Firecracker's `clock_realtime`), KVM_CLOCK_REALTIME is passed back, and KVM advances the
// clock by the wall-clock time elapsed since the snapshot (api.rst 4.29); the guest then sees a jump.

import type { VmFd } from "../kvm/vm-fd.ts";
import { StructView, type Layout } from "../kvm/struct.ts";
import {
  KVM_CLOCK_HOST_TSC, KVM_CLOCK_REALTIME, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE,
  kvm_clock_data, kvm_irqchip, kvm_pit_state2,
} from "../kvm/uapi.ts";

export interface VmState {
  pit2: string;
  clock: string;
  /** PIC master, PIC slave, IOAPIC, in that order. */
  irqchip: string[];
}

export const IRQCHIPS = [KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, KVM_IRQCHIP_IOAPIC] as const;

const b64 = (v: StructView) => Buffer.from(v.bytes).toString("base64");

function fromB64(layout: Layout, text: string, what: string): StructView {
  const bytes = new Uint8Array(Buffer.from(text, "base64"));
  if (bytes.byteLength !== layout.size) throw new Error(`${what}: ${bytes.byteLength} bytes, struct ${layout.name} has ${layout.size}`);
  return new StructView(layout, bytes);
}

export function saveVmState(fd: VmFd): VmState {
  return {
    pit2: b64(fd.getPit2()),
    clock: b64(fd.getClock()),
    irqchip: IRQCHIPS.map((chip) => b64(fd.getIrqchip(chip))),
  };
}

export function restoreVmState(fd: VmFd, s: VmState, opts: { clockRealtime?: boolean } = {}): void {
  fd.setPit2(fromB64(kvm_pit_state2, s.pit2, "pit2"));
  const clock = fromB64(kvm_clock_data, s.clock, "clock");
  // KVM_SET_CLOCK takes only KVM_CLOCK_REALTIME (with KVM_CLOCK_HOST_TSC beside it) as input; the other flags
  // describe the host the clock was read on.
  const flags = clock.get("flags");
  clock.set("flags", opts.clockRealtime ? flags & (KVM_CLOCK_REALTIME | KVM_CLOCK_HOST_TSC) : 0);
  fd.setClock(clock);
  if (s.irqchip.length !== IRQCHIPS.length) throw new Error(`irqchip: ${s.irqchip.length} chips, expected ${IRQCHIPS.length}`);
  s.irqchip.forEach((text, i) => {
    const chip = fromB64(kvm_irqchip, text, `irqchip ${i}`);
    if (chip.get("chip_id") !== IRQCHIPS[i]) throw new Error(`irqchip ${i}: chip_id ${chip.get("chip_id")}, expected ${IRQCHIPS[i]}`);
    fd.setIrqchip(chip);
  });
}
