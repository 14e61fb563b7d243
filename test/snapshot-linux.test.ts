// A Linux guest at its shell, snapshotted and loaded in a new `kindling api` process through the API with
// resume_vm: a command typed after the load runs, and reads its root disk through virtio-blk. Slow where
// the host emulates guest kernel code (the boot takes minutes there; the load does not boot at all).

import { afterAll, describe, expect } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildGuest } from "../guest/build.ts";
import { kvmTest } from "./support/kvm.ts";
import { ROOT } from "./support/api.ts";

const dir = mkdtempSync(join(tmpdir(), "kindling-snapshot-linux-"));
const procs: ReturnType<typeof Bun.spawn>[] = [];
afterAll(() => {
  for (const p of procs) p.kill("SIGKILL");
  rmSync(dir, { recursive: true, force: true });
});

/** `kindling api` with its stdin a pipe (the guest's console input) and the console sent to a file. */
async function kindlingApi(name: string) {
  const sock = join(dir, `${name}.sock`);
  const serial = join(dir, `${name}.serial`);
  const p = Bun.spawn([process.execPath, "src/cli/main.ts", "api", "--api-sock", sock], { cwd: ROOT, stdin: "pipe", stdout: "ignore", stderr: "pipe" });
  procs.push(p);
  for (let i = 0; i < 100 && !existsSync(sock); i++) await Bun.sleep(100);
  const call = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(`http://localhost${path}`, { method, unix: sock, body: body === undefined ? undefined : JSON.stringify(body) } as RequestInit);
    return { status: res.status, body: await res.text() };
  };
  expect(await call("PUT", "/serial", { serial_out_path: serial })).toEqual({ status: 204, body: "" });
  return {
    call,
    console: () => (existsSync(serial) ? readFileSync(serial, "latin1") : ""),
    type: (text: string) => void (p.stdin.write(text), p.stdin.flush()),
    kill: async () => (p.kill("SIGKILL"), await p.exited),
  };
}

async function until(test: () => boolean, ms: number, what: string, show: () => string): Promise<void> {
  const end = Date.now() + ms;
  while (!test()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}; console:\n${show().slice(-2000)}`);
    await Bun.sleep(250);
  }
}

describe("a Linux guest at its shell", () => {
  kvmTest("snapshot, kill the VMM, load in a new kindling api with resume_vm: a command typed after the load runs", async () => {
    const g = await buildGuest({ log: () => {} });
    const state = join(dir, "linux.state");
    const mem = join(dir, "linux.mem");

    const a = await kindlingApi("boot");
    const ok = { status: 204, body: "" };
    expect(await a.call("PUT", "/boot-source", { kernel_image_path: g.vmlinux, boot_args: "console=ttyS0 reboot=k panic=1 pci=off" })).toEqual(ok);
    expect(await a.call("PUT", "/drives/rootfs", { drive_id: "rootfs", path_on_host: g.rootfs, is_root_device: true, is_read_only: true })).toEqual(ok);
    expect(await a.call("PUT", "/machine-config", { vcpu_count: 1, mem_size_mib: 128 })).toEqual(ok);
    expect(await a.call("PUT", "/actions", { action_type: "InstanceStart" })).toEqual(ok);
    await until(() => a.console().includes("kindling: init ready"), 540_000, "init", a.console);
    // The shell is up once it answers.
    for (let i = 0; !a.console().includes("before-42"); i++) {
      if (i % 40 === 0) a.type("echo before-$((6*7))\n");
      await Bun.sleep(250);
      if (i > 1200) throw new Error(`the shell never answered:\n${a.console().slice(-2000)}`);
    }
    await Bun.sleep(1000);
    expect(await a.call("PATCH", "/vm", { state: "Paused" })).toEqual(ok);
    expect(await a.call("PUT", "/snapshot/create", { snapshot_path: state, mem_file_path: mem })).toEqual(ok);
    await a.kill();

    const b = await kindlingApi("load");
    expect(await b.call("PUT", "/snapshot/load", { snapshot_path: state, mem_backend: { backend_type: "File", backend_path: mem }, resume_vm: true })).toEqual(ok);
    expect(JSON.parse((await b.call("GET", "/")).body).state).toBe("Running");
    // The configuration came with the snapshot.
    expect(JSON.parse((await b.call("GET", "/vm/config")).body).drives[0].path_on_host).toBe(g.rootfs);
    // A command after the load; it reads the root disk (virtio-blk, through the restored queues) too.
    b.type("echo after-$((6*7)) $(dd if=/dev/vda bs=4096 skip=77 count=1 2>/dev/null | wc -c)\n");
    await until(() => b.console().includes("after-42 4096"), 180_000, "the command after the load", b.console);
    await b.kill();
  }, 900_000);
});
