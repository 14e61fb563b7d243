// A write the guest saw complete is in the host file even if the VMM is killed at once: the virtio-blk
// device completes a request only after its pwrite (and, without a negotiated flush, its fsync) returned.

import { afterAll, expect } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { kvmTest } from "./support/kvm.ts";

const dir = mkdtempSync(join(tmpdir(), "kindling-sigkill-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

kvmTest("data the guest wrote survives SIGKILL of the VMM", async () => {
  const disk = join(dir, "disk.img");
  writeFileSync(disk, new Uint8Array(1024 * 1024));
  // A child VMM boots the virtio-blk probe; the parent kills it the moment the guest reports its write done.
  const script = `
    import { bootProbe } from ${JSON.stringify(join(import.meta.dir, "../src/boot/probe.ts"))};
    import { FileBlockBackend, VirtioBlock } from ${JSON.stringify(join(import.meta.dir, "../src/devices/virtio/block.ts"))};
    await bootProbe("virtio-blk", {
      consoleOutput: (b) => process.stdout.write(b),
      beforeStart: (v) => void v.addVirtioDevice(new VirtioBlock(new FileBlockBackend(${JSON.stringify(disk)}))),
    });
    await new Promise(() => {}); // never ends by itself
  `;
  const child = Bun.spawn([process.execPath, "-e", script], { stdout: "pipe", stderr: "inherit" });
  const reader = (child.stdout as ReadableStream<Uint8Array>).getReader();
  let text = "";
  const deadline = setTimeout(() => child.kill("SIGKILL"), 20_000);
  while (!text.includes("wrote sector 1")) {
    const { value, done } = await reader.read();
    if (done) break;
    text += new TextDecoder().decode(value);
  }
  child.kill("SIGKILL");
  clearTimeout(deadline);
  expect(await child.exited).not.toBe(0);
  expect(text).toContain("virtio-blk: wrote sector 1");
  const sector = readFileSync(disk).subarray(512, 1024);
  expect([...sector].every((b, i) => b === ((i ^ 0x5a) & 0xff))).toBe(true);
});
