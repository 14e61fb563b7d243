// The newc cpio writer (guest/cpio.ts), checked by parsing its output back with an independent reader
// written from buffer-format.rst, and by the system's cpio(1) when it is installed.

import { describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CpioError, type CpioEntry, writeCpio } from "../guest/cpio.ts";

interface ParsedMember {
  offset: number;
  ino: number;
  mode: number;
  uid: number;
  gid: number;
  nlink: number;
  mtime: number;
  filesize: number;
  devmajor: number;
  devminor: number;
  rdevmajor: number;
  rdevminor: number;
  namesize: number;
  check: number;
  name: string;
  data: Uint8Array;
}

const FIELDS = ["ino", "mode", "uid", "gid", "nlink", "mtime", "filesize", "devmajor", "devminor",
  "rdevmajor", "rdevminor", "namesize", "check"] as const;

/** A strict newc reader: every header 4-aligned, hex fields, NUL-terminated names, zero padding, a trailer. */
function parseNewc(buf: Uint8Array): ParsedMember[] {
  const ascii = (from: number, to: number) => new TextDecoder().decode(buf.subarray(from, to));
  const expectZeros = (from: number, to: number, what: string) => {
    for (let i = from; i < to; i++) if (buf[i] !== 0) throw new Error(`non-zero padding byte after ${what} at ${i}`);
  };
  const members: ParsedMember[] = [];
  let off = 0;
  for (;;) {
    if (off % 4 !== 0) throw new Error(`header at ${off} is not 4-byte aligned`);
    if (off + 110 > buf.length) throw new Error(`archive ends inside a header at ${off} (no trailer?)`);
    if (ascii(off, off + 6) !== "070701") throw new Error(`bad magic at ${off}: ${ascii(off, off + 6)}`);
    const m: Record<string, number> = {};
    FIELDS.forEach((f, i) => {
      const text = ascii(off + 6 + i * 8, off + 14 + i * 8);
      if (!/^[0-9a-f]{8}$/.test(text)) throw new Error(`field ${f} at ${off} is not 8 lowercase hex digits: ${text}`);
      m[f] = parseInt(text, 16);
    });
    const nameStart = off + 110;
    const nameEnd = nameStart + m.namesize!; // includes the NUL
    if (buf[nameEnd - 1] !== 0) throw new Error(`name at ${nameStart} is not NUL-terminated`);
    const name = ascii(nameStart, nameEnd - 1);
    if (name.includes("\0")) throw new Error(`name at ${nameStart} has an embedded NUL`);
    const dataStart = (nameEnd + 3) & ~3;
    expectZeros(nameEnd, dataStart, name);
    const dataEnd = dataStart + m.filesize!;
    if (dataEnd > buf.length) throw new Error(`${name}: data runs past the end of the archive`);
    const next = (dataEnd + 3) & ~3;
    expectZeros(dataEnd, Math.min(next, buf.length), `${name}'s data`);
    members.push({ ...(m as Omit<ParsedMember, "offset" | "name" | "data">), offset: off, name, data: buf.slice(dataStart, dataEnd) });
    off = next;
    if (name === "TRAILER!!!") break;
  }
  if (off !== buf.length) throw new Error(`${buf.length - off} bytes after the trailer`);
  return members;
}

const bytes = (s: string) => new TextEncoder().encode(s);

// File sizes 0..5 cover every data padding length (0, 3, 2, 1); the name lengths vary the name padding.
const SAMPLE: CpioEntry[] = [
  { type: "dir", path: "bin", mode: 0o755 },
  { type: "dir", path: "dev", mode: 0o755 },
  { type: "dir", path: "tmp", mode: 0o1777 },
  { type: "char", path: "dev/console", mode: 0o600, major: 5, minor: 1 },
  { type: "block", path: "dev/vda", mode: 0o660, major: 254, minor: 0 },
  { type: "file", path: "init", mode: 0o755, data: bytes("#!/bin/sh\necho hi\n") },
  { type: "file", path: "bin/e", mode: 0o644, data: bytes("") },
  { type: "file", path: "bin/ab", mode: 0o644, data: bytes("1") },
  { type: "file", path: "bin/abc", mode: 0o644, data: bytes("12") },
  { type: "file", path: "bin/abcd", mode: 0o644, data: bytes("123") },
  { type: "file", path: "bin/abcde", mode: 0o644, data: bytes("1234") },
  { type: "file", path: "bin/abcdef", mode: 0o600, data: bytes("12345") },
  { type: "symlink", path: "bin/sh", target: "/bin/busybox" },
];

describe("writeCpio", () => {
  // Written and parsed inside each test, so that a broken writer fails tests rather than test collection.
  const sample = () => {
    const archive = writeCpio(SAMPLE);
    return { archive, members: parseNewc(archive) };
  };

  test("one member per entry, in order, then the trailer", () => {
    const { archive, members } = sample();
    expect(members.map((m) => m.name)).toEqual([...SAMPLE.map((e) => e.path), "TRAILER!!!"]);
    expect(archive.length % 4).toBe(0);
    const trailer = members.at(-1)!;
    expect(trailer.filesize).toBe(0);
    expect(trailer.namesize).toBe("TRAILER!!!".length + 1);
  });

  test("headers: mode with file type, root-owned, mtime 0, unique inodes, no checksum", () => {
    const { members } = sample();
    const byName = new Map(members.map((m) => [m.name, m]));
    expect(byName.get("bin")!.mode).toBe(0o040755);
    expect(byName.get("tmp")!.mode).toBe(0o041777);
    expect(byName.get("init")!.mode).toBe(0o100755);
    expect(byName.get("bin/abcdef")!.mode).toBe(0o100600);
    expect(byName.get("bin/sh")!.mode).toBe(0o120777);
    expect(byName.get("dev/console")!.mode).toBe(0o020600);
    expect(byName.get("dev/vda")!.mode).toBe(0o060660);
    const real = members.slice(0, -1);
    for (const m of real) {
      expect([m.uid, m.gid, m.mtime, m.check, m.devmajor, m.devminor]).toEqual([0, 0, 0, 0, 0, 0]);
      expect(m.nlink).toBe((m.mode & 0o170000) === 0o040000 ? 2 : 1);
      expect(m.namesize).toBe(new TextEncoder().encode(m.name).length + 1);
    }
    expect(new Set(real.map((m) => m.ino)).size).toBe(real.length);
    expect(real.every((m) => m.ino > 0)).toBe(true);
  });

  test("data: file contents and symlink targets, device numbers in rdevmajor/rdevminor", () => {
    const { members } = sample();
    const byName = new Map(members.map((m) => [m.name, m]));
    for (const e of SAMPLE) {
      const m = byName.get(e.path)!;
      if (e.type === "file") expect(m.data).toEqual(e.data);
      else if (e.type === "symlink") expect(new TextDecoder().decode(m.data)).toBe(e.target);
      else expect(m.filesize).toBe(0);
    }
    expect([byName.get("dev/console")!.rdevmajor, byName.get("dev/console")!.rdevminor]).toEqual([5, 1]);
    expect([byName.get("dev/vda")!.rdevmajor, byName.get("dev/vda")!.rdevminor]).toEqual([254, 0]);
  });

  test("the exact bytes of one member", () => {
    const one = writeCpio([{ type: "file", path: "a", mode: 0o644, data: bytes("xyz") }]);
    const header =
      "070701" + "00000001" + "000081a4" + "00000000" + "00000000" + "00000001" + "00000000" + "00000003" +
      "00000000" + "00000000" + "00000000" + "00000000" + "00000002" + "00000000";
    // 110-byte header + "a\0" = 112, already aligned; 3 data bytes + 1 padding byte.
    expect(new TextDecoder().decode(one.subarray(0, 110))).toBe(header);
    expect([...one.subarray(110, 116)]).toEqual([0x61, 0, 0x78, 0x79, 0x7a, 0]);
    expect(one.length).toBe(116 + 112 + 12); // trailer: 110 + "TRAILER!!!\0" = 121, padded to 124
  });

  test("the same entries always give the same bytes", () => {
    expect(writeCpio(SAMPLE)).toEqual(sample().archive);
  });

  test("rejects malformed entries with a CpioError naming them", () => {
    const bad: [CpioEntry[], RegExp][] = [
      [[{ type: "file", path: "/abs", mode: 0o644, data: bytes("") }], /must be relative/],
      [[{ type: "dir", path: "a/../b", mode: 0o755 }], /"\.\."/],
      [[{ type: "file", path: "nodir/x", mode: 0o644, data: bytes("") }], /parent directory nodir/],
      [[{ type: "dir", path: "d", mode: 0o755 }, { type: "dir", path: "d", mode: 0o755 }], /listed twice/],
      [[{ type: "file", path: "x", mode: 0o100644, data: bytes("") }], /permission bits only/],
      [[{ type: "symlink", path: "l", target: "" }], /bad symlink target/],
      [[{ type: "char", path: "c", mode: 0o600, major: 2 ** 32, minor: 0 }], /c_rmaj/],
      [[{ type: "file", path: "TRAILER!!!", mode: 0o644, data: bytes("") }], /reserved/],
    ];
    for (const [entries, message] of bad) {
      expect(() => writeCpio(entries)).toThrow(CpioError);
      expect(() => writeCpio(entries)).toThrow(message);
    }
  });

  test("the system cpio lists the same members (or, without cpio installed, the strict parse above)", () => {
    const { archive } = sample();
    const cpio = Bun.which("cpio");
    // Without cpio(1) the independent parse is the whole check; it is repeated here so this test still fails
    // when the writer is broken.
    expect(parseNewc(archive).length).toBe(SAMPLE.length + 1);
    if (!cpio) return;
    const dir = mkdtempSync(join(tmpdir(), "kindling-cpio-"));
    try {
      const file = join(dir, "a.cpio");
      writeFileSync(file, archive);
      const list = Bun.spawnSync([cpio, "-t", "-v", "--quiet", "-F", file], { stdout: "pipe", stderr: "pipe" });
      expect(list.stderr.toString()).toBe("");
      expect(list.exitCode).toBe(0);
      const lines = list.stdout.toString().trim().split("\n");
      // Every mtime is 0, so each name follows the date "Jan  1  1970".
      expect(lines.map((l) => l.replace(/^.* 1970 /, ""))).toEqual(
        SAMPLE.map((e) => (e.type === "symlink" ? `${e.path} -> ${e.target}` : e.path)),
      );
      const line = (path: string) => lines.find((l) => l.endsWith(` ${path}`) || l.includes(` ${path} -> `))!;
      expect(line("dev/console")).toMatch(/^crw------- .* 5,\s+1 /);
      expect(line("dev/vda")).toMatch(/^brw-rw---- .* 254,\s+0 /);
      expect(line("tmp")).toMatch(/^drwxrwxrwt /);
      expect(line("bin/abcdef")).toMatch(/^-rw------- .* 5 /);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
