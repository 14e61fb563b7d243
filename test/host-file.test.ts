// Host paths from API clients and config files (src/host-file.ts): no symlinks (O_NOFOLLOW), type and size
// checked on the opened descriptor, never a device for an output, drive images locked against a second
// read-write user.

import { afterAll, describe, expect, test } from "bun:test";
import { closeSync, mkdtempSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { FileBlockBackend } from "../src/devices/virtio/block.ts";
import { openAppend } from "../src/config/logger.ts";
import { openDriveImage, openOutput, readImage } from "../src/host-file.ts";
import { MicroVM } from "../src/microvm.ts";

const dir = mkdtempSync(join(tmpdir(), "kindling-host-file-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const file = (name: string, bytes: number) => {
  const p = join(dir, name);
  writeFileSync(p, new Uint8Array(bytes));
  return p;
};
const link = (name: string, target: string) => {
  const p = join(dir, name);
  symlinkSync(target, p);
  return p;
};

/** A block device node on this host (an unbound loop device opens fine), or undefined. */
function someBlockDevice(): string | undefined {
  for (const name of readdirSync("/dev")) {
    try {
      if (statSync(`/dev/${name}`).isBlockDevice()) return `/dev/${name}`;
    } catch {
      // Vanished or unreadable.
    }
  }
  return undefined;
}

describe("outputs: log, metrics, serial", () => {
  test("a regular file is created mode 0600 and opened for appending", () => {
    const p = join(dir, "out.log");
    closeSync(openOutput("logger.log_path", p));
    expect(statSync(p).mode & 0o777).toBe(0o600);
  });

  test("a symbolic link is refused, even to a harmless file (O_NOFOLLOW)", () => {
    const target = file("target.log", 0);
    expect(() => openOutput("logger.log_path", link("link.log", target))).toThrow("is a symbolic link");
    // A dangling link is not followed to create its target either.
    expect(() => openOutput("serial.serial_out_path", link("dangling.out", join(dir, "created-through-link")))).toThrow("is a symbolic link");
    expect(() => statSync(join(dir, "created-through-link"))).toThrow();
  });

  test("a block or character device is refused, and the API answers with a MicroVMError", () => {
    const blk = someBlockDevice();
    if (blk) expect(() => openOutput("serial.serial_out_path", blk)).toThrow(`${blk} is a block device, not a regular file or a named pipe`);
    expect(() => openOutput("metrics.metrics_path", "/dev/null")).toThrow("/dev/null is a character device, not a regular file or a named pipe");
    expect(() => openAppend("logger.log_path", "/dev/null")).toThrow(expect.objectContaining({ name: "MicroVMError" }));
    const vm = new MicroVM();
    expect(() => vm.setSerial({ serial_out_path: blk ?? "/dev/null" })).toThrow("not a regular file or a named pipe");
  });

  test("a named pipe with a reader is fine; without one, a clear error instead of a blocked open", async () => {
    const fifo = join(dir, "fifo");
    expect(Bun.spawnSync(["mkfifo", fifo]).exitCode).toBe(0);
    expect(() => openOutput("logger.log_path", fifo)).toThrow("a named pipe with no reader");
    const reader = Bun.spawn(["cat", fifo], { stdout: "pipe" });
    // `cat` opens the pipe: retry until it has.
    let fd: number | undefined;
    for (let i = 0; i < 200 && fd === undefined; i++) {
      try {
        fd = openOutput("logger.log_path", fifo);
      } catch {
        await Bun.sleep(5);
      }
    }
    expect(fd).toBeNumber();
    closeSync(fd!);
    await reader.exited;
  });
});

describe("kernel and initrd", () => {
  test("read whole from the opened descriptor, up to a cap", () => {
    expect(readImage("kernel", file("k", 4096), 4096).byteLength).toBe(4096);
    expect(() => readImage("kernel", file("big", 4097), 4096)).toThrow("is 4097 bytes, more than the 4096-byte limit");
  });

  test("symbolic links, directories and devices are refused; a named pipe does not block", () => {
    expect(() => readImage("kernel", link("k-link", file("k2", 16)), 1 << 20)).toThrow("is a symbolic link");
    expect(() => readImage("initrd", dir, 1 << 20)).toThrow("is a directory, not a regular file");
    expect(() => readImage("initrd", "/dev/zero", 1 << 20)).toThrow("is a character device, not a regular file");
    const fifo = join(dir, "kfifo");
    expect(Bun.spawnSync(["mkfifo", fifo]).exitCode).toBe(0);
    expect(() => readImage("kernel", fifo, 1 << 20)).toThrow("is a named pipe, not a regular file");
  });
});

describe("drive images", () => {
  test("regular files only; symbolic links and devices refused", () => {
    expect(() => openDriveImage("drive", link("d-link", file("d0", 512)), false)).toThrow("is a symbolic link");
    expect(() => new FileBlockBackend(link("d-link2", file("d1", 512)))).toThrow("is a symbolic link");
    const blk = someBlockDevice();
    if (blk) expect(() => openDriveImage("drive", blk, true)).toThrow("is a block device, not a regular file");
    expect(() => openDriveImage("drive", "/dev/zero", true)).toThrow("is a character device, not a regular file");
  });

  test("the API refuses a symbolic link at once (PUT /drives, /boot-source), before anything is opened", () => {
    const vm = new MicroVM();
    const target = file("real.img", 512);
    expect(() => vm.putDrive({ drive_id: "d", is_root_device: true, path_on_host: link("drive-link.img", target) })).toThrow("is a symbolic link");
    expect(() => vm.setBootSource({ kernel_image_path: link("kernel-link", file("k3", 64)) })).toThrow("is a symbolic link");
  });

  test("an image open read-write cannot be opened again, read-write or read-only, until closed (flock)", () => {
    const img = file("shared.img", 4096);
    const a = new FileBlockBackend(img, false);
    expect(() => new FileBlockBackend(img, false)).toThrow("is in use by another VM or program");
    expect(() => new FileBlockBackend(img, true)).toThrow("is in use by another VM or program read-write");
    a.close();
    const b = new FileBlockBackend(img, false);
    b.close();
  });

  test("read-only users share an image; a read-write user waits for them to close", () => {
    const img = file("ro.img", 4096);
    const r1 = new FileBlockBackend(img, true);
    const r2 = new FileBlockBackend(img, true);
    expect(() => new FileBlockBackend(img, false)).toThrow("is in use");
    r1.close();
    r2.close();
    new FileBlockBackend(img, false).close();
  });

  test("another process's lock counts too", async () => {
    const img = file("other.img", 4096);
    const holder = Bun.spawn(["flock", "-x", img, "sleep", "5"]);
    try {
      for (let i = 0; i < 200; i++) {
        try {
          new FileBlockBackend(img, false).close();
          await Bun.sleep(5);
        } catch (e) {
          expect((e as Error).message).toContain("is in use by another VM or program");
          return;
        }
      }
      throw new Error("the other process's lock was never seen");
    } finally {
      holder.kill();
      await holder.exited;
    }
  });
});
