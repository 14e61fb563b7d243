// Linux through kindling: the default guest's kernel, booted the way `kindling boot` boots it.
// Both boots stop as soon as the kernel has printed what they check; the boots that go on into userland
// (init, a command, the devices used from inside, SMP) are in linux-userland.test.ts, cli-exec.test.ts and
// boot-terminal.test.ts.

import { describe, expect } from "bun:test";
import { bootLinux, type BootPlan } from "../src/boot/linux.ts";
import { ConsoleWatcher } from "../src/boot/milestones.ts";
import { formatE820 } from "../src/arch/x86_64/e820.ts";
import { MiB } from "../src/arch/x86_64/layout.ts";
import { DEFAULT_CMDLINE } from "../src/arch/x86_64/cmdline.ts";
import { detectHost } from "../src/host.ts";
import { buildGuest, type GuestArtifacts } from "../guest/build.ts";
import type { Vm } from "../src/vm.ts";
import type { VmEnd } from "../src/lifecycle.ts";
import { kvmTest } from "./support/kvm.ts";

const host = detectHost();
let guest: GuestArtifacts | undefined;
async function artifacts(): Promise<GuestArtifacts> {
  guest ??= await buildGuest({ log: () => {} });
  return guest;
}

async function boot(opts: { vcpus?: number; memSize?: number; cmdline?: string; protocol?: "linux64" | "pvh" }) {
  const g = await artifacts();
  const watcher = new ConsoleWatcher();
  const logs: string[] = [];
  const { vm, plan } = await bootLinux({
    kernel: g.vmlinux,
    initrd: g.initramfs,
    memSize: opts.memSize ?? 128 * MiB,
    vcpus: opts.vcpus ?? 1,
    cmdline: opts.cmdline,
    protocol: opts.protocol,
    consoleOutput: (b) => watcher.push(b),
    log: (l) => logs.push(l),
  });
  return { vm, plan, watcher, logs };
}

/** Stop the VM after `ms`, so a hang fails the test with the console shown instead of timing out silently. */
function deadline(vm: Vm, ms: number): Timer {
  return setTimeout(() => void vm.stop(`test deadline of ${ms / 1000} s passed`), ms);
}

describe("Linux boot", () => {
  kvmTest(
    "the kernel starts: banner, our exact command line, our e820 map line by line",
    async () => {
      const memSize = 256 * MiB;
      const { vm, plan, watcher } = await boot({ memSize });
      const e820Lines = formatE820(plan.e820);
      const timer = deadline(vm, 120_000);
      // The e820 map comes right after the command line; the last entry's line ends the wait.
      await Promise.race([watcher.until((w) => e820Lines.every((l) => w.text.includes(l))), vm.exited]);
      clearTimeout(timer);
      await vm.stop("the test has what it needs");
      // The kernel's lines without their timestamps.
      const lines = watcher.lines().map((l) => l.replace(/^\[\s*\d+\.\d+\] /, ""));
      expect(lines.find((l) => /^Linux version 6\.1\.\d+/.test(l))).toBeDefined();
      expect(lines).toContain(`Command line: ${plan.cmdline}`);
      // Every e820 line we wrote, in our order, as the kernel printed them.
      const printed = lines.filter((l) => l.startsWith("BIOS-e820:"));
      expect(printed).toEqual(e820Lines);
      if (host.emulatesGuestKernel) {
        expect(plan.cpuidProfile).toBe("emulated-host");
        expect(plan.cmdline).toContain("noxsave");
      }
    },
    180_000,
  );

  kvmTest(
    "the PVH entry: 32-bit protected mode, hvm_start_info with the command line, memory map and initrd",
    async () => {
      const { vm, plan, watcher } = await boot({ protocol: "pvh" });
      const timer = deadline(vm, 120_000);
      await Promise.race([watcher.until((w) => /RAMDISK: \[mem [^\]]+\]\r?\n/.test(w.text)), vm.exited]);
      clearTimeout(timer);
      await vm.stop("the test has what it needs");
      const lines = watcher.lines().map((l) => l.replace(/^\[\s*\d+\.\d+\] /, ""));
      expect(plan.kernel.pvhEntry).toBeDefined();
      expect(lines.find((l) => /^Linux version 6\.1\.\d+/.test(l))).toBeDefined();
      // The command line and the memory map came through hvm_start_info, not a zero page.
      expect(lines).toContain(`Command line: ${plan.cmdline}`);
      expect(lines).toContain("BIOS-e820: [mem 0x0000000000100000-0x0000000007ffffff] usable");
      // The initrd was found through hvm_start_info's module list, where kindling put it.
      const initrd = plan.initrd!;
      const hex = (n: number) => `0x${n.toString(16).padStart(8, "0")}`;
      expect(lines).toContain(`RAMDISK: [mem ${hex(initrd.addr)}-${hex(initrd.addr + Math.ceil(initrd.size / 4096) * 4096 - 1)}]`);
    },
    180_000,
  );

});
