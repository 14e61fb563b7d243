// virtio-blk through real KVM: the `virtio-blk` probe guest is a tiny CPL3 driver. Its queue notifications
// must reach the device through the ioeventfd (no MMIO exit for QueueNotify), and its completions must
// reach the guest as interrupts through the irqfd.

import { afterAll, describe, expect } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { bootProbe } from "../src/boot/probe.ts";
import { FileBlockBackend, VirtioBlock } from "../src/devices/virtio/block.ts";
import { VIRTIO_MMIO_QUEUE_NOTIFY } from "../src/devices/virtio/uapi.ts";
import { VIRTIO_MMIO_START } from "../src/arch/x86_64/layout.ts";
import { KVM_EXIT } from "../src/kvm/uapi.ts";
import type { ExitRecord } from "../src/vcpu/vcpu.ts";
import { kvmTest } from "./support/kvm.ts";

const dir = mkdtempSync(join(tmpdir(), "kindling-blk-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("virtio-blk probe guest", () => {
  kvmTest("writes, reads back and gets the id, notified by ioeventfd, answered by irqfd", async () => {
    const disk = join(dir, "disk.img");
    writeFileSync(disk, new Uint8Array(1024 * 1024));
    let text = "";
    const decoder = new TextDecoder();
    const exits: ExitRecord[] = [];
    const vm = await bootProbe("virtio-blk", {
      consoleOutput: (b) => (text += decoder.decode(b)),
      beforeStart: (v) => {
        v.addVirtioDevice(new VirtioBlock(new FileBlockBackend(disk), { id: "kindling-probe-disk" }));
        v.vcpus[0]!.tracer = (r) => exits.push(r);
      },
    });
    const timer = setTimeout(() => void vm.stop("test timeout"), 20_000);
    const exit = await vm.exited;
    clearTimeout(timer);
    expect(text).toBe(
      "virtio-blk: wrote sector 1 and read it back\nvirtio-blk: id kindling-probe-disk\nvirtio-blk: interrupts 0x00000003\n",
    );
    expect(exit.reason).toBe("reset");
    // The pattern is on the disk file itself, in sector 1.
    const onDisk = readFileSync(disk).subarray(512, 1024);
    expect([...onDisk].every((b, i) => b === ((i ^ 0x5a) & 0xff))).toBe(true);
    // Three requests were notified, none of them through an MMIO exit.
    const notifyAddr = VIRTIO_MMIO_START + VIRTIO_MMIO_QUEUE_NOTIFY;
    expect(exits.filter((e) => e.reason === "KVM_EXIT_MMIO" && e.addr === notifyAddr)).toEqual([]);
    expect(exits.some((e) => e.reason === "KVM_EXIT_MMIO" && e.register === "InterruptACK")).toBe(true);
    expect(vm.vcpus[0]!.exitCounts.get(KVM_EXIT.MMIO)).toBeGreaterThan(0);
  });
});
