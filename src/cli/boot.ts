// `kindling boot`: build the default guest if needed and boot it with this terminal on its serial console.
// `--probe NAME` boots one of the probe guests instead (guest/probes/).
// `--explain` narrates each setup step with the values written (src/explain.ts); `--trace FILE` records
// every VM exit (src/trace/writer.ts).

import { defineCommand } from "citty";
import { consola } from "consola";
import { z } from "../zod.ts";
import { bootProbe } from "../boot/probe.ts";
import { bootLinux } from "../boot/linux.ts";
import { explainTo } from "../explain.ts";
import { TraceFileError, traceToFile, type TraceCloser } from "../trace/writer.ts";
import { ConsoleWatcher, type Milestone } from "../boot/milestones.ts";
import { attachConsole, ESCAPE_HELP } from "../console.ts";
import { CPUID_PROFILES } from "../arch/x86_64/cpuid.ts";
import { MiB } from "../arch/x86_64/layout.ts";
import { detectHost, warnIfEmulatingHost } from "../host.ts";
import { PROBES } from "../../guest/probes/probes.ts";
import { CliError, EXIT } from "./main.ts";
import { guardExit } from "./exit-guard.ts";
import type { Vm } from "../vm.ts";
import type { VmEnd } from "../lifecycle.ts";

const BootArgs = z.object({
  probe: z.enum(Object.keys(PROBES) as [string, ...string[]], { error: () => `--probe: must be one of ${Object.keys(PROBES).join(", ")}` }).optional(),
  kernel: z.string().min(1, "--kernel: give a path").optional(),
  initrd: z.string().min(1, "--initrd: give a path").optional(),
  rootfs: z.string().min(1, "--rootfs: give a path").optional(),
  "read-write": z.boolean().optional(),
  cmdline: z.string().optional(),
  memory: z.coerce.number({ error: () => "--memory: must be a number of MiB" }).int("--memory: must be a whole number of MiB").min(32, "--memory: at least 32 MiB").max(64 * 1024, "--memory: at most 65536 MiB"),
  vcpus: z.coerce.number({ error: () => "--vcpus: must be a number" }).int("--vcpus: must be a whole number").min(1, "--vcpus: must be 1..32").max(32, "--vcpus: must be 1..32"),
  "boot-protocol": z.enum(["linux64", "pvh"], { error: () => "--boot-protocol: must be linux64 or pvh" }),
  "cpuid-profile": z.enum(["auto", ...CPUID_PROFILES], { error: () => `--cpuid-profile: must be one of auto, ${CPUID_PROFILES.join(", ")}` }),
  explain: z.boolean().optional(),
  "explain-only": z.boolean().optional(),
  trace: z.string().min(1, "--trace: give a file path").optional(),
});

/** `--explain` is text, `--explain=json` JSON; `--explain-only` alone means text. */
function explainFormat(rawArgs: string[], a: z.infer<typeof BootArgs>): "text" | "json" | undefined {
  const given = rawArgs.filter((r) => r.startsWith("--explain=")).map((r) => r.slice("--explain=".length));
  for (const g of given) if (g !== "json" && g !== "text") throw new CliError(`--explain=${g}: use --explain (text) or --explain=json`, EXIT.USAGE);
  if (given.includes("json")) return "json";
  return a.explain || a["explain-only"] ? "text" : undefined;
}

const MILESTONE_TEXT: Partial<Record<Milestone, string>> = {
  banner: "kernel banner",
  calibrate: "timer calibration",
  serial: "serial console driver",
  freeing: "kernel init done",
  runInit: "Run /init",
  initReady: "init ready",
  panic: "kernel panic",
};

export default defineCommand({
  meta: { name: "boot", description: `Boot the default Linux guest (or a probe guest) on this terminal. ${ESCAPE_HELP}.` },
  args: {
    kernel: { type: "string", description: "Kernel image: ELF vmlinux or bzImage (default: the built guest's vmlinux)", valueHint: "path" },
    initrd: { type: "string", description: "Boot from this initramfs instead of a root filesystem (the built guest's is initramfs.cpio)", valueHint: "path" },
    rootfs: { type: "string", description: "Root filesystem image, ext4, as /dev/vda (default: the built guest's rootfs.ext4 unless --initrd is given)", valueHint: "path" },
    "read-write": { type: "boolean", description: "Attach the root filesystem read-write (default: read-only)" },
    cmdline: { type: "string", description: 'Kernel command line (default: "console=ttyS0 reboot=k panic=1 pci=off")', valueHint: "text" },
    memory: { type: "string", description: "Guest RAM in MiB", default: "128", valueHint: "MiB" },
    vcpus: { type: "string", description: "Number of vCPUs", default: "1", valueHint: "n" },
    "boot-protocol": { type: "string", description: "How to enter the kernel: linux64 (64-bit boot protocol, zero page) or pvh (PVH entry, hvm_start_info)", default: "linux64", valueHint: "name" },
    "cpuid-profile": { type: "string", description: `cpuid profile: auto, ${CPUID_PROFILES.join(", ")}`, default: "auto", valueHint: "name" },
    probe: { type: "string", description: `Boot a probe guest instead (${Object.keys(PROBES).join(", ")})`, valueHint: "name" },
    explain: { type: "boolean", description: "Narrate each setup step with the values written, then boot (--explain=json: one JSON object per step)" },
    "explain-only": { type: "boolean", description: "Narrate the setup as --explain does, and stop before the guest runs" },
    trace: { type: "string", description: "Write one JSON line per VM exit to FILE (see `kindling trace`)", valueHint: "file" },
  },
  async run({ args, rawArgs }) {
    const parsed = BootArgs.safeParse(args);
    if (!parsed.success) throw new CliError(parsed.error.issues.map((i) => i.message).join("; "), EXIT.USAGE);
    const a = parsed.data;
    const explain = explainFormat(rawArgs, a);
    if (a.probe) {
      if (explain) throw new CliError("--explain narrates a Linux boot's setup steps; probe guests have none", EXIT.USAGE);
      return bootProbeOnTerminal(a.probe, a.trace);
    }
    // While explaining, stdout carries the narration and the VMM's own log goes to stderr.
    if (explain) consola.options.stdout = process.stderr;

    const host = detectHost();
    warnIfEmulatingHost(host);
    // The default guest boots as Firecracker's do: its ext4 root filesystem on virtio-blk, read-only, no
    // initramfs. --initrd boots from an initramfs instead (with no disk unless --rootfs is given too).
    let kernel = a.kernel;
    let rootfs = a.rootfs;
    if (!kernel || (!rootfs && !a.initrd)) {
      const { buildGuest } = await import("../../guest/build.ts");
      const guest = await buildGuest({ log: (line) => consola.info(line) });
      kernel ??= guest.vmlinux;
      if (!a.initrd) rootfs ??= guest.rootfs;
    }
    const drives = rootfs ? [{ path: rootfs, readOnly: !a["read-write"], root: true, id: "rootfs" }] : [];
    const watcher = new ConsoleWatcher();
    const narrate = explain && explainTo(explain, (text) => process.stdout.write(text));
    let vm: Vm;
    let closeTrace: TraceCloser | undefined;
    try {
      ({ vm } = await bootLinux({
        kernel, initrd: a.initrd, drives, cmdline: a.cmdline, memSize: a.memory * MiB, vcpus: a.vcpus, cpuidProfile: a["cpuid-profile"],
        protocol: a["boot-protocol"],
        consoleOutput: (b) => {
          process.stdout.write(b);
          watcher.push(b);
        },
        log: (line) => consola.info(line),
        explain: narrate || undefined,
        // The trace starts before the first instruction, so it holds every exit.
        beforeStart: (v) => (closeTrace = a.trace ? traceToFile(v, a.trace) : undefined),
        start: !a["explain-only"],
      }));
    } catch (e) {
      throw new CliError((e as Error).message, e instanceof TraceFileError ? EXIT.USAGE : EXIT.VM_ERROR);
    }
    if (a["explain-only"]) {
      await vm.stop("--explain-only: the guest was set up, not started");
      return;
    }
    consola.info(`guest started (${ESCAPE_HELP})`);
    const exit = await runOnTerminal(vm);
    if (closeTrace) consola.info(`exit trace: ${await closeTrace()} exits written to ${a.trace}`);
    const times = [...watcher.seen].map(([m, t]) => `${MILESTONE_TEXT[m] ?? m} ${(t / 1000).toFixed(2)} s`);
    if (times.length) consola.info(`milestones since VM creation: ${times.join(", ")}`);
    const assist = vm.vcpus.map((v) => v.syscallAssist?.counts).filter((c) => c !== undefined);
    if (assist.length) {
      const sum = (k: "syscalls" | "otherFaults" | "debugExits") => assist.reduce((n, c) => n + c[k], 0);
      consola.info(`syscall assist: ${sum("syscalls")} system calls completed, ${sum("otherFaults")} other page faults stepped over, ${sum("debugExits")} debug exits`);
    }
    finish(exit);
  },
});

async function runOnTerminal(vm: Vm): Promise<VmEnd> {
  const console_ = attachConsole((b) => vm.serial.queueInput(b), () => void vm.stop("quit from the console (Ctrl-A x)"));
  // Signals (twice, SIGHUP too) and crashes still restore the terminal (exit-guard.ts).
  const guard = guardExit((why) => void vm.stop(why), [() => console_.detach()]);
  try {
    return await vm.exited;
  } finally {
    guard.dispose();
    console_.detach();
  }
}

async function bootProbeOnTerminal(name: string, trace?: string): Promise<void> {
  consola.info(`booting the ${name} probe guest (${PROBES[name]!.about})`);
  let closeTrace: TraceCloser | undefined;
  const vm = await bootProbe(name, {
    consoleOutput: (bytes) => process.stdout.write(bytes),
    log: (line) => consola.debug(line),
    beforeStart: (v) => (closeTrace = trace ? traceToFile(v, trace) : undefined),
  }).catch((e) => {
    throw e instanceof TraceFileError ? new CliError(e.message, EXIT.USAGE) : e;
  });
  const exit = await runOnTerminal(vm);
  if (closeTrace) consola.info(`exit trace: ${await closeTrace()} exits written to ${trace}`);
  finish(exit);
}

/** Attach the exit trace to a running VM; a file that cannot be written stops it. */
function finish(exit: VmEnd): void {
  const clean = exit.reason === "halt" || exit.reason === "reset" || exit.reason === "poweroff" || exit.reason === "stopped";
  if (!clean) {
    consola.error(`${exit.message}${exit.registers ? `\n${exit.registers}` : ""}`);
    throw new CliError(`the guest ended with ${exit.reason}`, EXIT.VM_ERROR);
  }
  consola.success(`guest ended: ${exit.message}`);
}
