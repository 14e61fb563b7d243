// The local APIC's two local interrupt pins, as a PC wires them: LINT0 receives the 8259 PIC's output
// (ExtINT delivery: the CPU asks the PIC for the vector) and LINT1 receives NMI.
// Intel SDM vol. 3A 11.5.1 "Local Vector Table"; MultiProcessor Spec 1.4, 3.6.2 "virtual wire mode".

import type { VcpuFd } from "../../kvm/vcpu-fd.ts";

/** Register offsets in the APIC page (SDM Table 11-1). */
export const APIC_LVT0 = 0x350;
export const APIC_LVT1 = 0x360;
/** LVT delivery modes, bits 8-10. */
export const APIC_MODE_NMI = 0x4;
export const APIC_MODE_EXTINT = 0x7;

function setDeliveryMode(reg: number, mode: number): number {
  return (reg & ~0x700) | (mode << 8);
}

export function setupLapic(vcpu: VcpuFd): void {
  const lapic = vcpu.getLapic();
  const regs = lapic.slice("regs");
  const dv = new DataView(regs.buffer, regs.byteOffset, regs.byteLength);
  dv.setUint32(APIC_LVT0, setDeliveryMode(dv.getUint32(APIC_LVT0, true), APIC_MODE_EXTINT), true);
  dv.setUint32(APIC_LVT1, setDeliveryMode(dv.getUint32(APIC_LVT1, true), APIC_MODE_NMI), true);
  vcpu.setLapic(lapic);
}
