// Failures must name what failed: the ioctl, the errno, and the guest address that was out of range.

import { describe, expect, test } from "bun:test";
import { Kvm } from "../src/kvm/system.ts";
import { ioctl, SysError } from "../src/kvm/libc.ts";
import { KVM } from "../src/kvm/ioctl.ts";
import { StructView } from "../src/kvm/struct.ts";
import { kvm_sregs } from "../src/kvm/uapi.ts";
import { GuestMemory, GuestMemoryError } from "../src/memory.ts";
import { Vm } from "../src/vm.ts";
import { MiB } from "../src/arch/x86_64/layout.ts";
import { kvmTest } from "./support/kvm.ts";

describe("errors that name the problem", () => {
  kvmTest("an ioctl the kernel refuses becomes `KVM_SET_SREGS failed: EINVAL`", async () => {
    const vm = new Vm({ memSize: 2 * MiB });
    try {
      const vcpu = vm.vcpus[0]!.fd;
      const sregs = vcpu.getSregs();
      // CR0.PG without CR0.PE is an invalid combination (Intel SDM vol. 3A 2.5): KVM refuses it.
      sregs.set("cr0", 0x80000000);
      let err: unknown;
      try {
        vcpu.setSregs(sregs);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(SysError);
      expect((err as SysError).message).toStartWith("KVM_SET_SREGS failed: EINVAL");
      expect((err as SysError).code).toBe("EINVAL");
    } finally {
      await vm.stop();
    }
  });

  kvmTest("an ioctl on the wrong kind of fd names the ioctl and the errno", () => {
    const kvm = new Kvm();
    try {
      // KVM_GET_SREGS is a vCPU ioctl; /dev/kvm answers requests it does not know with EINVAL.
      expect(() => ioctl(kvm.fd, KVM.GET_SREGS, new StructView(kvm_sregs).bytes)).toThrow("KVM_GET_SREGS failed: EINVAL");
    } finally {
      kvm.close();
    }
  });

  test("a guest address outside RAM is refused, never read or written", () => {
    const mem = GuestMemory.plain([{ gpa: 0, size: 4096 }]);
    expect(() => mem.write(4090, new Uint8Array(8))).toThrow(GuestMemoryError);
    expect(() => mem.readU32(4096)).toThrow("guest-physical range 0x1000+0x4 is not in guest RAM");
    expect(() => mem.slice(-1, 1)).toThrow(GuestMemoryError);
    expect(() => mem.slice(0, 2 ** 60)).toThrow(GuestMemoryError);
    expect(() => mem.slice(0.5, 1)).toThrow(GuestMemoryError);
    // Nothing past the end was touched, and the last in-range bytes still work.
    mem.write(4088, new Uint8Array(8).fill(7));
    expect(mem.readU8(4095)).toBe(7);
  });

  kvmTest("a VM's guest memory refuses an address in the MMIO gap", async () => {
    const vm = new Vm({ memSize: 2 * MiB });
    try {
      expect(() => vm.memory.writeU32(2 * MiB, 1)).toThrow("guest-physical range 0x200000+0x4 is not in guest RAM");
    } finally {
      await vm.stop();
    }
  });
});

describe("house rules", () => {
  test("src/kvm/ is the only importer of bun:ffi", async () => {
    const glob = new Bun.Glob("**/*.ts");
    const offenders: string[] = [];
    for (const dir of ["src", "guest", "bench", "scripts"]) {
      for await (const f of glob.scan({ cwd: `${import.meta.dir}/../${dir}` })) {
        const text = await Bun.file(`${import.meta.dir}/../${dir}/${f}`).text();
        if (/from\s+["']bun:ffi["']/.test(text) && !(dir === "src" && f.startsWith("kvm/"))) offenders.push(`${dir}/${f}`);
      }
    }
    expect(offenders).toEqual([]);
  });

  test("no C or C++ source is tracked", () => {
    const r = Bun.spawnSync(["git", "ls-files"], { cwd: `${import.meta.dir}/..` });
    const files = r.stdout.toString().split("\n").filter((f) => /\.(c|h|cc|cpp|cxx|hpp)$/.test(f));
    expect(files).toEqual([]);
  });
});
