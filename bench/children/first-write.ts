// The process the start-to-first-instruction benchmark spawns: `bun bench/children/first-write.ts`, its
// bundle (scripts/bundle.ts: one file, compiled to bytecode, as a program using kindling would ship), or its
// standalone executable (scripts/bundle.ts --executable: the headline figure). It boots
// the first-write probe with a boot-timer device and prints one line when the guest's first write arrives
// (the parent times spawn -> that line), then lets the VM reset and exits.
//
//   first-write <ms since this process started> <CPU ms since this process started>
//
// No top-level await: a bytecode bundle is CommonJS, which has none.

import { write_ } from "../../src/kvm/libc.ts";
import { bootProbe } from "../../src/boot/probe.ts";
import { BOOT_TIMER_SIZE, BOOT_TIMER_START } from "../../src/arch/x86_64/layout.ts";
import { BootTimer, bootTimerStart } from "../../src/devices/boot-timer.ts";

async function main(): Promise<void> {
  // The boot timer's own clock starts here; the line reports time since process start instead, which is
  // what the parent compares with (performance.now() counts from process start in Bun). It is written with
  // write(2) through kindling's libc bindings: the first process.stdout.write() on a pipe sets up Node's
  // stream machinery, over 10 ms, and loading node:fs for writeSync costs 2 to 15 ms, neither kindling's.
  const timer = new BootTimer(bootTimerStart(), () => {
    const cpu = process.cpuUsage();
    write_(1, new TextEncoder().encode(`first-write ${performance.now().toFixed(3)} ${((cpu.user + cpu.system) / 1000).toFixed(3)}\n`));
  });
  const vm = await bootProbe("first-write", { beforeStart: (v) => v.mmio.register(BOOT_TIMER_START, BOOT_TIMER_SIZE, timer) });
  const exit = await vm.exited;
  if (exit.reason !== "reset" || !timer.bootComplete) {
    process.stderr.write(`first-write probe: ended with ${exit.reason} (${exit.message}) ${timer.bootComplete ? "" : "without writing the boot timer"}\n`);
    process.exit(1);
  }
}

main().catch((e: Error) => {
  process.stderr.write(`first-write: ${e.stack ?? e.message}\n`);
  process.exit(1);
});
