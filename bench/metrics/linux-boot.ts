// Metric 2: Linux boot. The default guest (guest/build.ts: vmlinux and initramfs), 1 vCPU, 128 MiB, timed
// from process spawn by the kernel's own console lines (src/boot/milestones.ts) as they reach stdout:
//   kindling: bench/children/linux.ts, bootLinux() with the command line `kindling boot` uses;
//   QEMU:     microvm with the same vmlinux (entered through its PVH note), initramfs and the command line
//             the kernel printed under kindling (its cpuid profile's additions included).
// Firecracker's method is the boot timer: the guest's init writes 123 to it as its first act. Where the host
// emulates guest kernel code (PVM, or nested without VMX), guest user space never runs, so there is no
// boot-timer write: kindling is timed to "Run /init", and the run is labelled as minutes-long emulation.
// There QEMU also needs `-cpu qemu64,-pni,+xsaveerptr` and `nopv`, and stops at the kernel's int3 self-test
// (KVM cannot emulate int3 at CPL0 and QEMU has no emulation assist), so the two are compared at the last
// milestone both reached.

import { ConsoleWatcher, MILESTONES, type Milestone } from "../../src/boot/milestones.ts";
import { DEFAULT_CMDLINE } from "../../src/arch/x86_64/cmdline.ts";
import { MiB } from "../../src/arch/x86_64/layout.ts";
import { summarize, type Summary } from "../lib/stats.ts";
import { qemuCommand } from "../qemu/command.ts";
import { join } from "node:path";

const CHILD = join(import.meta.dir, "../children/linux.ts");
const ORDER = Object.keys(MILESTONES).filter((m) => m !== "panic") as Milestone[];
const BOOT_TIMER_LINE = /kindling: boot-timer ([\d.]+)/;
/** What QEMU prints when KVM hands it an instruction it cannot emulate: the boot will go no further. */
const QEMU_STUCK = /KVM internal error|emulation failure/;

export interface LinuxRun {
  /** Milliseconds from spawn to each milestone's line on stdout. */
  milestones: Partial<Record<Milestone, number>>;
  /** Milliseconds from spawn to the boot-timer line (kindling, when the guest's init ran). */
  bootTimerMs?: number;
  ended: string;
}

export interface LinuxBootResult {
  emulatingHost: boolean;
  note: string;
  kernel: string;
  cmdline: { kindling: string; qemu: string };
  kindling: LinuxRun[];
  qemu?: { runs: LinuxRun[]; command: string[] };
  /** The last milestone both reached, and each one's time to it. */
  common?: { milestone: Milestone; kindlingMs: Summary; qemuMs: Summary };
  /** kindling's time to its own end point: the boot timer, or "Run /init" where user space cannot run. */
  kindlingEnd: { what: string; ms?: Summary };
}

async function watch(cmd: string[], opts: { stopAt: (w: ConsoleWatcher) => boolean; stuck?: RegExp; timeoutMs: number }): Promise<LinuxRun & { text: string }> {
  const t0 = performance.now();
  const child = Bun.spawn(cmd, { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  const watcher = new ConsoleWatcher(t0);
  let ended = "exited";
  let bootTimerMs: number | undefined;
  const timer = setTimeout(() => {
    ended = `timed out after ${opts.timeoutMs / 1000} s`;
    child.kill("SIGKILL");
  }, opts.timeoutMs);
  const stderr = (async () => {
    let text = "";
    for await (const chunk of child.stderr) {
      text += new TextDecoder().decode(chunk);
      if (opts.stuck?.test(text) && ended === "exited") {
        ended = `stuck: ${opts.stuck.exec(text)![0]}`;
        child.kill("SIGKILL");
      }
    }
    return text;
  })();
  for await (const chunk of child.stdout) {
    watcher.push(chunk);
    if (bootTimerMs === undefined && BOOT_TIMER_LINE.test(watcher.text)) bootTimerMs = performance.now() - t0;
    if (ended === "exited" && opts.stopAt(watcher)) {
      ended = "reached its end point";
      child.kill("SIGKILL");
    }
  }
  await child.exited;
  clearTimeout(timer);
  await stderr;
  return { milestones: Object.fromEntries(watcher.seen), bootTimerMs, ended, text: watcher.text };
}

export async function linuxBoot(opts: {
  runs: number; qemuRuns: number; vmlinux: string; initramfs: string; emulatingHost: boolean; qemu: boolean; qemuCpu?: string; log: (s: string) => void;
}): Promise<LinuxBootResult> {
  // Where user space cannot run, "Run /init" is as far as a boot gets; elsewhere, wait for the boot timer.
  const kindlingStop = (w: ConsoleWatcher) =>
    BOOT_TIMER_LINE.test(w.text) || w.seen.has("panic") || (opts.emulatingHost && w.seen.has("runInit"));
  const kindling: LinuxRun[] = [];
  let printedCmdline = DEFAULT_CMDLINE;
  for (let i = 0; i < opts.runs; i++) {
    const r = await watch([process.execPath, CHILD, opts.vmlinux, opts.initramfs, DEFAULT_CMDLINE], { stopAt: kindlingStop, timeoutMs: 400_000 });
    printedCmdline = /Command line: (.*)/.exec(r.text.replace(/\r/g, ""))?.[1]?.trim() ?? printedCmdline;
    kindling.push({ milestones: r.milestones, bootTimerMs: r.bootTimerMs, ended: r.ended });
    opts.log(`linux boot (kindling): ${JSON.stringify(r.milestones)}`);
  }

  let qemu: LinuxBootResult["qemu"];
  const qemuCmdline = opts.emulatingHost ? `${printedCmdline} nopv` : printedCmdline;
  if (opts.qemu) {
    const command = qemuCommand({
      kernel: opts.vmlinux, initrd: opts.initramfs, append: qemuCmdline, memSize: 128 * MiB, i8042: false,
      cpu: opts.emulatingHost ? "qemu64,-pni,+xsaveerptr" : (opts.qemuCpu ?? "host"),
    });
    const runs: LinuxRun[] = [];
    for (let i = 0; i < opts.qemuRuns; i++) {
      const r = await watch(command, { stopAt: kindlingStop, stuck: QEMU_STUCK, timeoutMs: 400_000 });
      runs.push({ milestones: r.milestones, bootTimerMs: r.bootTimerMs, ended: r.ended });
      opts.log(`linux boot (QEMU): ${JSON.stringify(r.milestones)} ${r.ended}`);
    }
    qemu = { runs, command };
  }

  // The last milestone, in boot order, that every run of both reached.
  const all = [...kindling, ...(qemu?.runs ?? [])];
  const shared = ORDER.filter((m) => all.every((r) => r.milestones[m] !== undefined));
  const last = shared[shared.length - 1];
  const common = qemu && last
    ? {
        milestone: last,
        kindlingMs: summarize(kindling.map((r) => r.milestones[last]!), "ms"),
        qemuMs: summarize(qemu.runs.map((r) => r.milestones[last]!), "ms"),
      }
    : undefined;
  const endTimes = kindling.map((r) => r.bootTimerMs ?? r.milestones.runInit).filter((x): x is number => x !== undefined);
  return {
    emulatingHost: opts.emulatingHost,
    note: opts.emulatingHost
      ? "this host emulates guest kernel code (CPL0) one instruction at a time: a Linux boot takes minutes, not milliseconds; the ratio still counts"
      : "hardware KVM: timed to the boot-timer write by the guest's init (Firecracker's method)",
    kernel: opts.vmlinux,
    cmdline: { kindling: printedCmdline, qemu: qemuCmdline },
    kindling,
    qemu,
    common,
    kindlingEnd: {
      what: kindling.some((r) => r.bootTimerMs !== undefined) ? "boot-timer write by init" : '"Run /init" on the console',
      ms: endTimes.length > 0 ? summarize(endTimes, "ms") : undefined,
    },
  };
}

