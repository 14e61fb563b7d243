// The guest's userland, as a list of archive entries: busybox, a symlink per applet, /init and a few files
// in /etc. The initramfs (initramfs.ts) is exactly this list; the ext4 root (rootfs.ts) is built from it too.

import { readFileSync } from "node:fs";
import { join } from "node:path";
import { BOOT_TIMER_START } from "../src/arch/x86_64/layout.ts";
import type { CpioEntry } from "./cpio.ts";
import { buildGuestTools } from "./tools/build.ts";

/** Debian's busybox-static installs this statically linked binary; it needs no libraries in the guest. */
export const BUSYBOX_PATH = "/bin/busybox";
export const INIT_SCRIPT = join(import.meta.dir, "init.sh");

/** Linux's device number of /dev/console (Documentation/admin-guide/devices.txt: char 5, minor 1). */
export const CONSOLE_MAJOR = 5;
export const CONSOLE_MINOR = 1;

/**
 * init.sh writes the boot-complete byte with `devmem <address> 8 123`. The address cannot be imported in a
 * shell script, so the build reads it back and refuses to go on if it differs from BOOT_TIMER_START.
 */
export function checkBootTimerAddress(initScript: string): void {
  const m = /^devmem (0x[0-9a-fA-F]+) 8 123$/m.exec(initScript);
  if (!m) throw new Error(`${INIT_SCRIPT} has no "devmem <address> 8 123" line for the boot timer`);
  if (Number(m[1]) !== BOOT_TIMER_START) {
    throw new Error(`${INIT_SCRIPT} writes the boot timer at ${m[1]}, but BOOT_TIMER_START in ` +
      `src/arch/x86_64/layout.ts is 0x${BOOT_TIMER_START.toString(16)}`);
  }
}

/** Every applet's install path as busybox itself lists it ("bin/ls", "usr/bin/awk", "sbin/reboot", ...). */
export function busyboxApplets(busybox = BUSYBOX_PATH): string[] {
  const r = Bun.spawnSync([busybox, "--list-full"], { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`${busybox} --list-full failed: ${r.stderr.toString()}`);
  return r.stdout.toString().split("\n").filter((line) => line !== "");
}

/** The whole userland, parents before children, in a fixed order. */
export function userlandEntries(): CpioEntry[] {
  const init = readFileSync(INIT_SCRIPT);
  checkBootTimerAddress(init.toString("utf8"));
  const text = (s: string) => new TextEncoder().encode(s);

  const entries: CpioEntry[] = [
    { type: "dir", path: "bin", mode: 0o755 },
    { type: "dir", path: "dev", mode: 0o755 },
    { type: "dir", path: "etc", mode: 0o755 },
    { type: "dir", path: "mnt", mode: 0o755 },
    { type: "dir", path: "proc", mode: 0o555 },
    { type: "dir", path: "root", mode: 0o700 },
    { type: "dir", path: "sbin", mode: 0o755 },
    { type: "dir", path: "sys", mode: 0o555 },
    { type: "dir", path: "tmp", mode: 0o1777 }, // sticky: anyone may create, only owners delete
    { type: "dir", path: "usr", mode: 0o755 },
    { type: "dir", path: "usr/bin", mode: 0o755 },
    { type: "dir", path: "usr/sbin", mode: 0o755 },
    // The kernel opens /dev/console for PID 1's stdin/stdout/stderr before anything mounts devtmpfs.
    { type: "char", path: "dev/console", mode: 0o600, major: CONSOLE_MAJOR, minor: CONSOLE_MINOR },
    { type: "file", path: "etc/passwd", mode: 0o644, data: text("root:x:0:0:root:/root:/bin/sh\n") },
    { type: "file", path: "etc/group", mode: 0o644, data: text("root:x:0:\n") },
    { type: "file", path: "init", mode: 0o755, data: new Uint8Array(init) },
    // A disk root runs /sbin/init: the same script.
    { type: "symlink", path: "sbin/init", target: "/init" },
    { type: "file", path: "bin/busybox", mode: 0o755, data: new Uint8Array(readFileSync(BUSYBOX_PATH)) },
  ];
  // kindling's own tools (guest/tools/): what busybox lacks, e.g. a vsock client and server.
  for (const tool of buildGuestTools()) entries.push({ type: "file", path: `bin/${tool.name}`, mode: 0o755, data: tool.elf });
  const taken = new Set(entries.map((e) => e.path));
  // busybox looks at argv[0] to pick the applet, so each applet is a symlink to the one binary. Skipped:
  // busybox itself, sbin/init (ours instead) and linuxrc (busybox's init again, for old initrds).
  for (const applet of busyboxApplets().sort()) {
    if (taken.has(applet) || applet === "linuxrc") continue;
    entries.push({ type: "symlink", path: applet, target: "/bin/busybox" });
  }
  return entries;
}
