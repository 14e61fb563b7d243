// The process the Linux-boot benchmark spawns: boots the guest kernel through bootLinux(), exactly as
// `kindling boot` would, with the serial console on stdout. The parent timestamps the console lines.
// It prints "kindling: boot-timer <ms>" if the guest's init writes the boot timer, and exits when the
// VM ends (the parent kills it once it has seen what it waits for).
//
// Usage: bun bench/children/linux.ts VMLINUX INITRD CMDLINE

import { bootLinux } from "../../src/boot/linux.ts";
import { MiB } from "../../src/arch/x86_64/layout.ts";
import { exitWhenOrphaned } from "./orphan-guard.ts";

exitWhenOrphaned();

const [kernel, initrd, cmdline] = process.argv.slice(2);
if (!kernel || !initrd || cmdline === undefined) {
  process.stderr.write("usage: bun bench/children/linux.ts VMLINUX INITRD CMDLINE\n");
  process.exit(2);
}
const { vm } = await bootLinux({
  kernel, initrd, cmdline, memSize: 128 * MiB, vcpus: 1,
  consoleOutput: (b) => process.stdout.write(b),
  onBootComplete: (info) => process.stdout.write(`\nkindling: boot-timer ${info.wallMs.toFixed(1)}\n`),
});
const exit = await vm.exited;
process.stderr.write(`kindling: VM ended: ${exit.reason}: ${exit.message}\n`);
