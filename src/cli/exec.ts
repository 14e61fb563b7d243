// `kindling exec [flags] -- CMD [ARGS...]`: boot a fresh microVM, run CMD in it, stream its stdout and
// stderr here, and exit with its exit status (124 when --timeout passed, 1 when the microVM failed).
// The work is src/exec.ts's exec(); this file turns flags into its options.

import { defineCommand } from "citty";
import { consola } from "consola";
import { z } from "../zod.ts";
import { exec, execFromSnapshot, ExecError, EXEC_TIMEOUT_STATUS, saveExecSnapshot } from "../exec.ts";
import { MicroVMError } from "../microvm.ts";
import { kvmAvailability } from "../host.ts";
import { CliError, EXIT } from "./main.ts";

const ExecArgs = z.object({
  kernel: z.string().min(1, "--kernel: give a path").optional(),
  rootfs: z.string().min(1, "--rootfs: give a path").optional(),
  memory: z.coerce.number({ error: () => "--memory: must be a number of MiB" }).int("--memory: must be a whole number of MiB").min(32, "--memory: at least 32 MiB").max(64 * 1024, "--memory: at most 65536 MiB"),
  vcpus: z.coerce.number({ error: () => "--vcpus: must be a number" }).int("--vcpus: must be a whole number").min(1, "--vcpus: must be 1..32").max(32, "--vcpus: must be 1..32"),
  net: z.string().regex(/^[A-Za-z0-9_.-]{1,15}$/, "--net: a TAP interface name (1 to 15 letters, digits, _ . -)").optional(),
  timeout: z.coerce.number({ error: () => "--timeout: must be a number of seconds" }).positive("--timeout: must be more than 0 seconds").optional(),
  "read-write": z.boolean().optional(),
  snapshot: z.string().min(1, "--snapshot: give a directory").optional(),
  "save-snapshot": z.string().min(1, "--save-snapshot: give a directory").optional(),
});

/** The command after `--` (or the positional arguments when there is no `--`). */
function commandOf(rawArgs: string[], positionals: string[]): string[] {
  const dash = rawArgs.indexOf("--");
  return dash >= 0 ? rawArgs.slice(dash + 1) : positionals;
}

export default defineCommand({
  meta: { name: "exec", description: "Boot a fresh microVM, run a command in it, and exit with its exit status" },
  args: {
    kernel: { type: "string", description: "Kernel image (default: the built guest's vmlinux)", valueHint: "path" },
    rootfs: { type: "string", description: "Root filesystem image, ext4 (default: the built guest's rootfs.ext4), read-only unless --read-write", valueHint: "path" },
    "read-write": { type: "boolean", description: "Attach the root filesystem read-write" },
    memory: { type: "string", description: "Guest RAM in MiB", default: "128", valueHint: "MiB" },
    vcpus: { type: "string", description: "Number of vCPUs", default: "1", valueHint: "n" },
    net: { type: "string", description: "Attach this host TAP device as the guest's eth0 (the command sets up addresses)", valueHint: "tap" },
    timeout: { type: "string", description: "Stop the microVM after this many seconds and exit 124", valueHint: "seconds" },
    snapshot: { type: "string", description: "Restore the guest from this directory's snapshot (taken at its shell by --save-snapshot) instead of booting it", valueHint: "dir" },
    "save-snapshot": { type: "string", description: "Boot the guest to its shell prompt and snapshot it into this directory (no command)", valueHint: "dir" },
  },
  async run({ args, rawArgs }) {
    // stdout is the guest command's alone: kindling's own log goes to stderr.
    consola.options.stdout = process.stderr;
    const parsed = ExecArgs.safeParse(args);
    if (!parsed.success) throw new CliError(parsed.error.issues.map((i) => i.message).join("; "), EXIT.USAGE);
    const a = parsed.data;
    const argv = commandOf(rawArgs, (args._ as string[] | undefined) ?? []);
    if (argv.length === 0 && !a["save-snapshot"]) throw new CliError("no command: kindling exec [flags] -- CMD [ARGS...]", EXIT.USAGE);
    const kvm = kvmAvailability();
    if (!kvm.ok) throw new CliError(kvm.reason, EXIT.NO_KVM);
    if (a.snapshot) return runFromSnapshot(argv, a.snapshot, a.timeout);

    let { kernel, rootfs } = a;
    if (!kernel || !rootfs) {
      const { buildGuest } = await import("../../guest/build.ts");
      const guest = await buildGuest({ log: (line) => consola.info(line) });
      kernel ??= guest.vmlinux;
      rootfs ??= guest.rootfs;
    }
    if (a["save-snapshot"]) {
      const ms = await saveExecSnapshot(a["save-snapshot"], {
        kernel, rootfs, memoryMib: a.memory, vcpus: a.vcpus, log: (line) => consola.debug(line),
        timeoutMs: a.timeout === undefined ? undefined : a.timeout * 1000,
      }).catch((e: Error) => {
        throw new CliError(e.message, e instanceof MicroVMError ? EXIT.USAGE : EXIT.VM_ERROR);
      });
      consola.success(`the guest's shell is snapshotted in ${a["save-snapshot"]} (${(ms / 1000).toFixed(1)} s); run commands with kindling exec --snapshot ${a["save-snapshot"]} -- CMD`);
      return;
    }
    const onSignal = () => void vmRef?.stop("interrupted by a signal");
    let vmRef: { stop(m: string): unknown } | undefined;
    process.once("SIGINT", onSignal);
    process.once("SIGTERM", onSignal);
    try {
      const r = await exec(argv, {
        kernel, rootfs, rootfsReadWrite: a["read-write"], memoryMib: a.memory, vcpus: a.vcpus,
        config: a.net ? { "network-interfaces": [{ iface_id: "eth0", host_dev_name: a.net }] } : undefined,
        timeoutMs: a.timeout === undefined ? undefined : a.timeout * 1000,
        onStdout: (b) => process.stdout.write(b),
        onStderr: (b) => process.stderr.write(b),
        onConsole: (line) => consola.debug(`guest console: ${line}`),
        log: (line) => consola.debug(line),
        onVm: (vm) => (vmRef = vm),
      });
      const t = r.timings;
      consola.info(
        `exec: exit status ${r.exitCode}${r.timedOut ? " (timed out)" : ""}; ` +
          `boot complete ${t.bootCompleteMs ?? "-"} ms, first output ${t.firstOutputMs ?? "-"} ms, total ${t.totalMs} ms after the call`,
      );
      if (r.timedOut) consola.error(`the command did not finish within ${a.timeout} s`);
      process.exitCode = r.timedOut ? EXEC_TIMEOUT_STATUS : r.exitCode;
    } catch (e) {
      if (e instanceof MicroVMError) throw new CliError(e.message, EXIT.USAGE);
      if (e instanceof ExecError) throw new CliError(e.message, EXIT.VM_ERROR);
      throw e;
    } finally {
      process.off("SIGINT", onSignal);
      process.off("SIGTERM", onSignal);
    }
  },
});

/** `--snapshot DIR`: the command in a microVM restored at its shell (src/exec.ts, execFromSnapshot). */
async function runFromSnapshot(argv: string[], dir: string, timeoutS: number | undefined): Promise<void> {
  try {
    const r = await execFromSnapshot(argv, dir, {
      timeoutMs: timeoutS === undefined ? undefined : timeoutS * 1000,
      onStdout: (b) => process.stdout.write(b),
      onStderr: (b) => process.stderr.write(b),
      onConsole: (line) => consola.debug(`guest console: ${line}`),
      log: (line) => consola.debug(line),
    });
    const t = r.timings;
    consola.info(`exec: exit status ${r.exitCode}${r.timedOut ? " (timed out)" : ""}; snapshot loaded ${t.loadMs} ms, first output ${t.firstOutputMs ?? "-"} ms, total ${t.totalMs} ms after the call`);
    process.exitCode = r.timedOut ? EXEC_TIMEOUT_STATUS : r.exitCode;
  } catch (e) {
    if (e instanceof MicroVMError) throw new CliError(e.message, EXIT.USAGE);
    if (e instanceof ExecError) throw new CliError(e.message, EXIT.VM_ERROR);
    throw e;
  }
}
