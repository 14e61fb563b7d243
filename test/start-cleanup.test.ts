// A start that fails gives back everything it took: KVM fds, eventfds, guest RAM, opened and locked drive
// images. A client may retry InstanceStart; each failed attempt must leave the process as it found it.

import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { consola } from "consola";
import { VIRTIO_DEVICES_MAX, MMIO32_START } from "../src/arch/x86_64/layout.ts";
import { bootLinux } from "../src/boot/linux.ts";
import { FileBlockBackend } from "../src/devices/virtio/block.ts";
import { Elf64_Ehdr, Elf64_Phdr, EI_CLASS, EI_DATA, ELFCLASS64, ELFDATA2LSB, EM_X86_64, ET_EXEC, PT_LOAD } from "../src/loader/elf.ts";
import { StructView } from "../src/kvm/struct.ts";
import { Vm } from "../src/vm.ts";
import { fakeMicroVM, type FakeVm } from "./support/api.ts";
import { kvmTest } from "./support/kvm.ts";

consola.level = -1;
const dir = mkdtempSync(join(tmpdir(), "kindling-start-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** What this process holds open that a VM takes: KVM objects, eventfds, files under `dir`. */
function held(): string[] {
  const out: string[] = [];
  for (const fd of readdirSync("/proc/self/fd")) {
    let target: string;
    try {
      target = readlinkSync(`/proc/self/fd/${fd}`);
    } catch {
      continue;
    }
    if (/kvm|eventfd/.test(target) || target.startsWith(dir)) out.push(target);
  }
  return out.sort();
}

/** Mappings of exactly `size` bytes (guest RAM regions are that large; nothing else is). */
function mappingsOf(size: number): number {
  return readFileSync("/proc/self/maps", "utf8").split("\n").filter((l) => {
    const m = /^([0-9a-f]+)-([0-9a-f]+)/.exec(l);
    return m && parseInt(m[2]!, 16) - parseInt(m[1]!, 16) === size;
  }).length;
}

const image = (name: string) => {
  const p = join(dir, name);
  writeFileSync(p, new Uint8Array(64 * 512));
  return p;
};

/** A minimal ELF vmlinux: one PT_LOAD at 16 MiB, entry at its start (never run here). */
function tinyKernel(): string {
  const img = new Uint8Array(0x1000 + 0x100);
  const eh = new StructView(Elf64_Ehdr, img);
  eh.slice("e_ident").set([0x7f, 0x45, 0x4c, 0x46]);
  eh.set(`e_ident.${EI_CLASS}`, ELFCLASS64).set(`e_ident.${EI_DATA}`, ELFDATA2LSB).set("e_ident.6", 1);
  eh.assign({ e_type: ET_EXEC, e_machine: EM_X86_64, e_version: 1, e_entry: 0x1000000n, e_phoff: Elf64_Ehdr.size, e_ehsize: Elf64_Ehdr.size, e_phentsize: Elf64_Phdr.size, e_phnum: 1 });
  new StructView(Elf64_Phdr, img, Elf64_Ehdr.size).assign({ p_type: PT_LOAD, p_flags: 5, p_offset: 0x1000, p_vaddr: 0xffffffff81000000n, p_paddr: 0x1000000n, p_filesz: 0x100, p_memsz: 0x1000, p_align: 0x200000 });
  const p = join(dir, "vmlinux");
  writeFileSync(p, img);
  return p;
}

describe("InstanceStart counts its devices before opening any", () => {
  test(`more than ${VIRTIO_DEVICES_MAX} virtio devices: refused, nothing opened or locked`, async () => {
    const booted: FakeVm[] = [];
    const vm = fakeMicroVM({ "boot-source": { kernel_image_path: tinyKernel() }, entropy: {} }, {}, booted);
    const paths = Array.from({ length: VIRTIO_DEVICES_MAX }, (_, i) => image(`d${i}.img`));
    paths.forEach((p, i) => vm.putDrive({ drive_id: `d${i}`, is_root_device: i === 0, path_on_host: p }));
    const before = held();
    await expect(vm.start()).rejects.toThrow(`${VIRTIO_DEVICES_MAX + 1} virtio devices are configured (drives, network interfaces, vsock, entropy); at most ${VIRTIO_DEVICES_MAX} fit`);
    expect(booted).toEqual([]);
    expect(vm.state).toBe("Not started");
    expect(held()).toEqual(before);
  });
});

describe("a boot that fails part way releases what it took", () => {
  kvmTest("the Vm constructor: guest RAM that cannot be mapped (KVM fds, eventfds and the low RAM region given back)", () => {
    const before = held();
    const lowRegions = mappingsOf(MMIO32_START);
    // 1 PiB: the region below 4 GiB maps, the one above cannot (the address space is 128 TiB).
    expect(() => new Vm({ memSize: 2 ** 50, vcpus: 1 })).toThrow("mmap");
    expect(held()).toEqual(before);
    expect(mappingsOf(MMIO32_START)).toBe(lowRegions);
  });

  kvmTest("bootLinux: a second drive that is locked; the first is closed and unlocked again", async () => {
    const first = image("first.img");
    const second = image("second.img");
    const holder = new FileBlockBackend(second, false); // another VM has it
    try {
      const before = held();
      await expect(bootLinux({
        kernel: tinyKernel(), memSize: 64 << 20, vcpus: 1, cpuidProfile: "default", start: false,
        drives: [{ path: first, root: true }, { path: second }],
      })).rejects.toThrow("is in use by another VM or program");
      expect(held()).toEqual(before);
      new FileBlockBackend(first, false).close(); // its lock was released
    } finally {
      holder.close();
    }
  }, 30_000);
});
