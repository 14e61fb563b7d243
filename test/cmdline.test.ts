import { describe, expect, test } from "bun:test";
import { DEFAULT_CMDLINE, buildCmdline, cmdlineBytes, cmdlineLimit, rootArgs, virtioMmioDeviceArg, writeCmdline } from "../src/arch/x86_64/cmdline.ts";
import { CMDLINE_MAX_SIZE, CMDLINE_START, MiB, VIRTIO_MMIO_SIZE, VIRTIO_MMIO_START } from "../src/arch/x86_64/layout.ts";
import { GuestMemory } from "../src/memory.ts";

describe("kernel command line", () => {
  test("Firecracker's default", () => {
    expect(buildCmdline()).toBe("console=ttyS0 reboot=k panic=1 pci=off");
  });

  test("one virtio_mmio.device per device, after the extras", () => {
    const line = buildCmdline({
      extra: ["noxsave", "root=/dev/vda"],
      devices: [
        { addr: VIRTIO_MMIO_START, irq: 5 },
        { addr: VIRTIO_MMIO_START + VIRTIO_MMIO_SIZE, irq: 6 },
      ],
    });
    expect(line).toBe(
      `${DEFAULT_CMDLINE} noxsave root=/dev/vda virtio_mmio.device=4K@0xc0001000:5 virtio_mmio.device=4K@0xc0002000:6`,
    );
  });

  test("virtio_mmio.device with a size that is not whole KiB", () => {
    expect(virtioMmioDeviceArg({ addr: 0xd0000000, size: 0x200, irq: 7 })).toBe("virtio_mmio.device=512@0xd0000000:7");
  });

  test("the limit counts the NUL: CMDLINE_MAX_SIZE without a header", () => {
    expect(cmdlineLimit()).toBe(CMDLINE_MAX_SIZE);
    const fits = "x".repeat(CMDLINE_MAX_SIZE - 1);
    expect(cmdlineBytes(fits).byteLength).toBe(CMDLINE_MAX_SIZE);
    expect(() => cmdlineBytes(fits + "y")).toThrow(`${CMDLINE_MAX_SIZE + 1} bytes with its NUL terminator; the limit is ${CMDLINE_MAX_SIZE} (CMDLINE_MAX_SIZE)`);
  });

  test("the kernel's hdr.cmdline_size wins when it is smaller", () => {
    // boot.rst: cmdline_size excludes the NUL, so 255 allows 255 characters.
    expect(cmdlineBytes("a".repeat(255), 255).byteLength).toBe(256);
    expect(() => buildCmdline({ base: "a".repeat(256), hdrCmdlineSize: 255 })).toThrow(
      "the limit is 256 (boot_params.hdr.cmdline_size 255 + 1)",
    );
  });

  test("multi-byte characters count as bytes", () => {
    expect(() => cmdlineBytes("é".repeat(1024))).toThrow("2049 bytes");
  });

  test("a NUL inside is refused", () => {
    expect(() => buildCmdline({ extra: ["a\0b"] })).toThrow("NUL byte");
  });

  test("written NUL-terminated at CMDLINE_START", () => {
    const mem = GuestMemory.plain([{ gpa: 0, size: 1 * MiB }]);
    mem.fill(CMDLINE_START, 64, 0xff);
    const { addr, size } = writeCmdline(mem, "console=ttyS0");
    expect(addr).toBe(CMDLINE_START);
    expect(size).toBe(14);
    expect(new TextDecoder().decode(mem.read(addr, 13))).toBe("console=ttyS0");
    expect(mem.readU8(addr + 13)).toBe(0);
  });

  test("root=: the whole disk by its position, or a partition by its PARTUUID; ro or rw", () => {
    expect(rootArgs([])).toEqual([]);
    expect(rootArgs([{ readOnly: true }, { root: false }])).toEqual([]);
    expect(rootArgs([{ root: true, readOnly: true }])).toEqual(["root=/dev/vda", "ro"]);
    expect(rootArgs([{}, { root: true }])).toEqual(["root=/dev/vdb", "rw"]);
    expect(rootArgs([{ root: true, readOnly: true, partuuid: "0eaa91a0-01" }, {}])).toEqual(["root=PARTUUID=0eaa91a0-01", "ro"]);
    expect(() => rootArgs([...Array(26).fill({}), { root: true }])).toThrow("only the first 26 drives");
  });
});
