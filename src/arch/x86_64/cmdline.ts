// The kernel command line: a NUL-terminated string at CMDLINE_START that boot_params.hdr.cmd_line_ptr
// (or hvm_start_info.cmdline_paddr for PVH boot) points at.
//
// Kindling starts from Firecracker's default and appends one `virtio_mmio.device=` argument per virtio
// device, because a microVM has no bus to enumerate: the kernel learns each device's register window and
// IRQ from the command line (drivers/virtio/virtio_mmio.c, "virtio_mmio.device=<size>@<baseaddr>:<irq>").

import type { GuestMemory } from "../../memory.ts";
import { CMDLINE_MAX_SIZE, CMDLINE_START, VIRTIO_MMIO_SIZE } from "./layout.ts";

/**
 * Firecracker's default: the console on the first serial port; reboot through the keyboard controller
 * (`reboot=k`, which kindling sees as a write to the i8042); reboot 1 s after a panic; and no PCI probing,
 * since a microVM has no PCI bus.
 */
export const DEFAULT_CMDLINE = "console=ttyS0 reboot=k panic=1 pci=off";

export interface VirtioMmioWindow {
  /** Guest-physical address of the device's register window. */
  addr: number;
  /** The window's size in bytes (VIRTIO_MMIO_SIZE unless given); the kernel accepts K/M suffixes. */
  size?: number;
  /** The GSI the device interrupts on. */
  irq: number;
}

/** `virtio_mmio.device=4K@0xc0001000:5`. */
export function virtioMmioDeviceArg(dev: VirtioMmioWindow): string {
  const size = dev.size ?? VIRTIO_MMIO_SIZE;
  if (!Number.isSafeInteger(dev.addr) || dev.addr < 0) throw new Error(`virtio-mmio device address ${dev.addr} is not valid`);
  if (!Number.isInteger(dev.irq) || dev.irq < 0) throw new Error(`virtio-mmio device IRQ ${dev.irq} is not valid`);
  if (!Number.isSafeInteger(size) || size <= 0) throw new Error(`virtio-mmio device size ${size} is not valid`);
  const sizeText = size % 1024 === 0 ? `${size / 1024}K` : `${size}`;
  return `virtio_mmio.device=${sizeText}@0x${dev.addr.toString(16)}:${dev.irq}`;
}

/** What the root-argument rules need to know of a drive, in window order (/dev/vda first). */
export interface RootDriveInfo {
  /** The kernel mounts its root filesystem from this drive. */
  root?: boolean;
  readOnly?: boolean;
  /** Find the root by this partition UUID (Firecracker's drive.partuuid) instead of as /dev/vdX. */
  partuuid?: string;
}

/**
 * The `root=` arguments for a set of drives (both of kindling's rules, in one place):
 *   - a root drive without a partuuid is the whole disk: `root=/dev/vdX` by its position, since virtio-blk
 *     disks appear as /dev/vda, /dev/vdb ... in the order the kernel probes them, which is window order;
 *   - a root drive with a partuuid is found through its partition table: `root=PARTUUID=<uuid>`;
 * then `ro` or `rw` as the drive is read-only or not. No root drive: no arguments (the initramfs is root).
 */
export function rootArgs(drives: readonly RootDriveInfo[]): string[] {
  const i = drives.findIndex((d) => d.root);
  if (i < 0) return [];
  const d = drives[i]!;
  if (i >= 26 && d.partuuid === undefined) throw new Error(`root drive ${i + 1}: only the first 26 drives have a /dev/vdX name (give it a partuuid)`);
  const root = d.partuuid !== undefined ? `root=PARTUUID=${d.partuuid}` : `root=/dev/vd${String.fromCharCode(97 + i)}`;
  return [root, d.readOnly ? "ro" : "rw"];
}

/**
 * The longest command line the kernel accepts, in bytes including the terminating NUL.
 * boot.rst: hdr.cmdline_size (protocol 2.06+) is "the maximum size of the command line without the
 * terminating zero" (header.S sets it to COMMAND_LINE_SIZE - 1). Without a setup header (an ELF vmlinux),
 * kindling uses the x86 COMMAND_LINE_SIZE, CMDLINE_MAX_SIZE.
 */
export function cmdlineLimit(hdrCmdlineSize?: number): number {
  if (hdrCmdlineSize === undefined || hdrCmdlineSize === 0) return CMDLINE_MAX_SIZE;
  // Never more than the room kindling gives the command line, whatever the header claims.
  return Math.min(hdrCmdlineSize + 1, CMDLINE_MAX_SIZE);
}

export interface CmdlineOptions {
  /** Replaces DEFAULT_CMDLINE (the user's `boot_args`). */
  base?: string;
  /** Appended after the base, in order (for example a cpuid profile's `noxsave`). */
  extra?: readonly string[];
  /** One `virtio_mmio.device=` argument each. */
  devices?: readonly VirtioMmioWindow[];
  /** boot_params.hdr.cmdline_size from the kernel's setup header, when the kernel has one. */
  hdrCmdlineSize?: number;
}

/** The command line as a string, checked against the kernel's size limit. */
export function buildCmdline(opts: CmdlineOptions = {}): string {
  const pieces = [opts.base ?? DEFAULT_CMDLINE, ...(opts.extra ?? []), ...(opts.devices ?? []).map(virtioMmioDeviceArg)];
  const line = pieces.map((p) => p.trim()).filter((p) => p.length > 0).join(" ");
  cmdlineBytes(line, opts.hdrCmdlineSize);
  return line;
}

/** The bytes to put in guest memory: UTF-8 and a NUL. Throws if a NUL is inside or the line is too long. */
export function cmdlineBytes(line: string, hdrCmdlineSize?: number): Uint8Array {
  if (line.includes("\0")) throw new Error("kernel command line contains a NUL byte");
  const text = new TextEncoder().encode(line);
  const limit = cmdlineLimit(hdrCmdlineSize);
  if (text.byteLength + 1 > limit) {
    const source = hdrCmdlineSize ? `boot_params.hdr.cmdline_size ${hdrCmdlineSize} + 1` : "CMDLINE_MAX_SIZE";
    throw new Error(
      `kernel command line is ${text.byteLength + 1} bytes with its NUL terminator; the limit is ${limit} (${source})`,
    );
  }
  const bytes = new Uint8Array(text.byteLength + 1);
  bytes.set(text);
  return bytes;
}

/** Write the command line at CMDLINE_START; returns its address and size (NUL included). */
export function writeCmdline(mem: GuestMemory, line: string, hdrCmdlineSize?: number): { addr: number; size: number } {
  const bytes = cmdlineBytes(line, hdrCmdlineSize);
  mem.write(CMDLINE_START, bytes);
  return { addr: CMDLINE_START, size: bytes.byteLength };
}
