// Writes rootfs.ext4: a 64 MiB ext4 image holding the same userland as the initramfs, for booting with
// root=/dev/vda from a virtio-blk disk.
//
// No loop mount and no root privileges: the entries are laid out in a staging directory and
// `mkfs.ext4 -d <dir>` (e2fsprogs) copies that tree into the new filesystem. Two things a plain user
// cannot put in a directory are then done inside the image with debugfs: the /dev/console device node,
// and root ownership of every file (mkfs.ext4 -d copies the builder's uid/gid).

import { chmodSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import type { CpioEntry } from "./cpio.ts";
import { userlandEntries } from "./userland.ts";

export const ROOTFS_SIZE_MIB = 64;
/** A fixed filesystem UUID and directory-hash seed, so that two builds differ only in timestamps. */
const ROOTFS_UUID = "6b696e64-6c69-6e67-2d72-6f6f74667321"; // "kindling-rootfs!" in hex
const ROOTFS_HASH_SEED = "6b696e64-6c69-6e67-2d68-617368736421";

/** Runs a command; returns its stderr. */
function run(cmd: string[], stdin?: string): string {
  const input = stdin === undefined ? "ignore" : new TextEncoder().encode(stdin);
  const r = Bun.spawnSync(cmd, { stdin: input, stdout: "pipe", stderr: "pipe" });
  const stderr = r.stderr.toString();
  if (r.exitCode !== 0) throw new Error(`\`${cmd.join(" ")}\` failed (exit ${r.exitCode}):\n${stderr}${r.stdout.toString()}`);
  return stderr;
}

/** Lays the entries out under `dir`; returns the debugfs commands for what a directory cannot hold. */
function stage(entries: readonly CpioEntry[], dir: string): string[] {
  const debugfs: string[] = [];
  for (const e of entries) {
    const host = join(dir, e.path);
    const guest = `/${e.path}`;
    switch (e.type) {
      case "dir":
        mkdirSync(host);
        chmodSync(host, e.mode); // chmod, not mkdir's mode: the umask would clear bits such as /tmp's 01777
        break;
      case "file":
        writeFileSync(host, e.data);
        chmodSync(host, e.mode);
        break;
      case "symlink":
        symlinkSync(e.target, host);
        break;
      case "char":
      case "block":
        // debugfs `mknod` takes a name in its current directory; `sif` then sets the permission bits.
        debugfs.push(`cd ${dirname(guest)}`, `mknod ${e.path.split("/").pop()} ${e.type === "char" ? "c" : "b"} ${e.major} ${e.minor}`, "cd /");
        debugfs.push(`sif ${guest} mode 0${((e.type === "char" ? 0o020000 : 0o060000) | e.mode).toString(8)}`);
        break;
    }
    debugfs.push(`sif ${guest} uid 0`, `sif ${guest} gid 0`);
  }
  return debugfs;
}

/** Builds the image at `path` (replacing any file there). */
export function writeRootfs(path: string): void {
  const staging = mkdtempSync(join(tmpdir(), "kindling-rootfs-"));
  try {
    const debugfsCommands = stage(userlandEntries(), staging);
    rmSync(path, { force: true });
    run([
      "mkfs.ext4", "-q", "-F",
      "-d", staging, // populate from this directory
      "-L", "kindling-root",
      "-U", ROOTFS_UUID,
      "-E", `hash_seed=${ROOTFS_HASH_SEED},root_owner=0:0`,
      path, `${ROOTFS_SIZE_MIB}M`,
    ]);
    // -w: open read-write; -f -: read commands from stdin.
    const stderr = run(["debugfs", "-w", "-f", "-", path], debugfsCommands.join("\n") + "\n");
    // debugfs exits 0 even when a command fails; its errors are the stderr lines after its version banner.
    const errors = stderr.split("\n").filter((line) => line.trim() !== "" && !/^debugfs \d/.test(line));
    if (errors.length > 0) throw new Error(`debugfs could not finish ${path}:\n${errors.join("\n")}`);
  } finally {
    rmSync(staging, { recursive: true, force: true });
  }
}
