// A writer for "newc" cpio archives, the format the kernel unpacks into its initramfs.
//
// Format: Documentation/driver-api/early-userspace/buffer-format.rst in the kernel source (and
// init/initramfs.c, which reads it). Each member is a 110-byte ASCII header, the path name and its NUL
// padded to a 4-byte boundary, then the data padded to a 4-byte boundary. The archive ends with a member
// named "TRAILER!!!". Every header field is 8 hexadecimal digits:
//
//   c_magic "070701" | c_ino | c_mode | c_uid | c_gid | c_nlink | c_mtime | c_filesize
//   | c_maj | c_min | c_rmaj | c_rmin | c_namesize | c_chksum
//
// Everything is owned by root, every mtime is 0 and inode numbers count up from 1, so the same entries
// always give the same bytes.

/** One archive member. Paths are relative to the archive root ("bin/busybox"), parents listed first. */
export type CpioEntry =
  | { type: "dir"; path: string; mode: number }
  | { type: "file"; path: string; mode: number; data: Uint8Array }
  | { type: "symlink"; path: string; target: string }
  | { type: "char" | "block"; path: string; mode: number; major: number; minor: number };

/** The newc magic; "070702" would be the variant with a checksum. */
export const CPIO_NEWC_MAGIC = "070701";
export const CPIO_HEADER_SIZE = 6 + 13 * 8;
export const CPIO_TRAILER_NAME = "TRAILER!!!";

// File type bits of st_mode (include/uapi/linux/stat.h).
export const S_IFMT = 0o170000;
export const S_IFDIR = 0o040000;
export const S_IFREG = 0o100000;
export const S_IFLNK = 0o120000;
export const S_IFCHR = 0o020000;
export const S_IFBLK = 0o060000;

const U32_MAX = 0xffff_ffff;
const encoder = new TextEncoder();

export class CpioError extends Error {
  override name = "CpioError";
}

function align4(n: number): number {
  return (n + 3) & ~3;
}

function hex8(value: number, field: string, path: string): string {
  if (!Number.isInteger(value) || value < 0 || value > U32_MAX) {
    throw new CpioError(`${path}: ${field} ${value} does not fit the 8 hex digits of a newc header`);
  }
  return value.toString(16).padStart(8, "0");
}

function checkPath(path: string): void {
  if (path === "" || path.startsWith("/") || path.endsWith("/")) {
    throw new CpioError(`cpio path ${JSON.stringify(path)} must be relative, non-empty and not end in "/"`);
  }
  if (path.includes("\0")) throw new CpioError(`cpio path ${JSON.stringify(path)} contains a NUL byte`);
  if (path.split("/").some((part) => part === "" || part === "." || part === "..")) {
    throw new CpioError(`cpio path ${JSON.stringify(path)} has an empty, "." or ".." component`);
  }
  if (path === CPIO_TRAILER_NAME) throw new CpioError(`"${CPIO_TRAILER_NAME}" is reserved for the end marker`);
}

function checkPermissions(mode: number, path: string): void {
  if (!Number.isInteger(mode) || mode < 0 || mode > 0o7777) {
    throw new CpioError(`${path}: mode ${mode} must hold permission bits only (0 to 0o7777)`);
  }
}

/** The 110-byte header, name, NUL and padding of one member, followed by its padded data. */
function member(
  name: string,
  fields: { ino: number; mode: number; nlink: number; rmaj: number; rmin: number },
  data: Uint8Array,
): Uint8Array[] {
  const nameBytes = encoder.encode(name);
  const namesize = nameBytes.length + 1; // c_namesize counts the terminating NUL
  const header =
    CPIO_NEWC_MAGIC +
    [
      hex8(fields.ino, "c_ino", name),
      hex8(fields.mode, "c_mode", name),
      hex8(0, "c_uid", name),
      hex8(0, "c_gid", name),
      hex8(fields.nlink, "c_nlink", name),
      hex8(0, "c_mtime", name),
      hex8(data.length, "c_filesize", name),
      hex8(0, "c_maj", name), // device of the filesystem the file came from: none
      hex8(0, "c_min", name),
      hex8(fields.rmaj, "c_rmaj", name), // the device a character/block node refers to
      hex8(fields.rmin, "c_rmin", name),
      hex8(namesize, "c_namesize", name),
      hex8(0, "c_chksum", name), // zero for 070701
    ].join("");
  // Header + name + NUL is padded so that the data starts 4-byte aligned; the data is padded so that the
  // next header does too. Members start at offset 0, so alignment within the member is enough.
  const head = new Uint8Array(align4(CPIO_HEADER_SIZE + namesize));
  head.set(encoder.encode(header), 0);
  head.set(nameBytes, CPIO_HEADER_SIZE);
  const tail = new Uint8Array(align4(data.length) - data.length);
  return [head, data, tail];
}

/**
 * Serialises `entries` (in order) into a newc archive ending with the TRAILER!!! member. Throws a
 * CpioError naming the entry if a path is malformed or repeated, a parent directory is missing or comes
 * later, or a number does not fit its field.
 */
export function writeCpio(entries: readonly CpioEntry[]): Uint8Array {
  const chunks: Uint8Array[] = [];
  const dirs = new Set<string>();
  const seen = new Set<string>();
  let ino = 1;
  for (const entry of entries) {
    const { path } = entry;
    checkPath(path);
    if (seen.has(path)) throw new CpioError(`${path}: listed twice`);
    seen.add(path);
    const parent = path.includes("/") ? path.slice(0, path.lastIndexOf("/")) : "";
    // The kernel creates each member as it reads it, so a missing parent would make it fail quietly.
    if (parent !== "" && !dirs.has(parent)) throw new CpioError(`${path}: parent directory ${parent} is not listed before it`);

    let mode: number;
    let data: Uint8Array = new Uint8Array(0);
    let nlink = 1; // never > 1: no member is taken for a hard link of another
    let rmaj = 0;
    let rmin = 0;
    switch (entry.type) {
      case "dir":
        checkPermissions(entry.mode, path);
        mode = S_IFDIR | entry.mode;
        nlink = 2; // "." and its entry in the parent
        dirs.add(path);
        break;
      case "file":
        checkPermissions(entry.mode, path);
        mode = S_IFREG | entry.mode;
        data = entry.data;
        break;
      case "symlink":
        // The data of a symlink is its target, without a NUL; buffer-format.rst: it must not be empty.
        if (entry.target === "" || entry.target.includes("\0")) throw new CpioError(`${path}: bad symlink target`);
        mode = S_IFLNK | 0o777;
        data = encoder.encode(entry.target);
        break;
      case "char":
      case "block":
        checkPermissions(entry.mode, path);
        mode = (entry.type === "char" ? S_IFCHR : S_IFBLK) | entry.mode;
        rmaj = entry.major;
        rmin = entry.minor;
        break;
    }
    chunks.push(...member(path, { ino: ino++, mode, nlink, rmaj, rmin }, data));
  }
  chunks.push(...member(CPIO_TRAILER_NAME, { ino: 0, mode: 0, nlink: 1, rmaj: 0, rmin: 0 }, new Uint8Array(0)));

  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let offset = 0;
  for (const c of chunks) {
    out.set(c, offset);
    offset += c.length;
  }
  return out;
}
