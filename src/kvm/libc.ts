// The C library calls kindling needs, bound through bun:ffi. This directory (src/kvm/) is the only place
// in kindling that imports bun:ffi: everything else talks to the kernel through the wrappers here.
//
// Every wrapper checks the return value; a failure becomes a SysError that names the call (or the ioctl),
// the errno name and its meaning: `KVM_SET_SREGS failed: EINVAL (Invalid argument)`.

import { dlopen, FFIType, ptr as ptrOf, read, toArrayBuffer, CString, type Pointer } from "bun:ffi";
import { ioctlName } from "./ioctl.ts";
import { struct, array, StructView } from "./struct.ts";

const libc = dlopen("libc.so.6", {
  open: { args: [FFIType.cstring, FFIType.i32, FFIType.u32], returns: FFIType.i32 },
  close: { args: [FFIType.i32], returns: FFIType.i32 },
  ioctl: { args: [FFIType.i32, FFIType.u64, FFIType.ptr], returns: FFIType.i32 },
  mmap: { args: [FFIType.ptr, FFIType.u64, FFIType.i32, FFIType.i32, FFIType.i32, FFIType.i64], returns: FFIType.i64 },
  munmap: { args: [FFIType.ptr, FFIType.u64], returns: FFIType.i32 },
  madvise: { args: [FFIType.ptr, FFIType.u64, FFIType.i32], returns: FFIType.i32 },
  eventfd: { args: [FFIType.u32, FFIType.i32], returns: FFIType.i32 },
  read: { args: [FFIType.i32, FFIType.ptr, FFIType.u64], returns: FFIType.i64 },
  write: { args: [FFIType.i32, FFIType.ptr, FFIType.u64], returns: FFIType.i64 },
  pread: { args: [FFIType.i32, FFIType.ptr, FFIType.u64, FFIType.i64], returns: FFIType.i64 },
  pwrite: { args: [FFIType.i32, FFIType.ptr, FFIType.u64, FFIType.i64], returns: FFIType.i64 },
  fsync: { args: [FFIType.i32], returns: FFIType.i32 },
  __errno_location: { args: [], returns: FFIType.ptr },
  strerror: { args: [FFIType.i32], returns: FFIType.ptr },
  dlsym: { args: [FFIType.ptr, FFIType.cstring], returns: FFIType.ptr },
  sigaction: { args: [FFIType.i32, FFIType.ptr, FFIType.ptr], returns: FFIType.i32 },
  pthread_self: { args: [], returns: FFIType.u64 },
  pthread_kill: { args: [FFIType.u64, FFIType.i32], returns: FFIType.i32 },
  pthread_sigmask: { args: [FFIType.i32, FFIType.ptr, FFIType.ptr], returns: FFIType.i32 },
  __libc_current_sigrtmin: { args: [], returns: FFIType.i32 },
  isatty: { args: [FFIType.i32], returns: FFIType.i32 },
  tcgetattr: { args: [FFIType.i32, FFIType.ptr], returns: FFIType.i32 },
  tcsetattr: { args: [FFIType.i32, FFIType.i32, FFIType.ptr], returns: FFIType.i32 },
  cfmakeraw: { args: [FFIType.ptr], returns: FFIType.void },
  flock: { args: [FFIType.i32, FFIType.i32], returns: FFIType.i32 },
  // The jailer and the seccomp filter (src/cli/jailer.ts, src/seccomp/).
  prctl: { args: [FFIType.i32, FFIType.u64, FFIType.u64, FFIType.u64, FFIType.u64], returns: FFIType.i32 },
  syscall: { args: [FFIType.i64, FFIType.u64, FFIType.u64, FFIType.u64, FFIType.u64, FFIType.u64], returns: FFIType.i64 },
  unshare: { args: [FFIType.i32], returns: FFIType.i32 },
  mount: { args: [FFIType.cstring, FFIType.cstring, FFIType.cstring, FFIType.u64, FFIType.ptr], returns: FFIType.i32 },
  umount2: { args: [FFIType.cstring, FFIType.i32], returns: FFIType.i32 },
  chdir: { args: [FFIType.cstring], returns: FFIType.i32 },
  chroot: { args: [FFIType.cstring], returns: FFIType.i32 },
  mknod: { args: [FFIType.cstring, FFIType.u32, FFIType.u64], returns: FFIType.i32 },
  setgroups: { args: [FFIType.u64, FFIType.ptr], returns: FFIType.i32 },
  setresgid: { args: [FFIType.u32, FFIType.u32, FFIType.u32], returns: FFIType.i32 },
  setresuid: { args: [FFIType.u32, FFIType.u32, FFIType.u32], returns: FFIType.i32 },
  setsid: { args: [], returns: FFIType.i32 },
  execve: { args: [FFIType.cstring, FFIType.ptr, FFIType.ptr], returns: FFIType.i32 },
  setns: { args: [FFIType.i32, FFIType.i32], returns: FFIType.i32 },
  prlimit: { args: [FFIType.i32, FFIType.i32, FFIType.ptr, FFIType.ptr], returns: FFIType.i32 },
  dup2: { args: [FFIType.i32, FFIType.i32], returns: FFIType.i32 },
}).symbols;

// ---- errno ----

/** The errno values kindling names in its errors (<asm-generic/errno-base.h>, <asm-generic/errno.h>). */
export const ERRNO: Record<string, number> = {
  EPERM: 1, ENOENT: 2, ESRCH: 3, EINTR: 4, EIO: 5, ENXIO: 6, E2BIG: 7, EBADF: 9, EAGAIN: 11, ENOMEM: 12,
  EACCES: 13, EFAULT: 14, EBUSY: 16, EEXIST: 17, ENODEV: 19, EINVAL: 22, ENFILE: 23, EMFILE: 24, ENOTTY: 25,
  EFBIG: 27, ENOSPC: 28, ESPIPE: 29, EROFS: 30, ERANGE: 34, ENOSYS: 38, EOPNOTSUPP: 95,
};
const ERRNO_NAME: Record<number, string> = Object.fromEntries(Object.entries(ERRNO).map(([k, v]) => [v, k]));

export function errnoName(errno: number): string {
  return ERRNO_NAME[errno] ?? `errno ${errno}`;
}

/** A failed system call or ioctl. `call` is the ioctl's kernel name (KVM_RUN) or the libc function. */
export class SysError extends Error {
  constructor(
    readonly call: string,
    readonly errno: number,
    detail?: string,
  ) {
    const text = new CString(libc.strerror(errno)!).toString();
    super(`${call} failed: ${errnoName(errno)} (${text})${detail ? `: ${detail}` : ""}`);
    this.name = "SysError";
  }
  get code(): string {
    return errnoName(this.errno);
  }
}

export function errno(): number {
  return read.i32(libc.__errno_location()!, 0);
}

function check(call: string, r: number | bigint, detail?: string): number {
  const n = Number(r);
  if (n < 0) throw new SysError(call, errno(), detail);
  return n;
}

/**
 * Times ioctl() makes a call again when a signal interrupted it (EINTR: it did nothing) before it throws:
 * a handler without SA_RESTART (the runtime's own, say) can interrupt a KVM ioctl on any thread. Not for
 * read_/write_: the TAP reader's blocking read() is meant to end with EINTR when it is kicked, and KVM_RUN
 * goes through ioctlRaw, which returns EINTR to the vCPU loop.
 */
const EINTR_RETRIES = 100;

// ---- files ----

export const O_RDONLY = 0;
export const O_RDWR = 2;
export const O_CREAT = 0o100;
export const O_NONBLOCK = 0o4000;
export const O_CLOEXEC = 0o2000000;

export function open(path: string, flags: number, mode = 0o644): number {
  return check(`open(${path})`, libc.open(Buffer.from(`${path}\0`), flags | O_CLOEXEC, mode));
}

export function close(fd: number): void {
  check("close", libc.close(fd));
}

/** A pointer-sized argument: a buffer the kernel reads or fills, or a plain integer (KVM_CREATE_VCPU's id). */
export type IoctlArg = Uint8Array | number | bigint | null;

export function ioctl(fd: number, request: number, arg: IoctlArg = null, detail?: string): number {
  let p: Pointer | null;
  if (arg instanceof Uint8Array) p = ptrOf(arg);
  else if (arg === null) p = null;
  else p = Number(arg) as Pointer;
  let r = libc.ioctl(fd, request, p);
  for (let i = 0; r < 0 && i < EINTR_RETRIES && errno() === ERRNO.EINTR!; i++) r = libc.ioctl(fd, request, p);
  // The name is looked up only for the error, not on every call (a VM makes ~25 ioctls on its way to start).
  if (r < 0) throw new SysError(ioctlName(request), errno(), detail);
  return r;
}

/** ioctl() that returns -errno instead of throwing: for the vCPU loop, where EINTR and EAGAIN are normal. */
export function ioctlRaw(fd: number, request: number, arg: IoctlArg = null): number {
  const p = arg instanceof Uint8Array ? ptrOf(arg) : arg === null ? null : (Number(arg) as Pointer);
  const r = libc.ioctl(fd, request, p);
  return r < 0 ? -errno() : r;
}

export function read_(fd: number, buf: Uint8Array): number {
  return check("read", libc.read(fd, ptrOf(buf), buf.byteLength));
}

export function write_(fd: number, buf: Uint8Array): number {
  return check("write", libc.write(fd, ptrOf(buf), buf.byteLength));
}

export function pread(fd: number, buf: Uint8Array, offset: number): number {
  return check("pread", libc.pread(fd, ptrOf(buf), buf.byteLength, offset));
}

export function pwrite(fd: number, buf: Uint8Array, offset: number): number {
  return check("pwrite", libc.pwrite(fd, ptrOf(buf), buf.byteLength, offset));
}

export function fsync(fd: number): void {
  check("fsync", libc.fsync(fd));
}

// ---- memory ----

export const PROT_READ = 1;
export const PROT_WRITE = 2;
export const MAP_SHARED = 0x01;
export const MAP_PRIVATE = 0x02;
export const MAP_ANONYMOUS = 0x20;
export const MAP_NORESERVE = 0x4000;
/** Drop the pages' contents: an anonymous private page reads back as zeros and stops counting in RSS. */
export const MADV_DONTNEED = 4;
export const MADV_DONTFORK = 10;
export const MADV_MERGEABLE = 12;
/** Leave the range out of core dumps (madvise(2)): guest RAM holds the guest's secrets, not the VMM's state. */
export const MADV_DONTDUMP = 16;

/** A mapping: its address (for the kernel) and an ArrayBuffer over the same bytes (for TypeScript). */
export interface Mapping {
  readonly addr: number;
  readonly size: number;
  readonly buffer: ArrayBuffer;
}

export function mmap(size: number, prot: number, flags: number, fd = -1, offset = 0): Mapping {
  const r = libc.mmap(null, size, prot, flags, fd, offset);
  const addr = Number(r);
  if (addr === -1) throw new SysError("mmap", errno(), `${size} bytes`);
  return { addr, size, buffer: toArrayBuffer(addr as Pointer, 0, size) };
}

export function munmap(m: Mapping): void {
  check("munmap", libc.munmap(m.addr as Pointer, m.size));
}

export function madvise(m: Mapping, advice: number): void {
  check("madvise", libc.madvise(m.addr as Pointer, m.size, advice));
}

/** madvise(2) on part of a mapping: `addr` must be page-aligned (the balloon releasing guest pages). */
export function madviseRange(addr: number, length: number, advice: number): void {
  check("madvise", libc.madvise(addr as Pointer, length, advice));
}

/** The address of a buffer, for structs that hold pointers (kvm_userspace_memory_region.userspace_addr). */
export function addressOf(buf: Uint8Array): number {
  return ptrOf(buf);
}

// ---- advisory locks (flock(2)) ----

export const LOCK_SH = 1;
export const LOCK_EX = 2;
export const LOCK_NB = 4;
export const LOCK_UN = 8;

/** flock(2) on `fd`; throws a SysError (EWOULDBLOCK = EAGAIN with LOCK_NB when another holder has it). */
export function flock(fd: number, operation: number, detail?: string): void {
  check("flock", libc.flock(fd, operation), detail);
}

// ---- eventfd (eventfd(2)) ----

export const EFD_NONBLOCK = O_NONBLOCK;
export const EFD_CLOEXEC = O_CLOEXEC;

export function eventfd(initval = 0, flags = EFD_CLOEXEC): number {
  return check("eventfd", libc.eventfd(initval, flags));
}

// ---- threads and signals: how the main thread kicks a vCPU thread out of KVM_RUN ----

/** glibc's struct sigaction on x86_64 (<bits/sigaction.h>): handler, 1024-bit mask, flags, restorer. */
const sigaction_t = struct("sigaction", [
  ["sa_handler", "u64"], ["sa_mask", array("u64", 16)], ["sa_flags", "i32"], ["sa_restorer", "u64"],
]);

/** The real-time signal that interrupts KVM_RUN. Bun and JavaScriptCore do not use the RT range. */
export function kickSignal(): number {
  return libc.__libc_current_sigrtmin() + 6;
}

let kickInstalled = false;
/**
 * Install a handler for the kick signal so that it interrupts a blocked KVM_RUN (which then returns EINTR)
 * instead of killing the process. The handler must be a native function: `getpid` from libc does nothing
 * harmful with its ignored argument. No SA_RESTART, so the ioctl is not restarted.
 */
export function installKickHandler(): void {
  if (kickInstalled) return;
  const handler = libc.dlsym(null, Buffer.from("getpid\0"));
  if (!handler) throw new Error("dlsym(getpid) returned NULL");
  const sa = new StructView(sigaction_t).assign({ sa_handler: handler, sa_flags: 0 });
  check("sigaction", libc.sigaction(kickSignal(), ptrOf(sa.bytes), null));
  kickInstalled = true;
}

export function pthreadSelf(): bigint {
  return BigInt(libc.pthread_self());
}

export function pthreadKill(thread: bigint, signal: number): void {
  const r = libc.pthread_kill(thread, signal);
  if (r !== 0) throw new SysError("pthread_kill", r);
}

/** Unblock a signal in the calling thread (a Worker may inherit a mask that blocks it). */
export function unblockSignal(signal: number): void {
  const set = new BigUint64Array(16);
  set[Math.floor((signal - 1) / 64)] = 1n << BigInt((signal - 1) % 64);
  const SIG_UNBLOCK = 1;
  const r = libc.pthread_sigmask(SIG_UNBLOCK, ptrOf(set), null);
  if (r !== 0) throw new SysError("pthread_sigmask", r);
}

// ---- terminal (for the serial console's raw mode) ----

export function isatty(fd: number): boolean {
  return libc.isatty(fd) === 1;
}

/** glibc's struct termios on x86_64 (<bits/termios-struct.h>). */
const termios = struct("termios", [
  ["c_iflag", "u32"], ["c_oflag", "u32"], ["c_cflag", "u32"], ["c_lflag", "u32"],
  ["c_line", "u8"], ["c_cc", array("u8", 32)], ["c_ispeed", "u32"], ["c_ospeed", "u32"],
]);
const TCSANOW = 0;
/** c_oflag: post-process output, and turn "\n" into "\r\n" (termios(3)). */
const OPOST = 0o1;
const ONLCR = 0o4;

/**
 * Put a terminal in raw mode for input (every key goes to the guest, Ctrl-C included), keeping output
 * processing on so that the VMM's own log lines still start at the left margin. Returns a restore function.
 */
export function rawMode(fd: number): () => void {
  const saved = new StructView(termios);
  check("tcgetattr", libc.tcgetattr(fd, ptrOf(saved.bytes)));
  const raw = new StructView(termios, saved.bytes.slice());
  libc.cfmakeraw(ptrOf(raw.bytes));
  raw.set("c_oflag", raw.get("c_oflag") | OPOST | ONLCR);
  check("tcsetattr", libc.tcsetattr(fd, TCSANOW, ptrOf(raw.bytes)));
  return () => void libc.tcsetattr(fd, TCSANOW, ptrOf(saved.bytes));
}

/** Read 8 bytes at a raw address (used by the vCPU worker to reach kvm_run without copying). */
export function viewAt(addr: number, size: number): ArrayBuffer {
  return toArrayBuffer(addr as Pointer, 0, size);
}

// ---- seccomp (seccomp(2), prctl(2)) ----

/** <linux/prctl.h>: after this, execve cannot grant privileges (set-user-ID bits, file capabilities). */
export const PR_SET_NO_NEW_PRIVS = 38;
/** <asm/unistd_64.h>: glibc has no seccomp() wrapper. */
const __NR_seccomp = 317;
const __NR_pivot_root = 155;
/** <linux/seccomp.h> */
export const SECCOMP_SET_MODE_FILTER = 1;
export const SECCOMP_FILTER_FLAG_TSYNC = 1;

export function prctl(option: number, arg2 = 0, arg3 = 0, arg4 = 0, arg5 = 0): number {
  return check(`prctl(${option})`, libc.prctl(option, arg2, arg3, arg4, arg5));
}

/**
 * seccomp(SECCOMP_SET_MODE_FILTER, flags, prog). With SECCOMP_FILTER_FLAG_TSYNC the kernel attaches the
 * filter to every thread of the process at once, or fails: then it returns the id of a thread it could not
 * synchronise (a positive number), which is reported as an error here.
 */
export function seccompSetModeFilter(flags: number, fprog: Uint8Array): void {
  const r = Number(libc.syscall(__NR_seccomp, SECCOMP_SET_MODE_FILTER, flags, ptrOf(fprog), 0, 0));
  if (r < 0) throw new SysError("seccomp(SECCOMP_SET_MODE_FILTER)", errno());
  if (r > 0) throw new Error(`seccomp(SECCOMP_SET_MODE_FILTER, TSYNC): thread ${r} could not be synchronised`);
}

/** syscall(2) by number, returning the result or -errno: for tests that make a call the filter refuses. */
export function syscallRaw(nr: number, ...args: number[]): number {
  const a = [...args, 0, 0, 0, 0, 0];
  const r = Number(libc.syscall(nr, a[0]!, a[1]!, a[2]!, a[3]!, a[4]!));
  return r < 0 ? -errno() : r;
}

// ---- namespaces, mounts and credentials (the jailer) ----

/** <linux/sched.h> */
export const CLONE_NEWNS = 0x00020000;
export const CLONE_NEWPID = 0x20000000;
/** <linux/mount.h> */
export const MS_BIND = 0x1000;
export const MS_REC = 0x4000;
export const MS_PRIVATE = 1 << 18;
export const MS_SLAVE = 1 << 19;
export const MNT_DETACH = 2;
export const MS_NOSUID = 2;
export const MS_NODEV = 4;
export const MS_NOEXEC = 8;
/** <sys/stat.h> */
export const S_IFCHR = 0o020000;

const cstr = (s: string) => Buffer.from(`${s}\0`);

/** Detach the calling thread (and whatever it execs) from the namespaces named by `flags`. */
export function unshare(flags: number): void {
  check("unshare", libc.unshare(flags));
}

export function mount(source: string, target: string, fstype: string | null, flags: number, data?: string): void {
  const d = data === undefined ? null : ptrOf(cstr(data));
  check(`mount(${target})`, libc.mount(cstr(source), cstr(target), fstype === null ? null : cstr(fstype), flags, d));
}

export function umount2(target: string, flags: number): void {
  check(`umount2(${target})`, libc.umount2(cstr(target), flags));
}

/** pivot_root(2): make `newRoot` the root and move the old root to `putOld` (glibc has no wrapper). */
export function pivotRoot(newRoot: string, putOld: string): void {
  check("pivot_root", libc.syscall(__NR_pivot_root, ptrOf(cstr(newRoot)), ptrOf(cstr(putOld)), 0, 0, 0));
}

export function chdir(path: string): void {
  check(`chdir(${path})`, libc.chdir(cstr(path)));
}

export function chroot(path: string): void {
  check(`chroot(${path})`, libc.chroot(cstr(path)));
}

/** mknod(path, S_IFCHR | mode, makedev(major, minor)) for a character device (<sys/sysmacros.h>'s encoding). */
export function mknodChar(path: string, mode: number, major: number, minor: number): void {
  const dev = (BigInt(major & 0xfff) << 8n) | BigInt(minor & 0xff) | (BigInt(minor & ~0xff) << 12n) | (BigInt(major & ~0xfff) << 32n);
  check(`mknod(${path})`, libc.mknod(cstr(path), S_IFCHR | mode, dev));
}

/** Drop every supplementary group, then set real, effective and saved ids (glibc applies them to every thread). */
export function dropPrivileges(uid: number, gid: number): void {
  check("setgroups", libc.setgroups(0, null));
  check("setresgid", libc.setresgid(gid, gid, gid));
  check("setresuid", libc.setresuid(uid, uid, uid));
}

/** <linux/sched.h> */
export const CLONE_NEWNET = 0x40000000;

/** Move the calling thread into the namespace `fd` refers to (setns(2)). */
export function setns(fd: number, nstype: number): void {
  check("setns", libc.setns(fd, nstype));
}

/** <asm-generic/resource.h> */
export const RLIMIT_FSIZE = 1;
export const RLIMIT_NOFILE = 7;

/** setrlimit for this process: soft and hard limit both `value` (prlimit(2) with pid 0). */
export function setResourceLimit(resource: number, value: bigint): void {
  const limits = new BigUint64Array([value, value]);
  check(`prlimit(${resource})`, libc.prlimit(0, resource, ptrOf(limits), null));
}

export function dup2(from: number, to: number): void {
  check("dup2", libc.dup2(from, to));
}

export function setsid(): void {
  check("setsid", libc.setsid());
}

/** execve(2): replace this process with `path`. Returns only by throwing. */
export function execve(path: string, argv: readonly string[], env: readonly string[]): never {
  const strings = [...argv, ...env].map(cstr);
  const vector = (from: number, n: number) => {
    const v = new BigUint64Array(n + 1);
    for (let i = 0; i < n; i++) v[i] = BigInt(ptrOf(strings[from + i]!));
    return v;
  };
  const av = vector(0, argv.length);
  const ev = vector(argv.length, env.length);
  libc.execve(cstr(path), ptrOf(av), ptrOf(ev));
  throw new SysError(`execve(${path})`, errno());
}
