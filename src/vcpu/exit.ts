// Reading an exit out of the shared kvm_run page (api.rst 5, "struct kvm_run"): the one decoder that both
// the exit handler and the exit trace use, so the two can never read an exit differently.
//
// After KVM_RUN returns 0, `exit_reason` says which member of kvm_run's exit union is valid. For the two
// exits that are accesses the VMM emulates, the decoder returns where the access goes and where its data
// sits in the page:
//   KVM_EXIT_IO    port, size, direction, count (`rep ins/outs` carry `count` accesses back to back) and
//                  data_offset, an offset from the start of kvm_run
//   KVM_EXIT_MMIO  guest-physical address, length (at most 8), direction; the data is in exit.mmio.data
// Other exits carry only their reason here; their handlers read the few fields they need.

import { KVM_EXIT, KVM_EXIT_IO_OUT, KVM_EXIT_NAME, kvm_run } from "../kvm/uapi.ts";

/** Where kvm_run's exit fields are: also handed to the vCPU worker (local.ts), which loads no layouts. */
export const OFF = {
  exit_reason: kvm_run.offsetOf("exit_reason"),
  io_direction: kvm_run.offsetOf("exit.io.direction"),
  io_size: kvm_run.offsetOf("exit.io.size"),
  io_port: kvm_run.offsetOf("exit.io.port"),
  io_count: kvm_run.offsetOf("exit.io.count"),
  io_data_offset: kvm_run.offsetOf("exit.io.data_offset"),
  mmio_phys_addr: kvm_run.offsetOf("exit.mmio.phys_addr"),
  mmio_data: kvm_run.offsetOf("exit.mmio.data"),
  mmio_len: kvm_run.offsetOf("exit.mmio.len"),
  mmio_is_write: kvm_run.offsetOf("exit.mmio.is_write"),
};

/** A port or MMIO access to emulate: `data` views its bytes inside kvm_run (results are written there). */
export interface ExitAccess {
  bus: "pio" | "mmio";
  /** Port or guest-physical address. */
  addr: number;
  /** Bytes per access. */
  size: number;
  /** Accesses back to back (`rep ins/outs`); 1 for MMIO. */
  count: number;
  write: boolean;
  /** Offset of the first access's bytes from the start of kvm_run. */
  dataOffset: number;
}

export interface DecodedExit {
  /** KVM_EXIT_* */
  reason: number;
  /** "KVM_EXIT_IO", or the number as text for a reason kindling has no name for. */
  name: string;
  /** For KVM_EXIT_IO and KVM_EXIT_MMIO. */
  access?: ExitAccess;
}

/** Decode the exit described in a vCPU's kvm_run page (`dv` views the same bytes). */
export function decodeExit(bytes: Uint8Array, dv: DataView): DecodedExit {
  const reason = dv.getUint32(OFF.exit_reason, true);
  const name = KVM_EXIT_NAME[reason] ?? String(reason);
  if (reason === KVM_EXIT.IO) {
    return {
      reason, name,
      access: {
        bus: "pio", addr: dv.getUint16(OFF.io_port, true), size: bytes[OFF.io_size]!, count: dv.getUint32(OFF.io_count, true),
        write: bytes[OFF.io_direction] === KVM_EXIT_IO_OUT, dataOffset: Number(dv.getBigUint64(OFF.io_data_offset, true)),
      },
    };
  }
  if (reason === KVM_EXIT.MMIO) {
    return {
      reason, name,
      access: {
        bus: "mmio", addr: Number(dv.getBigUint64(OFF.mmio_phys_addr, true)), size: Math.min(dv.getUint32(OFF.mmio_len, true), 8), count: 1,
        write: bytes[OFF.mmio_is_write] !== 0, dataOffset: OFF.mmio_data,
      },
    };
  }
  return { reason, name };
}
