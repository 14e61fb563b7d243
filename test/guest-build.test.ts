// The default guest (guest/build.ts): what buildGuest() leaves in the cache. The first run on a machine
// builds the kernel (minutes); later runs find it in the cache.

import { describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { isAbsolute, join } from "node:path";
import { boot_params, HDRS_MAGIC } from "../src/arch/x86_64/boot-params.ts";
import { BOOT_TIMER_START } from "../src/arch/x86_64/layout.ts";
import { StructView } from "../src/kvm/struct.ts";
import { buildGuest, guestArtifactsIfBuilt } from "../guest/build.ts";
import { buildAtomically, withBuildLock } from "../guest/cache.ts";
import { KERNEL_FRAGMENT } from "../guest/kernel.ts";
import { droppedOptions } from "../guest/kconfig.ts";
import { BUSYBOX_PATH, checkBootTimerAddress, INIT_SCRIPT } from "../guest/userland.ts";

const BUILD_TIMEOUT_MS = 15 * 60 * 1000;

/** Just enough of a newc reader to list members (test/guest-cpio.test.ts checks the format strictly). */
function listNewc(buf: Uint8Array): Map<string, { mode: number; rmaj: number; rmin: number; data: Uint8Array }> {
  const text = (a: number, b: number) => new TextDecoder().decode(buf.subarray(a, b));
  const field = (at: number, i: number) => parseInt(text(at + 6 + i * 8, at + 14 + i * 8), 16);
  const members = new Map();
  let off = 0;
  for (;;) {
    if (text(off, off + 6) !== "070701") throw new Error(`no newc magic at ${off}`);
    const [mode, filesize, rmaj, rmin, namesize] = [field(off, 1), field(off, 6), field(off, 9), field(off, 10), field(off, 11)];
    const name = text(off + 110, off + 110 + namesize - 1);
    const dataStart = (off + 110 + namesize + 3) & ~3;
    if (name === "TRAILER!!!") return members;
    members.set(name, { mode, rmaj, rmin, data: buf.subarray(dataStart, dataStart + filesize) });
    off = (dataStart + filesize + 3) & ~3;
  }
}

function run(cmd: string[]): string {
  const r = Bun.spawnSync(cmd, { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`${cmd.join(" ")} failed: ${r.stderr.toString()}`);
  return r.stdout.toString();
}

describe("kconfig check", () => {
  test("reports options kconfig dropped or changed, including 'is not set' ones", () => {
    const fragment = "# comment\nCONFIG_A=y\nCONFIG_B=y\n# CONFIG_C is not set\nCONFIG_D=100\n";
    const dotconfig = "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=y\nCONFIG_D=250\n";
    expect(droppedOptions(fragment, dotconfig)).toEqual([
      { name: "CONFIG_B", wanted: "y", got: "n" },
      { name: "CONFIG_C", wanted: "n", got: "y" },
      { name: "CONFIG_D", wanted: "100", got: "250" },
    ]);
    // An option missing from .config altogether (its menu is hidden) counts as "n".
    expect(droppedOptions("CONFIG_E=y\n# CONFIG_F is not set\n", "")).toEqual([{ name: "CONFIG_E", wanted: "y", got: "n" }]);
  });
});

describe("cache", () => {
  test("builds hold the lock one at a time; a lock left by a dead process is taken over", async () => {
    const dir = mkdtempSync(join(tmpdir(), "kindling-lock-"));
    try {
      const events: string[] = [];
      const job = (name: string) => withBuildLock(dir, () => {}, async () => {
        events.push(`${name} start`);
        await Bun.sleep(50);
        events.push(`${name} end`);
        return name;
      });
      expect(await Promise.all([job("a"), job("b")])).toEqual(["a", "b"]);
      expect(events).toEqual(["a start", "a end", "b start", "b end"]);
      expect(existsSync(join(dir, "build.lock"))).toBe(false);

      const dead = Bun.spawnSync(["true"]).pid; // exited and reaped: nobody has this pid now
      writeFileSync(join(dir, "build.lock"), String(dead));
      expect(await job("c")).toBe("c");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("a build is visible under its final name only once it has finished", async () => {
    const dir = mkdtempSync(join(tmpdir(), "kindling-atomic-"));
    try {
      const final = join(dir, "abc");
      await expect(buildAtomically(final, async (tmp) => {
        writeFileSync(join(tmp, "half"), "x");
        throw new Error("compiler crashed");
      })).rejects.toThrow("compiler crashed");
      expect(existsSync(final)).toBe(false);
      await buildAtomically(final, async (tmp) => {
        expect(existsSync(final)).toBe(false);
        writeFileSync(join(tmp, "whole"), "y");
      });
      expect(readFileSync(join(final, "whole"), "utf8")).toBe("y");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("init.sh", () => {
  test("writes the boot timer at BOOT_TIMER_START, and the build refuses any other address", () => {
    const script = readFileSync(INIT_SCRIPT, "utf8");
    expect(() => checkBootTimerAddress(script)).not.toThrow();
    expect(() => checkBootTimerAddress(script.replace(/^devmem 0x\w+/m, "devmem 0xd0000000"))).toThrow(/BOOT_TIMER_START/);
    expect(() => checkBootTimerAddress("#!/bin/sh\n")).toThrow(/no "devmem/);
    expect(script).toContain(`devmem 0x${BOOT_TIMER_START.toString(16)} 8 123`);
    expect(script).toContain('echo "kindling: init ready"');
  });
});

describe("buildGuest", () => {
  test(
    "builds (or finds) vmlinux, bzImage, .config, initramfs and rootfs",
    async () => {
      const lines: string[] = [];
      const guest = await buildGuest({ log: (l) => lines.push(l) });
      for (const path of Object.values(guest)) expect(isAbsolute(path)).toBe(true);
      expect(guestArtifactsIfBuilt()).toEqual(guest);

      // vmlinux: an ELF64 x86-64 executable, as readelf (binutils, installed with gcc) describes it.
      const elf = run(["readelf", "-h", guest.vmlinux]);
      expect(elf).toMatch(/Class:\s+ELF64/);
      expect(elf).toMatch(/Type:\s+EXEC/);
      expect(elf).toMatch(/Machine:\s+Advanced Micro Devices X86-64/);

      // bzImage: a bzImage starts like a boot_params page; its setup header carries "HdrS" (boot.rst).
      const bz = new Uint8Array(readFileSync(guest.bzImage));
      expect(boot_params.offsetOf("hdr.header")).toBe(0x202);
      expect(new StructView(boot_params, bz.subarray(0, boot_params.size)).get("hdr.header")).toBe(HDRS_MAGIC);

      // .config: every line of the fragment, verbatim. A "not set" line may be missing when its menu is
      // hidden, which kconfig treats the same.
      const config = new Set(readFileSync(guest.config, "utf8").split("\n"));
      const wanted = readFileSync(KERNEL_FRAGMENT, "utf8").split("\n").filter((l) => /^(CONFIG_|# CONFIG_\w+ is not set)/.test(l));
      expect(wanted.length).toBeGreaterThan(50);
      const missing = wanted.filter((line) => {
        if (config.has(line)) return false;
        const unset = /^# (CONFIG_\w+) is not set$/.exec(line);
        return !unset || [...config].some((c) => c.startsWith(`${unset[1]}=`));
      });
      expect(missing).toEqual([]);

      // initramfs: /init is init.sh, executable; busybox; the console node the kernel opens before devtmpfs.
      const members = listNewc(new Uint8Array(readFileSync(guest.initramfs)));
      const init = members.get("init")!;
      expect(init.mode).toBe(0o100755);
      expect(Buffer.from(init.data).equals(readFileSync(INIT_SCRIPT))).toBe(true);
      expect(Buffer.from(members.get("bin/busybox")!.data).equals(readFileSync(BUSYBOX_PATH))).toBe(true);
      expect(members.get("bin/busybox")!.mode).toBe(0o100755);
      const consoleNode = members.get("dev/console")!;
      expect([consoleNode.mode, consoleNode.rmaj, consoleNode.rmin]).toEqual([0o020600, 5, 1]);
      // The applets init.sh runs, at the paths busybox --list-full gives them.
      const used = ["bin/sh", "bin/mount", "bin/grep", "bin/hostname", "sbin/devmem", "bin/cat", "bin/base64",
        "usr/bin/setsid", "bin/cttyhack", "sbin/reboot", "bin/sleep"];
      for (const applet of used) {
        expect([applet, new TextDecoder().decode(members.get(applet)?.data)]).toEqual([applet, "/bin/busybox"]);
      }

      // rootfs.ext4: 64 MiB, and the same tree inside, as debugfs (e2fsprogs) reads it.
      expect(readFileSync(guest.rootfs).length).toBe(64 * 1024 * 1024);
      expect(run(["debugfs", "-R", "ls -l /", guest.rootfs])).toMatch(/^\s*\d+\s+40755 .* bin\s*$/m);
      expect(run(["debugfs", "-R", "ls -l /sbin", guest.rootfs])).toMatch(/^\s*\d+\s+120777 .* init\s*$/m);
      expect(run(["debugfs", "-R", "ls -l /dev", guest.rootfs])).toMatch(/^\s*\d+\s+20600 .* console\s*$/m);
      expect(run(["debugfs", "-R", "cat /init", guest.rootfs])).toBe(readFileSync(INIT_SCRIPT, "utf8"));
    },
    BUILD_TIMEOUT_MS,
  );
});
