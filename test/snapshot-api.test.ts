// PUT /snapshot/create and PUT /snapshot/load end to end: a microVM running the counter probe (a MicroVM
// whose boot is the probe) is paused and snapshotted through its API; a new `kindling api` process loads it
// through curl, and the guest's console (the counter's low bytes, on kindling's stdout) goes on from the
// byte it stopped at. Firecracker's rules: create only while Paused; load only in a fresh process; without
// resume_vm the VM comes up Paused; a failed load leaves a fresh microVM behind that can still load.

import { afterAll, describe, expect } from "bun:test";
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { MicroVM } from "../src/microvm.ts";
import { bootProbe } from "../src/boot/probe.ts";
import type { LinuxBootOptions } from "../src/boot/linux.ts";
import { kvmTest } from "./support/kvm.ts";
import { curl, serveFake, spawnKindling } from "./support/api.ts";
import { encodeSnapshot, readSnapshotFile } from "../src/snapshot/format.ts";
import { mergeDiff } from "../src/snapshot/memory-file.ts";

const dir = mkdtempSync(join(tmpdir(), "kindling-snapshot-api-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** The guest's console, which PUT /serial sent to a file (kindling's stdout also carries its log lines). */
function consoleFile(path: string) {
  const read = () => (existsSync(path) ? readFileSync(path) : Buffer.alloc(0));
  return {
    get length() {
      return read().length;
    },
    all: read,
  };
}

/** A `kindling api` process on a fresh socket, ready to take requests. */
async function kindlingApi(name: string) {
  const sock = join(dir, `${name}.sock`);
  const p = spawnKindling(["api", "--api-sock", sock, "--id", name]);
  const err = new Response(p.stderr).text();
  for (let i = 0; i < 100 && !existsSync(sock); i++) await Bun.sleep(100);
  if (!existsSync(sock)) {
    p.kill("SIGKILL");
    throw new Error(`kindling api did not create ${sock}: ${await err}`);
  }
  const api = (m: string, path: string, body?: unknown) => curl(sock, m, path, body);
  // Where the console goes may be set before a load: it is not part of the machine.
  const serialPath = join(dir, `${name}.serial`);
  const set = await api("PUT", "/serial", { serial_out_path: serialPath });
  if (set.status !== 204) throw new Error(`PUT /serial: ${set.body}`);
  return { p, out: consoleFile(serialPath), api, stop: async () => (p.kill("SIGKILL"), await p.exited) };
}

let snapshot: { state: string; mem: string; lastByte: number } | undefined;

describe("snapshots through the API", () => {
  kvmTest("create: refused while running, made once paused", async () => {
    const out: number[] = [];
    // The boot source must name a file; the probe boot never reads it.
    const kernel = join(dir, "unused-kernel");
    writeFileSync(kernel, "");
    const vm = new MicroVM({ "boot-source": { kernel_image_path: kernel } }, {
      guestKind: "counter",
      boot: async (opts: LinuxBootOptions) => ({ vm: await bootProbe("counter", { consoleOutput: opts.consoleOutput }), devices: { virtio: [] } }),
    });
    vm.on("serial", (b) => out.push(...b));
    const { server, call } = await serveFake(vm, dir);
    try {
      expect((await call("PUT", "/actions", { action_type: "InstanceStart" })).status).toBe(204);
      while (out.length < 500) await Bun.sleep(5);
      const state = join(dir, "counter.state");
      const mem = join(dir, "counter.mem");
      const running = await call("PUT", "/snapshot/create", { snapshot_path: state, mem_file_path: mem });
      expect(running.status).toBe(400);
      expect(running.text).toMatch(/must be Paused/);
      expect(existsSync(state)).toBe(false);
      expect((await call("PATCH", "/vm", { state: "Paused" })).status).toBe(204);
      const bad = await call("PUT", "/snapshot/create", { snapshot_path: state, mem_file_path: mem, snapshot_type: "Diff" });
      expect(bad.text).toMatch(/Diff snapshot needs dirty-page tracking/);
      expect(await call("PUT", "/snapshot/create", { snapshot_path: state, mem_file_path: mem, snapshot_type: "Full" })).toEqual({ status: 204, json: undefined, text: "" });
      await Bun.sleep(50);
      snapshot = { state, mem, lastByte: out.at(-1)! };
    } finally {
      await vm.stop();
      server.close();
    }
  }, 30_000);

  kvmTest("load in a new kindling api process through curl with resume_vm: the console goes on from the same byte", async () => {
    const k = await kindlingApi("load-resume");
    try {
      const r = await k.api("PUT", "/snapshot/load", { snapshot_path: snapshot!.state, mem_backend: { backend_type: "File", backend_path: snapshot!.mem }, resume_vm: true });
      expect(r).toEqual({ status: 204, body: "" });
      expect(JSON.parse((await k.api("GET", "/")).body).state).toBe("Running");
      for (let i = 0; i < 100 && k.out.length < 10; i++) await Bun.sleep(20);
      const bytes = k.out.all();
      expect(bytes.length).toBeGreaterThanOrEqual(10);
      expect([...bytes.subarray(0, 5)]).toEqual([1, 2, 3, 4, 5].map((i) => (snapshot!.lastByte + i) & 0xff));
      // Only a fresh microVM loads.
      const again = await k.api("PUT", "/snapshot/load", { snapshot_path: snapshot!.state, mem_file_path: snapshot!.mem });
      expect(again.status).toBe(400);
      expect(again.body).toMatch(/only be configured before the microVM starts/);
    } finally {
      await k.stop();
    }
  }, 30_000);

  kvmTest("a failed load leaves a fresh microVM; without resume_vm a load comes up Paused", async () => {
    const k = await kindlingApi("load-paused");
    try {
      const corrupt = join(dir, "corrupt.state");
      const bytes = new Uint8Array(readFileSync(snapshot!.state));
      bytes[bytes.length - 10]! ^= 0x40;
      writeFileSync(corrupt, bytes);
      const bad = await k.api("PUT", "/snapshot/load", { snapshot_path: corrupt, mem_file_path: snapshot!.mem, resume_vm: true });
      expect(bad.status).toBe(400);
      expect(bad.body).toMatch(/CORRUPTED/);
      const uffd = await k.api("PUT", "/snapshot/load", { snapshot_path: snapshot!.state, mem_backend: { backend_type: "Uffd", backend_path: "/x" } });
      expect(uffd.body).toMatch(/Uffd is not supported/);
      expect(JSON.parse((await k.api("GET", "/")).body).state).toBe("Not started");
      expect(k.out.length).toBe(0); // nothing ran

      expect(await k.api("PUT", "/snapshot/load", { snapshot_path: snapshot!.state, mem_file_path: snapshot!.mem })).toEqual({ status: 204, body: "" });
      expect(JSON.parse((await k.api("GET", "/")).body).state).toBe("Paused");
      await Bun.sleep(200);
      expect(k.out.length).toBe(0); // Paused: the guest has not run
      expect((await k.api("PATCH", "/vm", { state: "Resumed" })).status).toBe(204);
      for (let i = 0; i < 100 && k.out.length < 3; i++) await Bun.sleep(20);
      expect(k.out.all()[0]).toBe((snapshot!.lastByte + 1) & 0xff);
    } finally {
      await k.stop();
    }
  }, 30_000);

  kvmTest("load after configuring anything but the logger and metrics is refused", async () => {
    const k = await kindlingApi("load-configured");
    try {
      expect((await k.api("PUT", "/machine-config", { vcpu_count: 1, mem_size_mib: 64 })).status).toBe(204);
      const r = await k.api("PUT", "/snapshot/load", { snapshot_path: snapshot!.state, mem_file_path: snapshot!.mem });
      expect(r.status).toBe(400);
      expect(r.body).toMatch(/has been configured/);
    } finally {
      await k.stop();
    }
  }, 30_000);

  kvmTest("kindling snapshot load|create from scripts: a corrupted file exits 2 naming it; load, then snapshot the loaded VM again", async () => {
    const corrupt = join(dir, "cli-corrupt.state");
    const bytes = new Uint8Array(readFileSync(snapshot!.state));
    bytes[100]! ^= 1;
    writeFileSync(corrupt, bytes);
    const bad = spawnKindling(["snapshot", "load", "--snapshot", corrupt, "--mem", snapshot!.mem]);
    expect(await bad.exited).toBe(2);
    expect(await new Response(bad.stderr).text()).toMatch(/CORRUPTED/);

    const sock = join(dir, "cli.sock");
    const loaded = spawnKindling(["snapshot", "load", "--snapshot", snapshot!.state, "--mem", snapshot!.mem, "--resume", "--api-sock", sock]);
    try {
      for (let i = 0; i < 100 && !existsSync(sock); i++) await Bun.sleep(50);
      for (let i = 0; i < 100 && JSON.parse((await curl(sock, "GET", "/")).body).state !== "Running"; i++) await Bun.sleep(50);
      const again = { state: join(dir, "again.state"), mem: join(dir, "again.mem") };
      const create = spawnKindling(["snapshot", "create", "--api-sock", sock, "--snapshot", again.state, "--mem", again.mem, "--pause"]);
      expect(await create.exited, await new Response(create.stderr).text()).toBe(0);
      expect(existsSync(again.state) && existsSync(again.mem)).toBe(true);
      expect(JSON.parse((await curl(sock, "GET", "/")).body).state).toBe("Paused");
    } finally {
      loaded.kill("SIGKILL");
      await loaded.exited;
    }
  }, 30_000);

  kvmTest("devices on load: a disk of another size, an override naming no device, are refused by name and leave a fresh microVM", async () => {
    const base = readSnapshotFile(snapshot!.state);
    const disk = join(dir, "disk.img");
    writeFileSync(disk, new Uint8Array(8192));
    // The recorded machine says the snapshot had this disk at 4096 bytes; it is 8192 now.
    const withDisk = structuredClone(base);
    (withDisk.machine.description as { machine: { drives: unknown[] } }).machine.drives = [{ id: "data", path: disk, readOnly: true, size: 4096 }];
    const changed = join(dir, "changed-disk.state");
    writeFileSync(changed, encodeSnapshot(withDisk));
    const cases: [unknown, RegExp][] = [
      [{ snapshot_path: changed, mem_file_path: snapshot!.mem }, /INCOMPATIBLE: drive data: .* is 8192 bytes, the snapshot's disk was 4096/],
      [{ snapshot_path: snapshot!.state, mem_file_path: snapshot!.mem, network_overrides: [{ iface_id: "eth0", host_dev_name: "tap9" }] }, /network_overrides: the snapshot has no network interface eth0/],
      [{ snapshot_path: snapshot!.state, mem_file_path: snapshot!.mem, vsock_override: { uds_path: "/tmp/v.sock" } }, /vsock_override: the snapshot has no vsock device/],
    ];
    for (const [body, message] of cases) {
      const vm = new MicroVM();
      const err = await vm.loadSnapshot(body).catch((e: Error) => e);
      expect((err as Error).message).toMatch(message);
      expect(vm.state).toBe("Not started");
    }
  }, 30_000);

  kvmTest("a load with track_dirty_pages can make a Diff snapshot: a few pages, and merged onto the loaded memory it loads", async () => {
    const vm = new MicroVM();
    const out: number[] = [];
    vm.on("serial", (b) => out.push(...b));
    await vm.loadSnapshot({ snapshot_path: snapshot!.state, mem_file_path: snapshot!.mem, track_dirty_pages: true, resume_vm: true });
    while (out.length < 200) await Bun.sleep(5);
    vm.pause();
    await Bun.sleep(20);
    const diff = { state: join(dir, "diff.state"), mem: join(dir, "diff.mem") };
    await vm.createSnapshot({ snapshot_path: diff.state, mem_file_path: diff.mem, snapshot_type: "Diff" });
    const last = out.at(-1)!;
    await vm.stop();
    const pages = readSnapshotFile(diff.state).memory.pages!;
    const count = pages.reduce((n, [, c]) => n + c, 0);
    expect(count).toBeGreaterThan(0);
    expect(count).toBeLessThan(16); // the counter's page, the stack, the UART's: not the guest's 16 MiB
    const merged = join(dir, "merged.mem");
    copyFileSync(snapshot!.mem, merged);
    mergeDiff(merged, diff.mem, pages);
    const again = new MicroVM();
    const out2: number[] = [];
    again.on("serial", (b) => out2.push(...b));
    await again.loadSnapshot({ snapshot_path: diff.state, mem_file_path: merged, resume_vm: true });
    while (out2.length < 3) await Bun.sleep(5);
    await again.stop();
    expect(out2[0]).toBe((last + 1) & 0xff);
  }, 30_000);
});
