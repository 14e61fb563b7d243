// Queue notifications that never stop the vCPU: KVM_IOEVENTFD.
//
// A virtio driver tells the device "there is work on queue N" by writing N to the QueueNotify register.
// Handled as an ordinary MMIO exit, that write would stop the vCPU until the VMM had processed the queue.
// With an ioeventfd, KVM itself recognises the write (address, length, and the value N as `datamatch`),
// signals an eventfd, and lets the vCPU continue at once (api.rst 4.59). The main thread reads the eventfd
// and processes the queue while the guest goes on running: the device works off the exit path.

import { close, eventfd, EFD_CLOEXEC, EFD_NONBLOCK } from "./libc.ts";
import type { VmFd } from "./vm-fd.ts";

export class IoEventFd {
  readonly fd: number;
  /** How many notifications arrived (the eventfd counter sums writes between two reads). */
  count = 0n;
  private reader?: ReturnType<ReturnType<ReturnType<typeof Bun.file>["stream"]>["getReader"]>;
  private closed = false;

  constructor(
    private readonly vm: VmFd,
    readonly addr: number,
    readonly datamatch: number,
    onNotify: () => void,
  ) {
    this.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    vm.ioeventfd({ eventfd: this.fd, addr, len: 4, datamatch });
    void this.watch(onNotify);
  }

  /**
   * Wait for the eventfd without blocking the event loop: Bun streams a non-blocking fd by polling it.
   * Each read returns the 8-byte counter, the number of writes since the last read.
   */
  private async watch(onNotify: () => void): Promise<void> {
    this.reader = Bun.file(this.fd).stream().getReader();
    while (!this.closed) {
      const { value, done } = await this.reader.read();
      if (done || this.closed || !value) break;
      for (let i = 0; i + 8 <= value.byteLength; i += 8) {
        this.count += new DataView(value.buffer, value.byteOffset + i, 8).getBigUint64(0, true);
      }
      onNotify();
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    void this.reader?.cancel().catch(() => {});
    try {
      this.vm.ioeventfd({ eventfd: this.fd, addr: this.addr, len: 4, datamatch: this.datamatch, deassign: true });
    } catch {
      // The VM fd may already be closed; the eventfd goes with it.
    }
    close(this.fd);
  }
}
