// --config-file: Firecracker's FullVmConfiguration JSON, checked before anything starts (src/config.ts),
// and `kindling api --no-api --config-file` booting the VM it describes.

import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadConfigFile, parseConfig } from "../src/config/file.ts";
import { EXIT } from "../src/cli/main.ts";
import { buildGuest, guestArtifactsIfBuilt } from "../guest/build.ts";
import { kvmTest } from "./support/kvm.ts";
import { collect, spawnKindling } from "./support/api.ts";

const dir = mkdtempSync(join(tmpdir(), "kindling-config-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function configFile(name: string, content: unknown): string {
  const path = join(dir, name);
  writeFileSync(path, typeof content === "string" ? content : JSON.stringify(content, null, 2));
  return path;
}

describe("loadConfigFile", () => {
  test("accepts Firecracker's shape", () => {
    const c = {
      "boot-source": { kernel_image_path: "/k", boot_args: "console=ttyS0" },
      drives: [{ drive_id: "rootfs", path_on_host: "/r", is_root_device: true, is_read_only: false }],
      "machine-config": { vcpu_count: 2, mem_size_mib: 1024 },
      logger: { level: "debug", show_level: true },
      metrics: { metrics_path: "/m" },
      entropy: {},
    };
    expect(loadConfigFile(configFile("good.json", c))).toEqual(c as never);
    // The logger level is case-insensitive, as in Firecracker; the parsed form is canonical.
    expect(parseConfig(c).logger?.level).toBe("Debug");
  });

  test("names the file and the field of each problem", () => {
    const bad = configFile("bad.json", {
      "machine-config": { vcpu_count: 0, mem_size_mib: "lots" },
      drives: [{ drive_id: "rootfs", path_on_host: "/r" }],
      "boot-source": { kernel_image_path: "/k", initrd: "/i" },
    });
    let message = "";
    try {
      loadConfigFile(bad);
    } catch (e) {
      message = (e as Error).message;
    }
    expect(message).toStartWith(`${bad}: `);
    expect(message).toContain("machine-config.vcpu_count: must be 1..32");
    expect(message).toContain("machine-config.mem_size_mib: must be an integer");
    expect(message).toContain("drives[0].is_root_device: required");
    expect(message).toContain("boot-source.initrd: unknown field");
  });

  test("refuses what is not a configuration", () => {
    expect(() => loadConfigFile(join(dir, "missing.json"))).toThrow("missing.json: no such file");
    expect(() => loadConfigFile(configFile("syntax.json", '{"boot-source": {'))).toThrow("syntax.json: not valid JSON");
    expect(() => loadConfigFile(configFile("array.json", []))).toThrow("array.json: body: must be an object");
    expect(() => loadConfigFile(configFile("huge.json", " ".repeat(1024 * 1024 + 1)))).toThrow("more than a config file can be");
    expect(() => loadConfigFile(configFile("mmds.json", { "mmds-config": {} }))).toThrow("mmds-config.network_interfaces: required");
    expect(() => loadConfigFile(configFile("many.json", { drives: Array.from({ length: 33 }, (_, i) => ({ drive_id: `d${i}`, is_root_device: false })) }))).toThrow(
      "drives: must have at most 32 entries",
    );
  });
});

const kindling = spawnKindling;

describe("kindling api --no-api --config-file", () => {
  test("a config with an error is rejected before anything starts, naming the field", async () => {
    const log = join(dir, "never.log");
    const metrics = join(dir, "never.metrics");
    const bad = configFile("bad-run.json", {
      "boot-source": { kernel_image_path: join(dir, "no-such-vmlinux") },
      "machine-config": { vcpu_count: 1, mem_size_mib: 128 },
      logger: { log_path: log },
      metrics: { metrics_path: metrics },
    });
    const p = kindling(["api", "--no-api", "--config-file", bad]);
    const [code, stderr] = await Promise.all([p.exited, new Response(p.stderr).text()]);
    expect(code).toBe(EXIT.USAGE);
    expect(stderr).toContain("boot-source.kernel_image_path:");
    expect(stderr).toContain("no such file");
    // Nothing started: neither the log nor the metrics file was created.
    expect(existsSync(log)).toBe(false);
    expect(existsSync(metrics)).toBe(false);

    const shape = kindling(["run", "--config-file", configFile("bad-shape.json", { "machine-config": { vcpu_count: 64, mem_size_mib: 128 } })]);
    const [code2, stderr2] = await Promise.all([shape.exited, new Response(shape.stderr).text()]);
    expect(code2).toBe(EXIT.USAGE);
    expect(stderr2).toContain("machine-config.vcpu_count: must be 1..32");
  });

  test("--no-api needs --config-file", async () => {
    const p = kindling(["api", "--no-api"]);
    expect(await p.exited).toBe(EXIT.USAGE);
    expect(await new Response(p.stderr).text()).toContain("--no-api needs --config-file");
  });

  kvmTest(
    "boots the VM the file describes (kernel banner and command line on stdout), and stops cleanly on SIGTERM",
    async () => {
      const g = guestArtifactsIfBuilt() ?? (await buildGuest({ log: () => {} }));
      const path = configFile("vm.json", {
        "boot-source": { kernel_image_path: g.vmlinux, boot_args: "console=ttyS0 reboot=k panic=1 pci=off" },
        drives: [{ drive_id: "rootfs", path_on_host: g.rootfs, is_root_device: true, is_read_only: true }],
        "machine-config": { vcpu_count: 1, mem_size_mib: 128 },
      });
      const p = kindling(["api", "--no-api", "--config-file", path]);
      const out = collect(p.stdout);
      const err = collect(p.stderr);
      const seen = await out.until(/Command line: [^\n]*\n/, 150_000);
      p.kill("SIGTERM");
      const code = await p.exited;
      await Promise.all([out.done, err.done]);
      const report = `stdout:\n${out.text.slice(-2000)}\nstderr:\n${err.text.slice(-2000)}`;
      expect(seen, report).toBe(true);
      expect(out.text, report).toMatch(/Linux version 6\.1\.\d+/);
      expect(out.text, report).toMatch(/Command line: console=ttyS0 reboot=k panic=1 pci=off root=\/dev\/vda ro /);
      expect(code, report).toBe(EXIT.OK);
      expect(err.text + out.text, report).toContain("interrupted by a signal");
    },
    180_000,
  );
});
