// Run one command in a fresh microVM and return its output and exit status: `kindling exec` and the
// library's exec(). The microVM is configured as Firecracker's API would (MicroVM), booted from an ext4
// root filesystem, and the command travels on the kernel command line.
//
// How the command gets there and back (the guest side is guest/init.sh):
//   1. argv is quoted for the shell (quoteArgs) so spaces and quotes arrive intact, base64-encoded (no
//      spaces, so the kernel keeps it one word) and passed as `kindling.exec=<base64>`, with `quiet`.
//   2. The guest's init decodes it, turns the kernel's console messages down to emergencies, and runs it
//      with `sh -c`, stdin /dev/null. Each line of its stdout reaches the serial console as 0x1e "1" line,
//      each line of its stderr as 0x1e "2" line (0x1e is ASCII's record separator, RS).
//   3. ExecFrames splits the console stream back into stdout, stderr and everything else (the kernel's log,
//      init's own lines), and init's last line "kindling: exit status N" carries the status.
//   4. init ends the VM (`reboot -f` through the i8042); exec() resolves when the VM has ended.

import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { DEFAULT_CMDLINE } from "./arch/x86_64/cmdline.ts";
import { MicroVM, MicroVMError, type MicroVMOptions, type VmEnd } from "./microvm.ts";
import type * as S from "./config/schemas.ts";
import { prestartVcpuWorkers } from "./vcpu/worker-pool.ts";

/** ASCII RS, which starts every framed output line (guest/init.sh, run_framed). */
export const EXEC_RS = 0x1e;
/** Exit status for a command that did not finish in time, as coreutils' timeout(1) uses. */
export const EXEC_TIMEOUT_STATUS = 124;
/** The marker init prints after the command: "kindling: exit status N". */
const STATUS_LINE = /^kindling: exit status (\d+)$/;
/** The same at the end of a line, after output of the command's that had no newline of its own. */
const STATUS_AT_END = /^(.*)kindling: exit status (\d+)$/;
/**
 * Linux keeps 2048 bytes of command line on x86 (COMMAND_LINE_SIZE); the base line and the devices' own
 * arguments need some, so a command may take this much after base64.
 */
const MAX_ENCODED_COMMAND = 1400;
/** After the status line, the guest has this long to end the VM before exec() stops it. */
const END_GRACE_MS = 30_000;

/** Quote each argument for a POSIX shell: 'it'\''s' style, so the shell sees exactly these words. */
export function quoteArgs(argv: string[]): string {
  return argv.map((a) => (/^[A-Za-z0-9_@%+=:,./-]+$/.test(a) ? a : `'${a.replaceAll("'", `'\\''`)}'`)).join(" ");
}

/** The kernel command-line word that carries argv to the guest's init. */
export function execCmdlineArg(argv: string[]): string {
  if (argv.length === 0) throw new MicroVMError("exec: no command given");
  const encoded = Buffer.from(quoteArgs(argv), "utf8").toString("base64");
  if (encoded.length > MAX_ENCODED_COMMAND) {
    throw new MicroVMError(`exec: the command is too long for the kernel command line (${encoded.length} bytes of base64, at most ${MAX_ENCODED_COMMAND}); put it in a script on a drive instead`);
  }
  return `kindling.exec=${encoded}`;
}

export interface ExecSink {
  stdout(bytes: Uint8Array): void;
  stderr(bytes: Uint8Array): void;
  /** A console line that is not the command's: the kernel's log, init's messages. Without its newline. */
  console(line: string): void;
}

/**
 * Splits the console byte stream into the command's stdout and stderr and the other lines (step 3 above).
 * Bytes are passed on as they arrive, so output streams; a `\r` the tty added before each `\n` is removed.
 */
export class ExecFrames {
  private state: "lineStart" | "fd" | "record" | "other" = "lineStart";
  private fd: 1 | 2 = 1;
  private heldCR = false;
  private other: number[] = [];
  private out: { fd: 1 | 2; bytes: number[] }[] = [];

  constructor(private readonly sink: ExecSink) {}

  push(chunk: Uint8Array): void {
    for (const b of chunk) this.byte(b);
    for (const o of this.out) if (o.bytes.length) (o.fd === 1 ? this.sink.stdout : this.sink.stderr)(Uint8Array.from(o.bytes));
    this.out = [];
  }

  private emit(b: number): void {
    const last = this.out[this.out.length - 1];
    if (last && last.fd === this.fd) last.bytes.push(b);
    else this.out.push({ fd: this.fd, bytes: [b] });
  }

  private byte(b: number): void {
    if (b === EXEC_RS) {
      if (this.state === "record" && this.heldCR) this.emit(0x0d);
      if (this.state === "other") this.endOther();
      this.heldCR = false;
      this.state = "fd";
      return;
    }
    switch (this.state) {
      case "fd":
        if (b === 0x31 || b === 0x32) {
          this.fd = b === 0x31 ? 1 : 2;
          this.state = "record";
        } else {
          this.state = "other";
          this.other.push(b);
        }
        return;
      case "record":
        if (b === 0x0a) {
          this.heldCR = false; // the tty's \r\n (ONLCR) becomes the program's \n again
          this.emit(b);
          this.state = "lineStart";
        } else if (b === 0x0d) {
          if (this.heldCR) this.emit(0x0d);
          this.heldCR = true;
        } else {
          if (this.heldCR) this.emit(0x0d);
          this.heldCR = false;
          this.emit(b);
        }
        return;
      default:
        if (b === 0x0a) {
          this.endOther();
          this.state = "lineStart";
        } else if (this.other.length < 4096) {
          this.other.push(b);
          this.state = "other";
        }
    }
  }

  private endOther(): void {
    const line = new TextDecoder().decode(Uint8Array.from(this.other)).replace(/\r$/, "");
    this.other = [];
    this.sink.console(line);
  }
}

export interface ExecOptions {
  /** The kernel (ELF vmlinux or bzImage). */
  kernel: string;
  /** The root filesystem image (ext4), attached read-only as /dev/vda unless `rootfsReadWrite`. */
  rootfs?: string;
  /** Boot from this initramfs instead (its /init must be guest/init.sh's); give it or `rootfs`. */
  initrd?: string;
  rootfsReadWrite?: boolean;
  memoryMib?: number;
  vcpus?: number;
  /** More of the microVM's configuration, in Firecracker's shape: drives after the root, network interfaces, vsock, entropy. */
  config?: Partial<Pick<S.MicroVMConfig, "drives" | "network-interfaces" | "vsock" | "entropy">>;
  /** Kernel command-line words added to the default line (e.g. `ip=dhcp`). */
  bootArgs?: string;
  /** Stop the microVM after this long; the result is then EXEC_TIMEOUT_STATUS with timedOut set. */
  timeoutMs?: number;
  onStdout?: (bytes: Uint8Array) => void;
  onStderr?: (bytes: Uint8Array) => void;
  /** The kernel's log and other console lines. */
  onConsole?: (line: string) => void;
  /** The VMM's own log lines. */
  log?: (line: string) => void;
  /** The microVM, once it exists (tests use it to look inside). */
  onVm?: (vm: MicroVM) => void;
  /** Passed to MicroVM: the instance id, device models (tests wrap the net device to set up its TAP). */
  microvm?: MicroVMOptions;
}

export interface ExecResult {
  /** The command's exit status; EXEC_TIMEOUT_STATUS when it timed out. */
  exitCode: number;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  /** How the microVM ended. */
  end: VmEnd;
  /** Milliseconds from the call: the guest's boot-timer write, the command's first output, the end. */
  timings: { bootCompleteMs?: number; firstOutputMs?: number; totalMs: number };
}

/** An exec whose microVM failed, or ended without reporting the command's exit status. */
export class ExecError extends Error {
  constructor(message: string, readonly end?: VmEnd) {
    super(message);
    this.name = "ExecError";
  }
}

/** Boot a fresh microVM, run argv in it, and return what it printed and its exit status. */
export async function exec(argv: string[], opts: ExecOptions): Promise<ExecResult> {
  const t0 = performance.now();
  const since = () => Math.round(performance.now() - t0);
  const cmdArg = execCmdlineArg(argv);
  const extra = opts.config ?? {};
  if (!opts.rootfs && !opts.initrd) throw new MicroVMError("exec: give a root filesystem (rootfs) or an initramfs (initrd) to boot from");
  const root = opts.rootfs ? [{ drive_id: "rootfs", path_on_host: opts.rootfs, is_root_device: true, is_read_only: !opts.rootfsReadWrite }] : [];
  const vm = new MicroVM({
    "boot-source": { kernel_image_path: opts.kernel, ...(opts.initrd ? { initrd_path: opts.initrd } : {}), boot_args: [DEFAULT_CMDLINE, opts.bootArgs, "quiet", cmdArg].filter(Boolean).join(" ") },
    "machine-config": { vcpu_count: opts.vcpus ?? 1, mem_size_mib: opts.memoryMib ?? 128 },
    drives: [...root, ...(extra.drives ?? [])],
    ...(extra["network-interfaces"] ? { "network-interfaces": extra["network-interfaces"] } : {}),
    ...(extra.vsock ? { vsock: extra.vsock } : {}),
    ...(extra.entropy ? { entropy: extra.entropy } : {}),
  }, opts.microvm);
  vm.logger.sink = (line) => opts.log?.(line);
  opts.onVm?.(vm);

  const decoder = { out: new TextDecoder(), err: new TextDecoder() };
  let stdout = "";
  let stderr = "";
  let status: number | undefined;
  let firstOutputMs: number | undefined;
  let bootCompleteMs: number | undefined;
  const consoleTail: string[] = [];
  const first = () => (firstOutputMs ??= since());
  const frames = new ExecFrames({
    stdout: (b) => {
      first();
      stdout += decoder.out.decode(b, { stream: true });
      opts.onStdout?.(b);
    },
    stderr: (b) => {
      first();
      stderr += decoder.err.decode(b, { stream: true });
      opts.onStderr?.(b);
    },
    console: (line) => {
      const m = STATUS_LINE.exec(line);
      if (m) {
        status = Number(m[1]);
        // The guest ends the VM itself; if it does not, stop it.
        setTimeout(() => void vm.stop("the command finished but the guest did not end the VM"), END_GRACE_MS).unref();
      }
      consoleTail.push(line);
      if (consoleTail.length > 20) consoleTail.shift();
      opts.onConsole?.(line);
    },
  });
  vm.on("serial", (b) => frames.push(b));
  vm.on("boot-complete", () => (bootCompleteMs = since()));

  let timedOut = false;
  const timer = opts.timeoutMs === undefined ? undefined : setTimeout(() => {
    timedOut = true;
    void vm.stop(`exec: the command did not finish within ${opts.timeoutMs} ms`);
  }, opts.timeoutMs);
  try {
    await vm.start();
  } catch (e) {
    clearTimeout(timer);
    throw new ExecError((e as Error).message);
  }
  const end = await vm.exited;
  clearTimeout(timer);
  const timings = { bootCompleteMs, firstOutputMs, totalMs: since() };
  if (timedOut && status === undefined) return { exitCode: EXEC_TIMEOUT_STATUS, stdout, stderr, timedOut, end, timings };
  if (status === undefined) {
    throw new ExecError(`the microVM ended (${end.reason}: ${end.message}) before the command reported its exit status; last console lines:\n${consoleTail.join("\n")}`, end);
  }
  return { exitCode: status, stdout, stderr, timedOut: false, end, timings };
}

// ---- `kindling exec --snapshot DIR -- CMD` ----
// run a command in a microVM restored from a snapshot taken at the
// guest's shell prompt, instead of booting one. The kernel does not boot again: the load maps guest RAM
// from DIR/vm.mem and the command is typed into the restored shell on the serial console.
//
//   saveExecSnapshot(DIR):  boot the guest with no command (guest/init.sh then runs an interactive shell on
//                           the console), wait until the shell answers, make it quick to type into (QUICK_SHELL
//                           below), pause, snapshot into DIR/vm.state and DIR/vm.mem, and write DIR/exec.json
//                           saying so (`kindling exec --save-snapshot DIR`).
//   execFromSnapshot(argv): a fresh microVM loads DIR paused, one line is typed into its shell, and it is
//                           resumed. The line runs argv (stdin /dev/null, stderr into stdout) and prints its
//                           exit status as "kindling: exit status N"; what the console shows before that is
//                           the command's output. Then the VM is stopped.
//
// Why the quick shell: on a host that emulates the guest kernel, busybox's interactive shell with its line
// editing costs about 12 ms per typed character (it reads one byte per system call and echoes it, each a
// trip through the tty layer and the 8250 driver) and tens of ms per line (it switches the terminal's
// mode and waits for the output to drain, in 10 ms jiffies). A non-interactive shell reading the console
// with the terminal's echo off gets the whole line with one read(2) and writes nothing but the output.
// `echo hi`'s first output came 924 ms after the call before, 37.5-39 ms after (restore included; see
// bench/README.md).
// A snapshot of any other shell (one made through the API, say) still works: it gets the long line,
// typedExecLine, which brackets the output with a marker of its own.

export const EXEC_SNAPSHOT_STATE = "vm.state";
export const EXEC_SNAPSHOT_MEM = "vm.mem";
/** What the shell answers once it runs: the arithmetic shows the shell evaluated the line, not the tty echo. */
const READY_LINE = "echo kindling-shell-$((6*7))\n";
const READY_ANSWER = "kindling-shell-42";

export interface SaveExecSnapshotOptions {
  kernel: string;
  rootfs: string;
  memoryMib?: number;
  vcpus?: number;
  /** Give up after this long (a boot of an emulated guest kernel takes minutes). */
  timeoutMs?: number;
  log?: (line: string) => void;
  onConsole?: (text: string) => void;
  microvm?: MicroVMOptions;
}

/** Boot to the shell prompt and snapshot it into `dir`; resolves with the milliseconds it took. */
export async function saveExecSnapshot(dir: string, o: SaveExecSnapshotOptions): Promise<number> {
  const t0 = performance.now();
  mkdirSync(dir, { recursive: true });
  rmSync(join(dir, EXEC_SNAPSHOT_INFO), { force: true });
  const vm = new MicroVM({
    "boot-source": { kernel_image_path: o.kernel, boot_args: `${DEFAULT_CMDLINE} quiet` },
    "machine-config": { vcpu_count: o.vcpus ?? 1, mem_size_mib: o.memoryMib ?? 128 },
    drives: [{ drive_id: "rootfs", path_on_host: o.rootfs, is_root_device: true, is_read_only: true }],
  }, o.microvm);
  vm.logger.sink = (line) => o.log?.(line);
  let text = "";
  vm.on("serial", (b) => {
    const s = new TextDecoder().decode(b);
    text += s;
    if (text.length > 65536) text = text.slice(-32768);
    o.onConsole?.(s);
  });
  const deadline = performance.now() + (o.timeoutMs ?? 15 * 60_000);
  try {
    await vm.start();
    // Ask until the shell answers: before it runs, the line waits in the UART's input.
    let asked = -Infinity;
    while (!text.includes(READY_ANSWER)) {
      if (vm.state === "Stopped") throw new ExecError(`the guest ended before its shell answered:\n${text.slice(-2000)}`);
      if (performance.now() > deadline) throw new ExecError(`the guest's shell did not answer within ${o.timeoutMs} ms:\n${text.slice(-2000)}`);
      if (text.includes("kindling: init ready") && performance.now() - asked > 10_000) {
        vm.writeSerial(new TextEncoder().encode(READY_LINE));
        asked = performance.now();
      }
      await Bun.sleep(100);
    }
    // The quick shell (see the header), until it answers: its setup line is typed again until one is
    // answered, as the first may arrive before the new shell reads the console.
    vm.writeSerial(new TextEncoder().encode(QUICK_SHELL));
    let nextSetup = performance.now() + 3_000;
    while (!QUICK_SHELL_ANSWER.test(text)) {
      if (vm.state === "Stopped") throw new ExecError(`the guest ended before its quick shell answered:\n${text.slice(-2000)}`);
      if (performance.now() > deadline) throw new ExecError(`the guest's quick shell did not answer within ${o.timeoutMs} ms:\n${text.slice(-2000)}`);
      if (performance.now() > nextSetup) {
        vm.writeSerial(new TextEncoder().encode(QUICK_SHELL_SETUP));
        nextSetup = performance.now() + 10_000;
      }
      await Bun.sleep(100);
    }
    await Bun.sleep(500); // let the shell go back to reading its terminal
    vm.pause();
    await vm.createSnapshot({ snapshot_path: join(dir, EXEC_SNAPSHOT_STATE), mem_file_path: join(dir, EXEC_SNAPSHOT_MEM) });
    const info: QuickShellInfo = { shell: QUICK_SHELL_VERSION, state_sha256: sha256Of(join(dir, EXEC_SNAPSHOT_STATE)) };
    writeFileSync(join(dir, EXEC_SNAPSHOT_INFO), `${JSON.stringify(info)}\n`);
  } finally {
    await vm.stop("the snapshot is taken");
  }
  return performance.now() - t0;
}

/** The line the restored shell prints before the command's output: RS "S". */
const BEGIN_MARKER = "S";
/**
 * Written beside the snapshot when its shell is the quick one, with the state file's SHA-256: a snapshot
 * made over it later (through the API, say) is not taken for one.
 */
export const EXEC_SNAPSHOT_INFO = "exec.json";
const QUICK_SHELL_VERSION = 2;
interface QuickShellInfo {
  shell: number;
  state_sha256: string;
}

const sha256Of = (path: string) => new Bun.CryptoHasher("sha256").update(readFileSync(path)).digest("hex");
/**
 * Typed into the interactive shell before the snapshot: echo off, then in its place a non-interactive shell
 * that reads its commands from the console (one read(2) per line: the terminal is in canonical mode) while
 * the commands it runs get /dev/null as stdin and the console as stdout and stderr, without a redirection
 * (each one costs the shell a handful of system calls per command).
 */
const QUICK_SHELL = "stty -echo; exec sh /dev/console < /dev/null 2>&1\n";
/** The function every command line calls (quickExecLine): the command, then its status. */
export const QUICK_SHELL_FUNCTION = `k() { "$@"; echo "kindling: exit status $?"; }`;
/** Typed into the quick shell: that function, and a first call. */
const QUICK_SHELL_SETUP = `${QUICK_SHELL_FUNCTION}; k echo kindling-quick-$((6*7))\n`;
const QUICK_SHELL_ANSWER = /kindling-quick-42\r?\nkindling: exit status 0\r?\n/;

/**
 * The line typed into the restored shell. Every process costs seconds where the host emulates the guest
 * kernel (a fork, an exec and their page faults), so the line starts none of its own: a begin marker
 * (RS "S", by the shell's printf builtin), argv (one process if it is not a builtin), its status. The
 * command's stderr goes to its stdout: keeping them apart, as kindling.exec does, takes two `awk`s.
 */
export function typedExecLine(argv: string[]): string {
  return `printf '\\036${BEGIN_MARKER}\\n'; ${quoteArgs(argv)} < /dev/null 2>&1; echo "kindling: exit status $?"\n`;
}

/** The line for the quick shell saveExecSnapshot leaves (QUICK_SHELL_SETUP defined `k`). */
export function quickExecLine(argv: string[]): string {
  return `k ${quoteArgs(argv)}\n`;
}

/** Whether `dir`'s snapshot was left at the quick shell (its exec.json says so, for this state file). */
export function hasQuickShell(dir: string): boolean {
  try {
    const info = JSON.parse(readFileSync(join(dir, EXEC_SNAPSHOT_INFO), "utf8")) as Partial<QuickShellInfo>;
    return info.shell === QUICK_SHELL_VERSION && info.state_sha256 === sha256Of(join(dir, EXEC_SNAPSHOT_STATE));
  } catch {
    return false;
  }
}

export interface ExecFromSnapshotOptions {
  timeoutMs?: number;
  onStdout?: (bytes: Uint8Array) => void;
  onStderr?: (bytes: Uint8Array) => void;
  onConsole?: (line: string) => void;
  log?: (line: string) => void;
  microvm?: MicroVMOptions;
}

/** Restore `dir`'s snapshot, run argv in its shell, and return what it printed and its exit status. */
export async function execFromSnapshot(argv: string[], dir: string, o: ExecFromSnapshotOptions = {}): Promise<ExecResult & { timings: ExecResult["timings"] & { loadMs: number } }> {
  if (argv.length === 0) throw new MicroVMError("exec: no command given");
  const state = join(dir, EXEC_SNAPSHOT_STATE);
  const mem = join(dir, EXEC_SNAPSHOT_MEM);
  if (!existsSync(state) || !existsSync(mem)) {
    throw new MicroVMError(`exec --snapshot ${dir}: no ${EXEC_SNAPSHOT_STATE} and ${EXEC_SNAPSHOT_MEM} there; make them with kindling exec --save-snapshot ${dir}`);
  }
  const t0 = performance.now();
  const since = () => Math.round(performance.now() - t0);
  const quick = hasQuickShell(dir);
  // The vCPU's worker thread loads its script while the snapshot is read and the VM rebuilt.
  prestartVcpuWorkers(1);
  const vm = new MicroVM({}, o.microvm);
  vm.logger.sink = (line) => o.log?.(line);
  const decoder = { out: new TextDecoder(), err: new TextDecoder() };
  let stdout = "";
  let stderr = "";
  let firstOutputMs: number | undefined;
  const done = Promise.withResolvers<number>();
  const frames = new ExecFrames({
    stdout: (b) => {
      firstOutputMs ??= since();
      stdout += decoder.out.decode(b, { stream: true });
      o.onStdout?.(b);
    },
    stderr: (b) => {
      firstOutputMs ??= since();
      stderr += decoder.err.decode(b, { stream: true });
      o.onStderr?.(b);
    },
    console: (line) => {
      const output = (text: string) => {
        firstOutputMs ??= since();
        stdout += text;
        o.onStdout?.(new TextEncoder().encode(text));
      };
      // Output that did not end with a newline shares its last line with the status.
      const m = inCommand ? STATUS_AT_END.exec(line) : null;
      if (m) {
        if (m[1]) output(m[1]);
        inCommand = false;
        done.resolve(Number(m[2]));
      } else if (line === BEGIN_MARKER && !quick) {
        inCommand = true;
      } else if (inCommand) {
        // Before the status line (after the marker, for the long line): the command's output.
        output(`${line}\n`);
      } else {
        o.onConsole?.(line);
      }
    },
  });
  // The quick shell prints nothing before the command's output; any other shell prints a marker first.
  let inCommand = quick;
  vm.on("serial", (b) => frames.push(b));
  let timedOut = false;
  const timer = o.timeoutMs === undefined ? undefined : setTimeout(() => {
    timedOut = true;
    done.resolve(-1);
  }, o.timeoutMs);
  try {
    // Loaded paused, the line typed, then resumed: the guest finds the line in the UART the moment it runs.
    await vm.loadSnapshot({ snapshot_path: state, mem_backend: { backend_type: "File", backend_path: mem }, resume_vm: false });
    vm.writeSerial(new TextEncoder().encode(quick ? quickExecLine(argv) : typedExecLine(argv)));
    vm.resume();
    const loadMs = since();
    void vm.exited.then((end) => done.reject(new ExecError(`the microVM ended (${end.reason}: ${end.message}) before the command reported its exit status`, end)));
    const status = await done.promise;
    clearTimeout(timer);
    const end = await vm.stop("the command finished");
    const timings = { firstOutputMs, totalMs: since(), loadMs };
    if (timedOut) return { exitCode: 124, stdout, stderr, timedOut, end, timings };
    return { exitCode: status, stdout, stderr, timedOut: false, end, timings };
  } catch (e) {
    clearTimeout(timer);
    await vm.stop("exec from a snapshot failed");
    throw e;
  }
}
