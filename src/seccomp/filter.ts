// kindling's seccomp filter: the rules (which system calls the VMM may make, and with which arguments),
// their JSON form for --seccomp-filter FILE, and the compiler from rules to a classic BPF program (bpf.ts).
//
// The rules follow Firecracker's seccompiler JSON (resources/seccomp/*.json in its tree): a default
// action, an action for matching rules, and a list of rules, each a syscall name with optional argument
// conditions. Several rules for the same syscall are alternatives (any may match); the conditions inside
// one rule must all hold. Firecracker keeps one filter per thread kind (vmm, api, vcpu); kindling installs
// ONE filter with SECCOMP_FILTER_FLAG_TSYNC on every thread of the process (Bun's own threads too: the JIT,
// the GC, the event loop's helpers), so a file holds one filter. A rule may name its own `action` (kindling's
// addition, used to answer clone3 with ENOSYS so glibc falls back to clone, whose flags a filter can read).
//
// How the allowlist below was measured (repeat it after upgrading Bun, see docs/security-jail.md):
//   strace -f -o trace.txt bun src/cli/main.ts api --api-sock s.sock   # and, from another shell, boot a
//   guest through the API with a drive, entropy, logger and metrics; then the probe, virtio-blk/net/vsock
//   tests under `strace -f` (the devices' own calls); then
//   awk '{print $2}' trace.txt | sed -n 's/^\([a-z_0-9]*\)(.*/\1/p' | sort | uniq -c | sort -rn
// and `grep -o 'ioctl([0-9]*, [A-Z_0-9x]*'` for the ioctl requests. Calls only the start-up makes (execve,
// arch_prctl, set_tid_address, the first openat of Bun's own files...) are still allowed when they are
// harmless, because the filter is installed after start-up but Bun may repeat them (a new Worker opens
// nothing, but a thread calls set_robust_list and rseq). Anything that changes who the process is or
// what it can reach is refused: execve, fork, ptrace, mount, namespaces, other socket families, setuid...

import { z } from "../zod.ts";
import { KVM } from "../kvm/ioctl.ts";
import { TUNSETIFF, TUNSETPERSIST, TUNGETFEATURES, TUNSETOFFLOAD, TUNGETIFF, TUNGETVNETHDRSZ, TUNSETVNETHDRSZ } from "../net/uapi.ts";
import { parseWith } from "../config/schemas.ts";
import { MicroVMError } from "../config/errors.ts";
import {
  AUDIT_ARCH_X86_64, BPF_ALU, BPF_AND, BPF_JA, BPF_JEQ, BPF_JGE, BPF_JMP, BPF_K, __X32_SYSCALL_BIT, jump, loadWord, ret, seccomp_data, stmt,
  SECCOMP_RET_ALLOW, SECCOMP_RET_DATA, SECCOMP_RET_ERRNO, SECCOMP_RET_KILL_PROCESS, SECCOMP_RET_KILL_THREAD, SECCOMP_RET_LOG, SECCOMP_RET_TRAP, type Insn,
} from "./bpf.ts";
import { syscallNumber } from "./syscalls.ts";

// ---- the JSON shape (checked with zod; the same shape is used for the built-in filter) ----

const Action = z.union([
  z.enum(["allow", "kill_process", "kill_thread", "trap", "log"]),
  z.strictObject({ errno: z.number().int().min(0).max(SECCOMP_RET_DATA) }),
]);
export type Action = z.infer<typeof Action>;

const ArgCheck = z.strictObject({
  /** Which argument, 0 to 5. */
  index: z.number().int().min(0).max(5),
  /** dword: the low 32 bits only (an `int` or `unsigned int` argument, as the kernel truncates it); qword: all 64. */
  type: z.enum(["dword", "qword"]),
  op: z.union([z.enum(["eq", "ne"]), z.strictObject({ masked_eq: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER) })]),
  val: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
  comment: z.string().optional(),
}).refine((a) => a.type === "qword" || (a.val <= 0xffffffff && (typeof a.op === "string" || a.op.masked_eq <= 0xffffffff)), {
  message: "a dword check's val and mask must fit in 32 bits",
});
export type ArgCheck = z.infer<typeof ArgCheck>;

const Rule = z.strictObject({
  syscall: z.string().refine((s) => syscallNumber(s) !== undefined, { message: "not an x86-64 system call name" }),
  args: z.array(ArgCheck).max(6).optional(),
  /** kindling's addition: this rule's action instead of the filter's filter_action. */
  action: Action.optional(),
  comment: z.string().optional(),
});
export type Rule = z.infer<typeof Rule>;

export const SeccompFilterFile = z.strictObject({
  /** What a system call that no rule allows gets. */
  default_action: Action,
  /** What a system call a rule matches gets (normally "allow"). */
  filter_action: Action,
  filter: z.array(Rule).min(1).max(1000),
  comment: z.string().optional(),
});
export type SeccompFilter = z.infer<typeof SeccompFilterFile>;

/** Check a filter read from a JSON file; errors name the file and field (`f.json: filter[3].syscall: ...`). */
export function parseFilter(json: unknown, source: string): SeccompFilter {
  try {
    return parseWith(SeccompFilterFile, json, "");
  } catch (e) {
    throw new MicroVMError(`${source}: ${(e as Error).message}`);
  }
}

// ---- compiling rules to BPF ----

export function actionValue(a: Action): number {
  if (typeof a === "object") return (SECCOMP_RET_ERRNO | a.errno) >>> 0;
  return { allow: SECCOMP_RET_ALLOW, kill_process: SECCOMP_RET_KILL_PROCESS, kill_thread: SECCOMP_RET_KILL_THREAD, trap: SECCOMP_RET_TRAP, log: SECCOMP_RET_LOG }[a];
}

const argLow = (i: number) => seccomp_data.offsetOf(`args.${i}`);
const argHigh = (i: number) => seccomp_data.offsetOf(`args.${i}`) + 4;
const JEQ = BPF_JMP | BPF_JEQ | BPF_K;
const low32 = (n: number) => Number(BigInt(n) & 0xffffffffn);
const high32 = (n: number) => Number(BigInt(n) >> 32n);

/** One condition as instructions; `fail` is how far the last instruction must jump to leave the rule. */
function condition(c: ArgCheck, fail: number): Insn[] {
  const mask = typeof c.op === "object" ? c.op.masked_eq : undefined;
  const word = (at: number, val: number, m: number | undefined, failHere: number): Insn[] =>
    m === undefined ? [loadWord(at), jump(JEQ, val, 0, failHere)] : [loadWord(at), stmt(BPF_ALU | BPF_AND | BPF_K, m), jump(JEQ, val & m, 0, failHere)];
  if (c.type === "dword") {
    if (c.op === "ne") return [loadWord(argLow(c.index)), jump(JEQ, c.val, fail, 0)];
    return word(argLow(c.index), c.val, mask, fail);
  }
  if (c.op === "ne") {
    // Different if the high words differ (skip the low test: pass), or else if the low words differ.
    return [loadWord(argHigh(c.index)), jump(JEQ, high32(c.val), 0, 2), loadWord(argLow(c.index)), jump(JEQ, low32(c.val), fail, 0)];
  }
  const lo = word(argLow(c.index), low32(c.val), mask === undefined ? undefined : low32(mask), fail);
  const hi = word(argHigh(c.index), high32(c.val), mask === undefined ? undefined : high32(mask), fail + lo.length);
  return [...hi, ...lo];
}

/** One rule's conditions, then its action: falls through to the next instruction when a condition fails. */
function alternative(checks: readonly ArgCheck[], action: number): Insn[] {
  const out: Insn[] = [ret(action)];
  for (const c of [...checks].reverse()) out.unshift(...condition(c, out.length));
  return out;
}

/**
 * The BPF program for a filter:
 *   1. a system call of another architecture (seccomp_data.arch) or an x32 one kills the process;
 *   2. for each syscall named by the rules: if nr matches, try its rules in order (each: its argument
 *      conditions, then return its action); when none matches, return the default action;
 *   3. any other nr: the default action.
 */
export function compileFilter(f: SeccompFilter): Insn[] {
  const deflt = actionValue(f.default_action);
  const program: Insn[] = [
    loadWord(seccomp_data.offsetOf("arch")),
    jump(JEQ, AUDIT_ARCH_X86_64, 1, 0),
    ret(SECCOMP_RET_KILL_PROCESS),
    loadWord(seccomp_data.offsetOf("nr")),
    jump(BPF_JMP | BPF_JGE | BPF_K, __X32_SYSCALL_BIT, 0, 1),
    ret(SECCOMP_RET_KILL_PROCESS),
  ];
  const bySyscall = new Map<number, Rule[]>();
  for (const r of f.filter) {
    const nr = syscallNumber(r.syscall)!;
    bySyscall.set(nr, [...(bySyscall.get(nr) ?? []), r]);
  }
  for (const [nr, rules] of bySyscall) {
    const action = (r: Rule) => actionValue(r.action ?? f.filter_action);
    const unconditional = rules.find((r) => !r.args?.length);
    if (unconditional) {
      // A rule without conditions matches every call of this syscall (rules before it were alternatives).
      program.push(jump(JEQ, nr, 0, 1), ret(action(unconditional)));
      continue;
    }
    const block = [...rules.flatMap((r) => alternative(r.args!, action(r))), ret(deflt)];
    // The nr test skips the block with a 32-bit BPF_JA, since a block can be longer than 255 instructions.
    program.push(jump(JEQ, nr, 1, 0), stmt(BPF_JMP | BPF_JA, block.length), ...block);
  }
  program.push(ret(deflt));
  return program;
}

// ---- kindling's own filter ----

/** <linux/sched.h> */
const CLONE_THREAD = 0x00010000;
/** <linux/socket.h> */
const AF_UNIX = 1;
/** <linux/prctl.h> */
const PR_SET_NAME = 15;
const PR_GET_NAME = 16;
/** glibc names its anonymous mappings with prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, ...) (<linux/prctl.h>). */
const PR_SET_VMA = 0x53564d41;
/** <asm-generic/ioctls.h>: the terminal ioctls Bun and the serial console's raw mode make. */
const TERMINAL_IOCTLS = { TCGETS: 0x5401, TCSETS: 0x5402, TCSETSW: 0x5403, TCSETSF: 0x5404, TIOCGWINSZ: 0x5413, FIONBIO: 0x5421, FIONCLEX: 0x5450, FIOCLEX: 0x5451 };
const TUN_IOCTLS = { TUNSETIFF, TUNSETPERSIST, TUNGETFEATURES, TUNSETOFFLOAD, TUNGETIFF, TUNGETVNETHDRSZ, TUNSETVNETHDRSZ };
/** <asm-generic/errno.h> */
const ENOSYS = 38;

/** The system calls allowed without conditions, by what needs them. */
const ALLOWED: Record<string, string[]> = {
  "memory (Bun's allocator, the JIT, guest RAM)": ["mmap", "munmap", "mprotect", "madvise", "mremap", "brk", "membarrier"],
  "threads and their synchronisation": [
    "futex", "set_robust_list", "rseq", "gettid", "getpid", "sched_yield", "sched_getaffinity", "exit", "exit_group",
    "nanosleep", "clock_nanosleep", "clock_gettime", "gettimeofday", "restart_syscall",
  ],
  "signals (the vCPU kick, SIGINT/SIGTERM handlers, JavaScriptCore stopping threads for its GC)": ["rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait", "sigaltstack"],
  "the event loop": ["epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait", "epoll_pwait2", "eventfd2", "poll", "ppoll", "pipe2"],
  "files (kernel, initrd, drives, logs, metrics, serial output: paths are the jailer's business)": [
    "read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev", "preadv2", "pwritev2", "lseek", "fsync", "fdatasync",
    "ftruncate", "fallocate", "flock", "fadvise64", "fcntl", "dup", "dup2", "dup3", "close", "close_range", "open", "openat",
    "fstat", "newfstatat", "stat", "lstat", "statx", "access", "faccessat", "faccessat2", "readlink", "readlinkat", "getdents64",
    "unlink", "unlinkat", "chmod", "fchmod", "mkdir", "umask", "getcwd",
    // Snapshot and probe-cache files are written atomically: a temporary file, then rename.
    "rename", "renameat", "renameat2", "mkdirat", "fchmodat",
  ],
  "Unix sockets (the API, vsock's host side; socket() itself is limited to AF_UNIX below)": [
    "socketpair", "bind", "listen", "accept", "accept4", "connect", "getsockname", "getpeername", "getsockopt", "setsockopt",
    "sendto", "recvfrom", "sendmsg", "recvmsg", "sendmmsg", "recvmmsg", "shutdown",
  ],
  "what Bun asks of the system": ["getrandom", "getrusage", "sysinfo", "prlimit64", "uname", "getuid", "geteuid", "getgid", "getegid"],
};

const eq = (index: number, val: number, comment?: string): ArgCheck => ({ index, type: "dword", op: "eq", val, comment });

/**
 * The built-in filter. `pid` is this process's id, so that tgkill (pthread_kill: the vCPU kick) and kill
 * can only signal this process and its threads. Default action: kill the process (SIGSYS, core dump), as Firecracker does.
 */
export function kindlingFilter(pid: number): SeccompFilter {
  const filter: Rule[] = Object.entries(ALLOWED).flatMap(([why, calls]) => calls.map((syscall) => ({ syscall, comment: why })));
  const ioctls: Record<string, number> = {
    ...Object.fromEntries(Object.entries(KVM).map(([k, v]) => [`KVM_${k}`, v])),
    ...TUN_IOCTLS,
    ...TERMINAL_IOCTLS,
  };
  for (const [name, request] of Object.entries(ioctls)) filter.push({ syscall: "ioctl", args: [eq(1, request, name)] });
  filter.push(
    { syscall: "socket", args: [eq(0, AF_UNIX, "AF_UNIX")], comment: "the API socket and vsock's Unix sockets; no network" },
    { syscall: "clone", args: [{ index: 0, type: "qword", op: { masked_eq: CLONE_THREAD }, val: CLONE_THREAD, comment: "CLONE_THREAD" }], comment: "new threads (Workers) only, never a new process" },
    { syscall: "clone3", action: { errno: ENOSYS }, comment: "its flags are behind a pointer a filter cannot read: ENOSYS makes glibc use clone" },
    { syscall: "tgkill", args: [eq(0, pid, "this process")], comment: "pthread_kill: the vCPU kick" },
    { syscall: "kill", args: [eq(0, pid, "this process")], comment: "re-raising a signal after cleaning up (process.kill(process.pid))" },
    { syscall: "prctl", args: [eq(0, PR_SET_NAME)], comment: "thread names" },
    { syscall: "prctl", args: [eq(0, PR_GET_NAME)] },
    { syscall: "prctl", args: [eq(0, PR_SET_VMA)], comment: "glibc names anonymous mappings" },
  );
  return { default_action: "kill_process", filter_action: "allow", filter, comment: "kindling's built-in filter (src/seccomp/filter.ts)" };
}
