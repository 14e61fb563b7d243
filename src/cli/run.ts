// `kindling run`: boot a microVM at once, from a --config-file (Firecracker's FullVmConfiguration JSON) or
// from flags, with its serial console on this terminal. `--api-sock PATH` also serves the API, for
// PATCH /vm and the like while it runs.
//
// runVmm() is the part `kindling api` shares: check the whole configuration before anything starts,
// serve the API if asked, boot if asked, wait for the VM to end, clean up (socket, terminal, metrics).

import { defineCommand, type ArgsDef } from "citty";
import { consola } from "consola";
import { checkInstanceId, MicroVM, MicroVMError, type VmEnd } from "../microvm.ts";
import { defaultApiSocket, serveApi, type ApiServer } from "../api/server.ts";
import { loadConfigFile } from "../config/file.ts";
import type { LogLevelName, MicroVMConfig } from "../config/schemas.ts";
import { attachConsole, ESCAPE_HELP } from "../console.ts";
import { kvmAvailability, warnIfEmulatingHost } from "../host.ts";
import { CliError, EXIT } from "./main.ts";

/** The flags `run` and `api` share: Firecracker's own. */
export const VMM_ARGS = {
  "config-file": { type: "string", description: "A JSON file in Firecracker's FullVmConfiguration shape; boots it at once", valueHint: "file" },
  id: { type: "string", description: "The microVM's id (in GET /, logs and metrics)", default: "anonymous-instance", valueHint: "id" },
  "boot-timer": { type: "boolean", description: "Log the guest's boot time when its init writes to the boot-timer device", default: false },
  "log-path": { type: "string", description: "Write kindling's log to this file or named pipe (at the --level level)", valueHint: "path" },
  "metrics-path": { type: "string", description: "Write metrics (JSON lines, every 60 s) to this file or named pipe", valueHint: "path" },
  "enable-pci": { type: "boolean", description: "Firecracker's virtio-over-PCI transport: refused (kindling's devices are virtio-mmio)", default: false },
} as const satisfies ArgsDef;

export interface VmmOptions {
  config: MicroVMConfig;
  /** Where the config came from, to name it in errors: the file, or "flags". */
  source: string;
  id: string;
  /** Serve the API on this socket; no API when absent. */
  apiSock?: string;
  /** Boot at once (else wait for PUT /actions InstanceStart). */
  bootNow: boolean;
  bootTimer: boolean;
  /** Firecracker's --enable-pci: refused. */
  enablePci?: boolean;
  logPath?: string;
  metricsPath?: string;
}

/** consola's level as a Firecracker logger level (--level sets consola's; main.ts). */
function loggerLevel(): LogLevelName {
  const l = consola.level;
  return l < 0 ? "Off" : l === 0 ? "Error" : l <= 2 ? "Warning" : l === 3 ? "Info" : l === 4 ? "Debug" : "Trace";
}

/** The configuration with --log-path and --metrics-path applied (they win over the file's). */
function withFlags(o: VmmOptions): MicroVMConfig {
  const c = { ...o.config };
  if (o.logPath) c.logger = { ...c.logger, log_path: o.logPath, level: c.logger?.level ?? loggerLevel() };
  if (o.metricsPath) c.metrics = { ...c.metrics, metrics_path: o.metricsPath };
  return c;
}

const CLEAN_EXITS: VmEnd["reason"][] = ["halt", "reset", "poweroff", "stopped"];

export async function runVmm(o: VmmOptions): Promise<void> {
  // 1. Everything checked before anything starts: shapes, files, features.
  if (o.enablePci) throw new CliError("--enable-pci: virtio over PCI is not supported by kindling: its devices are virtio-mmio, described on the kernel command line", EXIT.USAGE);
  let vm: MicroVM;
  try {
    checkInstanceId(o.id);
  } catch (e) {
    throw new CliError(`--${(e as Error).message}`, EXIT.USAGE);
  }
  try {
    vm = new MicroVM(withFlags(o), { id: o.id });
  } catch (e) {
    if (e instanceof MicroVMError) throw new CliError(`${o.source}: ${e.message}`, EXIT.USAGE);
    throw e;
  }
  if (o.bootNow && !vm.config["boot-source"]) throw new CliError(`${o.source}: boot-source: required to boot at once`, EXIT.USAGE);
  if (o.bootNow) {
    const kvm = kvmAvailability();
    if (!kvm.ok) throw new CliError(kvm.reason, EXIT.NO_KVM);
  }

  // 2. The API socket.
  let server: ApiServer | undefined;
  if (o.apiSock) {
    try {
      server = await serveApi({ socketPath: o.apiSock, microvm: vm });
    } catch (e) {
      throw new CliError((e as Error).message, EXIT.USAGE);
    }
  }

  // 3. The console: output to stdout unless PUT /serial chose a file; this terminal's keys to the guest.
  vm.on("serial", (bytes) => {
    if (!vm.serialConfig?.serial_out_path) process.stdout.write(bytes);
  });
  vm.on("boot-complete", (info) => {
    const text = `Guest-boot-time = ${Math.round(info.wallMs * 1000)} us ${Math.round(info.wallMs)} ms, ${info.cpuUserUs + info.cpuSystemUs} CPU us`;
    if (o.bootTimer) vm.logger.info(text);
    else vm.logger.debug(text);
  });
  const terminal = attachConsole((b) => void vm.writeSerial(b), () => void vm.stop("quit from the console (Ctrl-A x)"));
  const onSignal = () => void vm.stop("interrupted by a signal");
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);

  let exit: VmEnd;
  try {
    // 4. Boot now, or when the API says so; then wait for the end.
    if (o.bootNow) {
      warnIfEmulatingHost();
      await vm.start().catch((e: Error) => {
        throw new CliError(e.message, EXIT.VM_ERROR);
      });
      consola.info(`guest started (${ESCAPE_HELP})`);
    } else {
      consola.info(`waiting for PUT /actions InstanceStart on ${o.apiSock} (${ESCAPE_HELP})`);
    }
    exit = await vm.exited;
  } finally {
    server?.close();
    terminal.detach();
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    if (vm.state !== "Stopped") await vm.stop("kindling is exiting");
  }
  if (!CLEAN_EXITS.includes(exit.reason)) {
    consola.error(`${exit.message}${exit.registers ? `\n${exit.registers}` : ""}`);
    throw new CliError(`the guest ended with ${exit.reason}`, EXIT.VM_ERROR);
  }
  consola.success(`guest ended: ${exit.message}`);
}

/** A configuration from `run`'s VM flags. Numbers stay as typed so the schema's errors name them. */
function configFromFlags(a: Record<string, unknown>): MicroVMConfig {
  const num = (v: unknown) => (typeof v === "string" && v.trim() !== "" ? Number(v) : v);
  const c: Record<string, unknown> = {
    "boot-source": { kernel_image_path: a.kernel, initrd_path: a.initrd, boot_args: a["boot-args"] },
    "machine-config": { vcpu_count: num(a.vcpus), mem_size_mib: num(a.memory) },
  };
  if (a.rootfs) c.drives = [{ drive_id: "rootfs", is_root_device: true, path_on_host: a.rootfs, is_read_only: a["read-only"] === true }];
  if (a.entropy) c.entropy = {};
  return c as MicroVMConfig;
}

export default defineCommand({
  meta: { name: "run", description: `Boot a microVM from a --config-file or from flags, on this terminal. ${ESCAPE_HELP}.` },
  args: {
    ...VMM_ARGS,
    kernel: { type: "string", description: "Kernel image, ELF vmlinux or bzImage (instead of --config-file)", valueHint: "path" },
    initrd: { type: "string", description: "Initramfs", valueHint: "path" },
    "boot-args": { type: "string", description: 'Kernel command line (default "console=ttyS0 reboot=k panic=1 pci=off")', valueHint: "text" },
    rootfs: { type: "string", description: "A disk image as the root device (/dev/vda)", valueHint: "path" },
    "read-only": { type: "boolean", description: "Attach --rootfs read-only", default: false },
    vcpus: { type: "string", description: "Number of vCPUs", default: "1", valueHint: "n" },
    memory: { type: "string", description: "Guest RAM in MiB", default: "128", valueHint: "MiB" },
    entropy: { type: "boolean", description: "Add a virtio-rng entropy device", default: false },
    "api-sock": { type: "string", description: "Also serve the API on this Unix socket", valueHint: "path" },
    api: { type: "boolean", description: "Also serve the API (on --api-sock, or the default socket)", default: false },
  },
  async run({ args, rawArgs }) {
    const file = args["config-file"];
    const vmFlags = ["--kernel", "--initrd", "--boot-args", "--rootfs", "--vcpus", "--memory", "--entropy", "--read-only"];
    const given = vmFlags.filter((f) => rawArgs.some((r) => r === f || r.startsWith(`${f}=`)));
    if (file && given.length) throw new CliError(`give --config-file or the VM flags (${given.join(", ")}), not both`, EXIT.USAGE);
    if (!file && !args.kernel) throw new CliError("kindling run: give --config-file FILE, or --kernel PATH (see --help)", EXIT.USAGE);
    const config = usageErrors(() => (file ? loadConfigFile(file) : configFromFlags(args)));
    await runVmm({
      config,
      source: file ?? "flags",
      id: args.id,
      apiSock: args["api-sock"] ?? (args.api ? defaultApiSocket() : undefined),
      bootNow: true,
      bootTimer: args["boot-timer"],
      enablePci: args["enable-pci"],
      logPath: args["log-path"],
      metricsPath: args["metrics-path"],
    });
  },
});

/** Run `f`; a MicroVMError it throws (a bad config file or flag) becomes a usage error, exit 2. */
export function usageErrors<T>(f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (e instanceof MicroVMError) throw new CliError(e.message, EXIT.USAGE);
    throw e;
  }
}
