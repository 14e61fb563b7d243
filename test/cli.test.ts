import { describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { doctorReport, formatReport } from "../src/cli/doctor.ts";
import { EXIT } from "../src/cli/main.ts";
import { detectHost } from "../src/host.ts";
import { parseBunSummary, summaryLine } from "../scripts/run-tests.ts";

const ROOT = join(import.meta.dir, "..");

function kindling(...args: string[]): { code: number; stdout: string; stderr: string } {
  const { KINDLING_LOG_LEVEL: _, ...env } = process.env;
  const r = Bun.spawnSync([process.execPath, "src/cli/main.ts", ...args], {
    cwd: ROOT,
    env: { ...env, NO_COLOR: "1" },
    stdout: "pipe",
    stderr: "pipe",
  });
  const plain = (b: Buffer) => b.toString().replace(/\x1b\[[0-9;]*m/g, "");
  return { code: r.exitCode ?? -1, stdout: plain(r.stdout), stderr: plain(r.stderr) };
}

describe("kindling doctor --json", () => {
  const r = kindling("doctor", "--json");
  const report = JSON.parse(r.stdout);

  test("reports /dev/kvm, its API version and each required capability", () => {
    expect(report.host.kvm.device).toBe("/dev/kvm");
    expect(report.host.kvm.present).toBe(existsSync("/dev/kvm"));
    if (report.host.kvm.openable) {
      expect(report.host.kvm.apiVersion).toBe(12);
      expect(report.host.kvm.capabilities.length).toBeGreaterThanOrEqual(10);
      for (const c of report.host.kvm.capabilities) {
        expect(c.name).toMatch(/^KVM_CAP_[A-Z0-9_]+$/);
        expect(typeof c.present).toBe("boolean");
      }
    }
  });

  test("reports the host: CPU, kernel, and whether guest kernel code is emulated", () => {
    expect(typeof report.host.kernelRelease).toBe("string");
    expect(report.host.pvm).toBe(existsSync("/sys/module/kvm_pvm"));
    expect(report.host.emulatesGuestKernel).toBe(report.host.emulationCause !== null);
    expect(report.emulationWarning === null).toBe(!report.host.emulatesGuestKernel);
    if (report.host.pvm) expect(report.emulationWarning).toContain("PVM");
  });

  test("reports the probe-guest tools where PATH finds them", () => {
    expect(report.tools.as).toBe(Bun.which("as"));
    expect(report.tools.ld).toBe(Bun.which("ld"));
    expect(report.probeToolsPresent).toBe(report.tools.as !== null && report.tools.ld !== null);
  });

  test("the exit status follows the verdict", () => {
    expect(report.kvmUsable).toBe(report.host.kvm.error === null);
    expect(r.code).toBe(report.kvmUsable ? EXIT.OK : EXIT.NO_KVM);
    expect(report.verdict).toMatch(report.kvmUsable ? /^ready/ : /^not ready/);
  });
});

describe("kindling doctor", () => {
  test("prints a readable report ending in a verdict", () => {
    const r = kindling("doctor");
    expect(r.stdout).toContain("API version");
    expect(r.stdout).toContain("guest kernel code");
    expect(r.stdout).toMatch(/\n {2}as {2,}/);
    expect(r.stdout.trimEnd().split("\n").pop()).toMatch(/^verdict: /);
  });

  test("a host without KVM gets a 'not ready' verdict naming the device", () => {
    const host = detectHost({ kvmDevice: "/nonexistent/kvm" });
    const report = doctorReport(host);
    expect(report.kvmUsable).toBe(false);
    expect(report.verdict).toStartWith("not ready: /nonexistent/kvm does not exist");
    expect(formatReport(report)).toContain("/nonexistent/kvm");
  });
});

describe("kindling command line", () => {
  test("--help lists the subcommands", () => {
    const r = kindling("--help");
    expect(r.code).toBe(EXIT.OK);
    for (const sub of ["doctor", "boot", "run", "api", "guest"]) expect(r.stdout).toMatch(new RegExp(`^\\s+${sub}\\s`, "m"));
    expect(r.stdout).toContain("--level");
  });

  test("each subcommand has --help", () => {
    const doctor = kindling("doctor", "--help");
    expect(doctor.code).toBe(EXIT.OK);
    expect(doctor.stdout).toContain("--json");
    const guest = kindling("guest", "--help");
    expect(guest.code).toBe(EXIT.OK);
    expect(guest.stdout).toMatch(/^\s+build\s/m);
  });

  test("usage errors exit 2 and say what was wrong", () => {
    const none = kindling();
    expect(none.code).toBe(EXIT.USAGE);
    const unknown = kindling("frobnicate");
    expect(unknown.code).toBe(EXIT.USAGE);
    expect(unknown.stderr).toContain("unknown command: frobnicate");
    const flag = kindling("doctor", "--jsn");
    expect(flag.code).toBe(EXIT.USAGE);
    expect(flag.stderr).toContain("unknown option --jsn");
    const level = kindling("--level", "loud", "doctor");
    expect(level.code).toBe(EXIT.USAGE);
    expect(level.stderr).toContain("--level");
  });

  test("run and api refuse incomplete input and exit 2", () => {
    const run = kindling("run");
    expect(run.code).toBe(EXIT.USAGE);
    expect(run.stderr).toContain("give --config-file FILE, or --kernel PATH");
    const api = kindling("api", "--no-api");
    expect(api.code).toBe(EXIT.USAGE);
    expect(api.stderr).toContain("--no-api needs --config-file");
  });

  test("Firecracker's --enable-pci is refused by name, before anything starts", () => {
    const pci = kindling("api", "--enable-pci", "--api-sock", "/tmp/kindling-never.sock");
    expect(pci.code).toBe(EXIT.USAGE);
    expect(pci.stderr).toContain("--enable-pci: virtio over PCI is not supported");
  });

  test("KINDLING_LOG_LEVEL must name a level", () => {
    const r = Bun.spawnSync([process.execPath, "src/cli/main.ts", "doctor", "--json"], {
      cwd: ROOT,
      env: { ...process.env, KINDLING_LOG_LEVEL: "chatty" },
      stderr: "pipe",
    });
    expect(r.exitCode).toBe(EXIT.USAGE);
    expect(r.stderr.toString()).toContain("KINDLING_LOG_LEVEL=chatty");
  });
});

describe("scripts/run-tests.ts summary", () => {
  test("reads bun's closing block, including todo and filtered-out lines", () => {
    const out = "(pass) a\n(fail) b\n\n 3 pass\n 1 skip\n 1 todo\n 2 filtered out\n 1 fail\n 7 expect() calls\nRan 5 tests across 2 files. [9.00ms]\n";
    const s = parseBunSummary(out);
    expect(s).toEqual({ passed: 3, failed: 1, skipped: 2 });
    expect(summaryLine(s!)).toBe("tests: 3 passed, 1 failed, 2 skipped");
    expect(summaryLine({ passed: 4, failed: 0, skipped: 0 })).toBe("tests: 4 passed, 0 failed");
  });

  test("an error outside any test counts as a failure", () => {
    expect(parseBunSummary(" 2 pass\n 0 fail\n 1 error\nRan 2 tests across 1 file. [1ms]")).toEqual({ passed: 2, failed: 1, skipped: 0 });
  });

  test("no summary means no tests ran", () => {
    expect(parseBunSummary("bun test v1.4.5\nThe following filters did not match any test files")).toBeUndefined();
  });
});
