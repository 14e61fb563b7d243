// Opening host paths that API clients and config files name: the log, metrics and serial outputs, drive
// images, the kernel and the initrd. One place, so every path gets the same three checks:
//
//   1. O_NOFOLLOW: the last component may not be a symbolic link (open fails with ELOOP). A client that can
//      make a symlink in a directory the VMM writes to cannot redirect a write to another file. Earlier
//      components are followed as usual (a jail's chroot is what confines the whole path).
//   2. fstat on the opened descriptor, not stat on the path: the type and size checked are those of the file
//      actually opened, so a rename between the check and the open cannot swap it (no TOCTOU window).
//        - outputs (log, metrics, serial): a regular file or a named pipe, never a block or character device
//          (`PUT /serial {"serial_out_path": "/dev/sda"}` would otherwise write console bytes onto a disk);
//        - drive images: a regular file. Block devices are refused too: their size needs BLKGETSIZE64 and
//          a guest writing a host disk deserves a deliberate setting, which kindling does not have yet;
//        - kernel and initrd: a regular file, no larger than a cap, read whole from the same descriptor.
//   3. O_NONBLOCK at open: opening a named pipe with no writer (for reading) or no reader (for writing)
//      would otherwise block the main thread. Regular files ignore the flag.
//
// Bun opens every file O_CLOEXEC itself (as libuv does): nothing opened here leaks into a program the VMM starts.

import { closeSync, constants, fstatSync, openSync, readSync, type Stats } from "node:fs";

/** A host path that failed a check: the message names the field, the path and the reason. */
export class HostFileError extends Error {
  override name = "HostFileError";
}

/** The largest kernel image read (a vmlinux with debug information is a few hundred MiB). */
export const KERNEL_MAX_BYTES = 1 << 30;
/** The largest initrd read (it must fit in guest RAM anyway; bootLinux caps it at the RAM size too). */
export const INITRD_MAX_BYTES = 1 << 30;

type Kind = "regular file" | "named pipe" | "block device" | "character device" | "directory" | "socket" | "symbolic link";

function kindOf(st: Stats): Kind {
  if (st.isFile()) return "regular file";
  if (st.isFIFO()) return "named pipe";
  if (st.isBlockDevice()) return "block device";
  if (st.isCharacterDevice()) return "character device";
  if (st.isDirectory()) return "directory";
  if (st.isSocket()) return "socket";
  return "symbolic link";
}

/** Why open(2) failed, in words a user can act on. */
function openFailure(e: unknown, writing: boolean): string {
  const code = (e as NodeJS.ErrnoException).code;
  switch (code) {
    case "ELOOP": return "it is a symbolic link (kindling opens host paths with O_NOFOLLOW; name the file itself)";
    case "ENOENT": return writing ? "its directory does not exist" : "no such file";
    case "ENXIO": return "a named pipe with no reader";
    case "EACCES": return "permission denied";
    case "EISDIR": return "it is a directory";
    default: return (e as Error).message;
  }
}

/**
 * open(2) `path` with O_NOFOLLOW | O_NONBLOCK and `flags`, then fstat the descriptor and check
 * its type is one of `kinds`. Closes the descriptor if a check fails.
 */
function openChecked(field: string, path: string, flags: number, kinds: readonly Kind[], mode = 0o600): { fd: number; st: Stats } {
  const writing = (flags & (constants.O_WRONLY | constants.O_RDWR)) !== 0;
  let fd: number;
  try {
    fd = openSync(path, flags | constants.O_NOFOLLOW | constants.O_NONBLOCK, mode);
  } catch (e) {
    throw new HostFileError(`${field}: cannot open ${path}${writing ? " for writing" : ""}: ${openFailure(e, writing)}`);
  }
  try {
    const st = fstatSync(fd);
    const kind = kindOf(st);
    if (!kinds.includes(kind)) throw new HostFileError(`${field}: ${path} is a ${kind}, not a ${kinds.join(" or a ")}`);
    return { fd, st };
  } catch (e) {
    closeSync(fd);
    throw e;
  }
}

/**
 * Open a log, metrics or serial output for appending, as Firecracker does: created if missing (mode 0600),
 * non-blocking so a pipe nobody drains never stalls the VMM. A regular file or a named pipe only.
 */
export function openOutput(field: string, path: string): number {
  const flags = constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT;
  return openChecked(field, path, flags, ["regular file", "named pipe"]).fd;
}

/** Open a drive image: a regular file, read-only or read-write. Returns the descriptor and the size. */
export function openDriveImage(field: string, path: string, readOnly: boolean): { fd: number; size: number } {
  const { fd, st } = openChecked(field, path, readOnly ? constants.O_RDONLY : constants.O_RDWR, ["regular file"]);
  return { fd, size: st.size };
}

/**
 * Read a kernel or initrd whole: a regular file of at most `maxBytes`, read from the descriptor that was
 * checked (the path is not looked up again).
 */
export function readImage(field: string, path: string, maxBytes: number): Uint8Array {
  const { fd, st } = openChecked(field, path, constants.O_RDONLY, ["regular file"]);
  try {
    if (st.size > maxBytes) throw new HostFileError(`${field}: ${path} is ${st.size} bytes, more than the ${maxBytes}-byte limit`);
    const out = new Uint8Array(st.size);
    for (let done = 0; done < out.byteLength;) {
      const n = readSync(fd, out, done, out.byteLength - done, done);
      if (n === 0) throw new HostFileError(`${field}: ${path} shrank to ${done} bytes while being read`);
      done += n;
    }
    return out;
  } finally {
    closeSync(fd);
  }
}
