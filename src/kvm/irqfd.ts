// An interrupt line backed by KVM_IRQFD: writing 1 to an eventfd makes KVM raise the GSI in the in-kernel
// interrupt controllers, with no ioctl and no exit on the way (api.rst 4.75). Devices call `trigger()`.

import { close, eventfd, EFD_CLOEXEC, EFD_NONBLOCK, write_ } from "./libc.ts";
import type { VmFd } from "./vm-fd.ts";

/** eventfd(2) counters are 8-byte little-endian integers; a write adds to the counter. */
const ONE = new Uint8Array(new BigUint64Array([1n]).buffer);

/** Satisfies src/bus.ts's InterruptLine (gsi, trigger) without importing it: kvm/ imports nothing above it. */
export class IrqFdLine {
  readonly fd: number;
  /** How many times the device raised the line (for metrics and tests). */
  count = 0;

  constructor(
    vm: VmFd,
    readonly gsi: number,
  ) {
    this.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    try {
      vm.irqfd(this.fd, gsi);
    } catch (e) {
      close(this.fd);
      throw e;
    }
  }

  trigger(): void {
    this.count++;
    write_(this.fd, ONE);
  }

  close(): void {
    close(this.fd);
  }
}
