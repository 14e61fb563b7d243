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
import { readFileSync, statSync } from "node:fs";
import { CONFIG_FILE_MAX_SIZE, loadConfigFile } from "../config/file.ts";
import type { LogLevelName, MicroVMConfig } from "../config/schemas.ts";
import { attachConsole, ESCAPE_HELP, type AttachedConsole } from "../console.ts";
import { kvmAvailability, warnIfEmulatingHost } from "../host.ts";
import { prewarmVcpuWorkers } from "../vcpu/thread.ts";
import { CliError, EXIT } from "./main.ts";
import { guardExit } from "./exit-guard.ts";
import { installProgram, loadFilterFile, programFor, type SeccompChoice } from "../seccomp/install.ts";

/** The flags `run` and `api` share: Firecracker's own. */
export const VMM_ARGS = {
  "config-file": { type: "string", description: "A JSON file in Firecracker's FullVmConfiguration shape; boots it at once", valueHint: "file" },
  id: { type: "string", description: "The microVM's id (in GET /, logs and metrics)", default: "anonymous-instance", valueHint: "id" },
  "boot-timer": { type: "boolean", description: "Log the guest's boot time when its init writes to the boot-timer device", default: false },
  "log-path": { type: "string", description: "Write kindling's log to this file or named pipe (at the --level level)", valueHint: "path" },
  "metrics-path": { type: "string", description: "Write metrics (JSON lines, every 60 s) to this file or named pipe", valueHint: "path" },
  metadata: { type: "string", description: "A JSON file to fill the MMDS data store with (as PUT /mmds)", valueHint: "file" },
  "enable-pci": { type: "boolean", description: "Firecracker's virtio-over-PCI transport: refused (kindling's devices are virtio-mmio)", default: false },
  seccomp: { type: "boolean", description: "Install kindling's seccomp filter once set up (docs/security-jail.md)", default: true, negativeDescription: "No seccomp filter" },
  "seccomp-filter": { type: "string", description: "Install this seccomp filter (JSON, docs/security-jail.md) instead of the built-in one", valueHint: "file" },
} as const satisfies ArgsDef;

/** --no-seccomp and --seccomp-filter as a choice; the file is read and checked now (a usage error if bad). */
export function seccompChoice(args: { seccomp: boolean; "seccomp-filter"?: string }): SeccompChoice {
  const path = args["seccomp-filter"];
  if (path !== undefined && !args.seccomp) throw new CliError("--no-seccomp and --seccomp-filter contradict each other", EXIT.USAGE);
  if (path === undefined) return args.seccomp ? { kind: "builtin" } : { kind: "off" };
  return { kind: "file", path, filter: usageErrors(() => loadFilterFile(path)) };
}

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
  /** The seccomp filter to install once set up (default: kindling's). */
  seccomp?: SeccompChoice;
  /** Load this snapshot at once (PUT /snapshot/load's body) instead of booting: `kindling snapshot load`. */
  loadSnapshot?: Record<string, unknown>;
  /** --metadata: a JSON file for the MMDS store. */
  metadata?: string;
}

/** --metadata: the file's JSON, put in the MMDS store as PUT /mmds would (Firecracker's --metadata). */
function loadMetadata(vm: MicroVM, path: string): void {
  let text: string;
  try {
    const size = statSync(path).size;
    if (size > CONFIG_FILE_MAX_SIZE) throw new Error(`${size} bytes is more than a metadata file can be`);
    text = readFileSync(path, "utf8");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new CliError(`--metadata: ${path}: ${code === "ENOENT" ? "no such file" : (e as Error).message}`, EXIT.USAGE);
  }
  try {
    vm.putMmds(JSON.parse(text));
  } catch (e) {
    throw new CliError(`--metadata: ${path}: ${e instanceof SyntaxError ? `not valid JSON: ${e.message}` : (e as Error).message}`, EXIT.USAGE);
  }
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
  if (o.metadata !== undefined) loadMetadata(vm, o.metadata);
  if (o.bootNow && !vm.config["boot-source"]) throw new CliError(`${o.source}: boot-source: required to boot at once`, EXIT.USAGE);
  if (o.bootNow) {
    const kvm = kvmAvailability();
    if (!kvm.ok) throw new CliError(kvm.reason, EXIT.NO_KVM);
  }

  // 2. The API socket. From here on signals (twice, SIGHUP too) and crashes still restore the terminal and
  // remove the socket (exit-guard.ts): installed before the socket exists, so no signal finds it unguarded.
  let server: ApiServer | undefined;
  let terminal: AttachedConsole | undefined;
  const guard = guardExit((why) => void vm.stop(why), [() => terminal?.detach(), () => server?.close()]);
  if (o.apiSock) {
    try {
      server = await serveApi({ socketPath: o.apiSock, microvm: vm });
    } catch (e) {
      guard.dispose();
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
  terminal = attachConsole((b) => void vm.writeSerial(b), () => void vm.stop("quit from the console (Ctrl-A x)"));

  let exit: VmEnd;
  try {
    // 3b. Set up: from here on every thread runs under the seccomp filter (src/seccomp/).
    const program = programFor(o.seccomp ?? { kind: "builtin" });
    if (program) {
      installProgram(program);
      const from = o.seccomp?.kind === "file" ? o.seccomp.path : "the built-in filter";
      consola.debug(`seccomp: ${program.length} BPF instructions from ${from} installed on every thread`);
    }

    // 4. Boot now, or when the API says so; then wait for the end.
    if (o.loadSnapshot) {
      const kvm = kvmAvailability();
      if (!kvm.ok) throw new CliError(kvm.reason, EXIT.NO_KVM);
      await vm.loadSnapshot(o.loadSnapshot).catch((e: Error) => {
        throw new CliError(e.message, e instanceof MicroVMError ? EXIT.USAGE : EXIT.VM_ERROR);
      });
      consola.info(`snapshot loaded, ${vm.state} (${ESCAPE_HELP})`);
    } else if (o.bootNow) {
      warnIfEmulatingHost();
      await vm.start().catch((e: Error) => {
        throw new CliError(e.message, EXIT.VM_ERROR);
      });
      consola.info(`guest started (${ESCAPE_HELP})`);
    } else {
      // While it waits for the API, load a vCPU worker, so that InstanceStart or a snapshot load need not
      // wait the ~5 ms a Worker takes to load (src/vcpu/thread.ts).
      void prewarmVcpuWorkers(1).catch(() => {});
      consola.info(`waiting for PUT /actions InstanceStart on ${o.apiSock} (${ESCAPE_HELP})`);
    }
    exit = await vm.exited;
  } finally {
    guard.dispose();
    server?.close();
    terminal?.detach();
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
      metadata: args.metadata,
      seccomp: seccompChoice(args),
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
