import { writeSync } from "node:fs";
import { bootProbe } from "../../src/boot/probe.ts";
import { BOOT_TIMER_SIZE, BOOT_TIMER_START } from "../../src/arch/x86_64/layout.ts";
import { BootTimer, bootTimerStart } from "../../src/devices/boot-timer.ts";
async function main() {
const timer = new BootTimer(bootTimerStart(), () => {
  const cpu = process.cpuUsage();
  writeSync(1, `first-write ${performance.now().toFixed(3)} ${((cpu.user + cpu.system) / 1000).toFixed(3)}\n`);
});
const vm = await bootProbe("first-write", { beforeStart: (v) => v.mmio.register(BOOT_TIMER_START, BOOT_TIMER_SIZE, timer) });
const exit = await vm.exited;
}
void main();
