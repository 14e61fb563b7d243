import { describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { release, tmpdir } from "node:os";
import { join } from "node:path";
import { detectHost, detectKvm, emulatingHostWarning, kvmAvailability, warnOnce } from "../src/host.ts";

const dir = mkdtempSync(join(tmpdir(), "kindling-host-"));
function cpuinfo(name: string, flags: string): string {
  const path = join(dir, name);
  writeFileSync(path, `processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Test CPU @ 2.00GHz\nflags\t\t: fpu ${flags} sse2\n\nprocessor\t: 1\n`);
  return path;
}
const NOWHERE = join(dir, "does-not-exist");

describe("detectHost on this machine", () => {
  const host = detectHost();

  test("reports PVM exactly when /sys/module/kvm_pvm exists", () => {
    const pvm = existsSync("/sys/module/kvm_pvm");
    expect(host.pvm).toBe(pvm);
    if (pvm) {
      expect(host.emulatesGuestKernel).toBe(true);
      expect(host.emulationCause).toBe("pvm");
    }
  });

  test("/dev/kvm facts match the device node", () => {
    expect(host.kvm.present).toBe(existsSync("/dev/kvm"));
    if (host.kvm.openable) {
      expect(host.kvm.apiVersion).toBe(12);
      expect(host.kvm.capabilities.map((c) => c.name)).toContain("KVM_CAP_IRQFD");
      expect(host.kvm.error === null).toBe(host.kvm.capabilities.every((c) => c.present));
    }
    expect(kvmAvailability().ok).toBe(host.kvm.error === null);
  });

  test("reads the CPU model and kernel release", () => {
    const model = readFileSync("/proc/cpuinfo", "utf8").match(/^model name\s*:\s*(.*)$/m)?.[1]?.trim() ?? null;
    expect(host.cpuModel).toBe(model);
    expect(host.kernelRelease).toBe(release());
  });
});

describe("detectHost from given files", () => {
  test("a CPU with vmx and no PVM runs guest kernels natively", () => {
    const h = detectHost({ cpuinfo: cpuinfo("vmx", "vmx pae"), pvmModule: NOWHERE, kvmDevice: NOWHERE });
    expect(h.virtualizationFlag).toBe("vmx");
    expect(h.cpuModel).toBe("Test CPU @ 2.00GHz");
    expect(h.emulatesGuestKernel).toBe(false);
    expect(h.emulationCause).toBeNull();
  });

  test("svm is recognised too", () => {
    expect(detectHost({ cpuinfo: cpuinfo("svm", "svm"), pvmModule: NOWHERE, kvmDevice: NOWHERE }).virtualizationFlag).toBe("svm");
  });

  test("no vmx/svm flag means guest kernel code is emulated", () => {
    // "vmxe" is not "vmx": the flag must be matched as a whole word.
    const h = detectHost({ cpuinfo: cpuinfo("none", "vmxe pae"), pvmModule: NOWHERE, kvmDevice: NOWHERE });
    expect(h.virtualizationFlag).toBeNull();
    expect(h.emulatesGuestKernel).toBe(true);
    expect(h.emulationCause).toBe("no-vmx-svm");
  });

  test("PVM wins over a vmx flag", () => {
    const h = detectHost({ cpuinfo: cpuinfo("vmx2", "vmx"), pvmModule: dir, kvmDevice: NOWHERE });
    expect(h.emulationCause).toBe("pvm");
  });

  test("the first processor is read, across reads (a flags line longer than one 4 KiB read); not the next", () => {
    const path = join(dir, "two-processors");
    const first = `processor\t: 0\nmodel name\t: First CPU\nflags\t\t: fpu ${"x".repeat(5000)} sse2\n\n`;
    writeFileSync(path, `${first}processor\t: 1\nmodel name\t: Second CPU\nflags\t\t: fpu vmx\n\n`);
    const h = detectHost({ cpuinfo: path, pvmModule: NOWHERE, kvmDevice: NOWHERE });
    expect(h.cpuModel).toBe("First CPU");
    expect(h.virtualizationFlag).toBeNull();
    // A file with no blank line at all is read to its end.
    writeFileSync(path, "model name\t: Only CPU\nflags\t\t: svm");
    expect(detectHost({ cpuinfo: path, pvmModule: NOWHERE, kvmDevice: NOWHERE }).virtualizationFlag).toBe("svm");
  });

  test("an unreadable cpuinfo gives no model rather than throwing", () => {
    const h = detectHost({ cpuinfo: NOWHERE, pvmModule: NOWHERE, kvmDevice: NOWHERE });
    expect(h.cpuModel).toBeNull();
    expect(h.virtualizationFlag).toBeNull();
  });
});

describe("detectKvm", () => {
  test("a missing device is reported, with its path", () => {
    const k = detectKvm(NOWHERE);
    expect(k).toMatchObject({ present: false, openable: false, apiVersion: null, capabilities: [] });
    expect(k.error).toContain(NOWHERE);
    const a = kvmAvailability(NOWHERE);
    expect(a.ok).toBe(false);
    if (!a.ok) expect(a.reason).toContain("does not exist");
  });

  test("a file that is not KVM fails at KVM_GET_API_VERSION", () => {
    const notKvm = join(dir, "not-kvm");
    writeFileSync(notKvm, "");
    const k = detectKvm(notKvm);
    expect(k.present).toBe(true);
    expect(k.openable).toBe(false);
    expect(k.error).toContain("KVM_GET_API_VERSION");
  });
});

describe("emulating-host warning", () => {
  test("says what emulation costs, that the syscall assist completes system calls, and how long a shell takes", () => {
    const text = emulatingHostWarning({ emulationCause: "pvm" });
    for (const fact of ["PVM", "1.5 µs", "syscall assist", "shell prompt", "1.5 minutes", "100 ms"]) expect(text).toContain(fact);
    expect(emulatingHostWarning({ emulationCause: "no-vmx-svm" })).toContain("neither vmx nor svm");
  });

  test("warnOnce prints a key once per process", () => {
    const printed: string[] = [];
    const key = `test-${Math.random()}`;
    expect(warnOnce(key, "first", (t) => printed.push(t))).toBe(true);
    expect(warnOnce(key, "second", (t) => printed.push(t))).toBe(false);
    expect(warnOnce(`${key}-other`, "third", (t) => printed.push(t))).toBe(true);
    expect(printed).toEqual(["first", "third"]);
  });
});
