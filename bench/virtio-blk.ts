// virtio-blk throughput through real KVM: the `virtio-blk` probe guest (guest/probes/virtio-blk.S) submits
// sequential requests of 4 KiB and 64 KiB, one at a time (queue depth 1), to a 64 MiB file. Each request
// is a notify through the ioeventfd, a pread/pwrite on the main thread, and an interrupt through the irqfd.
// The clock runs from the device's first request to its last: guest setup is not counted. Each size is also
// run with the notification handled inside the vCPU's MMIO exit instead, to show what the ioeventfd saves.
// Usage: bun bench/virtio-blk.ts [--requests N] [--json]

import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { bootProbe } from "../src/boot/probe.ts";
import { FileBlockBackend, VirtioBlock } from "../src/devices/virtio/block.ts";

const DISK_SIZE = 64 * 1024 * 1024;
const SECTOR_MASK = DISK_SIZE / 512 - 1;

/** A file backend that notes when the first and the last request reached it. */
class TimedBackend extends FileBlockBackend {
  first = 0;
  last = 0;
  requests = 0;
  private tick(): void {
    const now = performance.now();
    if (this.requests++ === 0) this.first = now;
    this.last = now;
  }
  override read(buf: Uint8Array, offset: number): void {
    super.read(buf, offset);
    this.tick();
  }
  override write(buf: Uint8Array, offset: number): void {
    super.write(buf, offset);
    this.tick();
  }
}

export interface BlkResult {
  notify: "ioeventfd" | "exit";
  op: "read" | "write";
  blockSize: number;
  requests: number;
  iops: number;
  mibPerSec: number;
  /** How long the guest's QueueNotify store kept the vCPU, on average (TSC cycles / host TSC MHz). */
  notifyUs: number;
}

/** The TSC frequency, from the host's /proc/cpuinfo ("cpu MHz" on a host with tsc_known_freq). */
function tscMHz(): number {
  const m = readFileSync("/proc/cpuinfo", "utf8").match(/^cpu MHz\s*:\s*([\d.]+)/m);
  return m ? Number(m[1]) : NaN;
}

export async function measureBlk(
  op: "read" | "write",
  blockSize: number,
  requests: number,
  notify: "ioeventfd" | "exit" = "ioeventfd",
): Promise<BlkResult> {
  const dir = mkdtempSync(join(tmpdir(), "kindling-blkbench-"));
  try {
    const disk = join(dir, "disk.img");
    writeFileSync(disk, new Uint8Array(DISK_SIZE));
    const backend = new TimedBackend(disk);
    let text = "";
    const vm = await bootProbe("virtio-blk", {
      consoleOutput: (b) => (text += new TextDecoder().decode(b)),
      queueNotify: notify,
      beforeStart: (v) => void v.addVirtioDevice(new VirtioBlock(backend)),
      // The probe's benchmark mode: r12 requests of r13 bytes, writes if r14, sector numbers masked by r15.
      regs: { r12: requests, r13: blockSize, r14: op === "write" ? 1 : 0, r15: SECTOR_MASK },
    });
    const exit = await vm.exited;
    if (exit.reason !== "reset") throw new Error(`virtio-blk probe ended with ${exit.reason}: ${exit.message}`);
    if (backend.requests !== requests) throw new Error(`expected ${requests} requests, the device saw ${backend.requests}`);
    const seconds = (backend.last - backend.first) / 1000;
    const iops = (requests - 1) / seconds;
    const cycles = Number.parseInt(text.match(/notify cycles 0x([0-9a-f]+)/)?.[1] ?? "", 16);
    return { notify, op, blockSize, requests, iops, mibPerSec: (iops * blockSize) / (1024 * 1024), notifyUs: cycles / tscMHz() };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.main) {
  const at = process.argv.indexOf("--requests");
  const requests = at > 0 ? Number(process.argv[at + 1]) : 2000;
  const results: BlkResult[] = [];
  for (const notify of ["ioeventfd", "exit"] as const) {
    for (const blockSize of [4096, 65536]) for (const op of ["read", "write"] as const) results.push(await measureBlk(op, blockSize, requests, notify));
  }
  if (process.argv.includes("--json")) console.log(JSON.stringify(results, null, 1));
  else {
    console.log(`virtio-blk, sequential, queue depth 1, ${requests} requests each, through the virtio-blk probe guest`);
    console.log("notify: ioeventfd = QueueNotify signals an eventfd, the vCPU goes on; exit = handled inside the MMIO exit");
    console.log(`${"notify".padEnd(10)} ${"op".padEnd(6)} ${"block".padStart(7)} ${"IOPS".padStart(9)} ${"MiB/s".padStart(9)} ${"vCPU µs/notify".padStart(15)}`);
    for (const r of results) {
      console.log(`${r.notify.padEnd(10)} ${r.op.padEnd(6)} ${`${r.blockSize / 1024}K`.padStart(7)} ${r.iops.toFixed(0).padStart(9)} ${r.mibPerSec.toFixed(1).padStart(9)} ${r.notifyUs.toFixed(1).padStart(15)}`);
    }
  }
}
