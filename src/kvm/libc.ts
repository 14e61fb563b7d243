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
  return check(ioctlName(request), libc.ioctl(fd, request, p), detail);
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
