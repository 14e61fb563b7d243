// A microVM driven end to end only through `curl --unix-socket`, in the order of Firecracker's getting-started
// guide: PUT /logger, PUT /boot-source, PUT /drives/rootfs, PUT /machine-config, PUT /actions InstanceStart.
// The kernel's banner and command line on the serial console show it booting; then PATCH /vm pauses it
// (the console stops growing) and resumes it (it grows again). Where the host emulates guest kernel code a
// boot takes minutes, so the test stops once the command line is printed.

import { afterAll, describe, expect } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildGuest, guestArtifactsIfBuilt } from "../guest/build.ts";
import { EXIT } from "../src/cli/main.ts";
import { kvmTest } from "./support/kvm.ts";
import { collect, curl, spawnKindling } from "./support/api.ts";

const dir = mkdtempSync(join(tmpdir(), "kindling-e2e-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("kindling api driven through curl", () => {
  kvmTest(
    "configure, boot to the kernel banner, pause, resume, stop",
    async () => {
      const g = guestArtifactsIfBuilt() ?? (await buildGuest({ log: () => {} }));
      const sock = join(dir, "api.sock");
      const log = join(dir, "kindling.log");
      const p = spawnKindling(["api", "--api-sock", sock, "--id", "e2e-test"]);
      const out = collect(p.stdout);
      const err = collect(p.stderr);
      const deadline = setTimeout(() => p.kill("SIGKILL"), 220_000);
      const report = () => `--- stdout (last 3000) ---\n${out.text.slice(-3000)}\n--- stderr ---\n${err.text.slice(-3000)}`;
      try {
        for (let i = 0; i < 100 && !existsSync(sock); i++) await Bun.sleep(100);
        expect(existsSync(sock), report()).toBe(true);
        const api = (method: string, path: string, body?: unknown) => curl(sock, method, path, body);

        // Firecracker's getting-started order.
        const bootArgs = "console=ttyS0 reboot=k panic=1 pci=off";
        const steps: [string, string, unknown][] = [
          ["PUT", "/logger", { log_path: log, level: "Info", show_level: true }],
          ["PUT", "/boot-source", { kernel_image_path: g.vmlinux, boot_args: bootArgs }],
          ["PUT", "/drives/rootfs", { drive_id: "rootfs", path_on_host: g.rootfs, is_root_device: true, is_read_only: true }],
          ["PUT", "/machine-config", { vcpu_count: 1, mem_size_mib: 128 }],
          ["PUT", "/actions", { action_type: "InstanceStart" }],
        ];
        for (const [method, path, body] of steps) expect(await api(method, path, body), `${method} ${path}\n${report()}`).toEqual({ status: 204, body: "" });
        expect(JSON.parse((await api("GET", "/")).body)).toEqual({ app_name: "kindling", id: "e2e-test", state: "Running", vmm_version: expect.any(String) });
        expect((await api("PUT", "/boot-source", { kernel_image_path: g.vmlinux })).status).toBe(400); // pre-boot only

        // The kernel boots: its banner, then our command line with the root drive as /dev/vda.
        expect(await out.until(/Command line: [^\n]*\n/, 180_000), report()).toBe(true);
        expect(out.text, report()).toMatch(/Linux version 6\.1\.\d+/);
        expect(out.text, report()).toMatch(new RegExp(`Command line: ${bootArgs} root=/dev/vda ro `));

        // Paused: the console stops growing. Resumed: it grows again.
        expect(await api("PATCH", "/vm", { state: "Paused" })).toEqual({ status: 204, body: "" });
        expect(JSON.parse((await api("GET", "/")).body).state).toBe("Paused");
        await Bun.sleep(500); // bytes already on their way through the pipe
        const atPause = out.text.length;
        await Bun.sleep(3000);
        expect(out.text.length, "the console grew while paused").toBe(atPause);
        expect(await api("PATCH", "/vm", { state: "Resumed" })).toEqual({ status: 204, body: "" });
        expect(await out.until((t) => t.length > atPause, 60_000), `no console output after resume\n${report()}`).toBe(true);

        const config = JSON.parse((await api("GET", "/vm/config")).body);
        expect(config).toMatchObject({
          "boot-source": { kernel_image_path: g.vmlinux, boot_args: bootArgs },
          drives: [{ drive_id: "rootfs", path_on_host: g.rootfs, is_root_device: true, is_read_only: true }],
          "machine-config": { vcpu_count: 1, mem_size_mib: 128 },
          logger: { log_path: log, level: "Info" },
        });

        // Stop: kindling ends the VM, removes its socket and exits 0.
        p.kill("SIGTERM");
        expect(await p.exited, report()).toBe(EXIT.OK);
        expect(existsSync(sock)).toBe(false);
        const logText = readFileSync(log, "utf8");
        for (const line of ["[e2e-test:INFO] PUT /actions -> 204", "[e2e-test:INFO] microVM e2e-test paused", "[e2e-test:INFO] microVM e2e-test resumed", "ended: stopped"]) {
          expect(logText).toContain(line);
        }
      } finally {
        clearTimeout(deadline);
        p.kill("SIGKILL");
      }
    },
    240_000,
  );
});
