// The C library calls a vCPU worker thread makes, bound on their own. Each Bun Worker is a JavaScript VM of
// its own that loads every module it imports again: binding libc.ts's two dozen calls and computing every
// KVM struct layout (uapi.ts) costs about 1 MiB per worker thread, for four calls. The main thread passes
// what the worker would otherwise compute (the KVM_RUN request number, the kick signal) in its first
// message (src/vcpu/protocol.ts); the kick signal's handler is process-wide and installed by the main thread.

import { dlopen, FFIType, read, toArrayBuffer, type Pointer } from "bun:ffi";

const libc = dlopen("libc.so.6", {
  ioctl: { args: [FFIType.i32, FFIType.u64, FFIType.u64], returns: FFIType.i32 },
  __errno_location: { args: [], returns: FFIType.ptr },
  pthread_self: { args: [], returns: FFIType.u64 },
  pthread_sigmask: { args: [FFIType.i32, FFIType.ptr, FFIType.ptr], returns: FFIType.i32 },
}).symbols;

/** ioctl(fd, request, 0): 0 or more on success, -errno on failure (EINTR and EAGAIN are normal for KVM_RUN). */
export function ioctlNoArg(fd: number, request: number): number {
  const r = libc.ioctl(fd, request, 0);
  return r < 0 ? -read.i32(libc.__errno_location()!, 0) : r;
}

/** The memory at a host address as an ArrayBuffer (the vCPU's kvm_run mapping, which the main thread made). */
export function viewAt(addr: number, size: number): ArrayBuffer {
  return toArrayBuffer(addr as Pointer, 0, size);
}

export function pthreadSelf(): bigint {
  return BigInt(libc.pthread_self());
}

/** Unblock a signal in the calling thread (a Worker may inherit a mask that blocks it). Throws on failure. */
export function unblockSignal(signal: number): void {
  const set = new BigUint64Array(16); // glibc's 1024-bit sigset_t
  set[Math.floor((signal - 1) / 64)] = 1n << BigInt((signal - 1) % 64);
  const SIG_UNBLOCK = 1;
  const r = libc.pthread_sigmask(SIG_UNBLOCK, set, null);
  if (r !== 0) throw new Error(`pthread_sigmask(SIG_UNBLOCK, ${signal}) failed: error ${r}`);
}
