// Probe guests through real KVM: each boots in milliseconds and checks one part of the VMM end to end.

import { describe, expect } from "bun:test";
import { bootProbe } from "../src/boot/probe.ts";
import { SCRATCH_MMIO_START, PAGE_SIZE } from "../src/arch/x86_64/layout.ts";
import type { BusDevice } from "../src/bus.ts";
import type { Vm } from "../src/vm.ts";
import { detectHost } from "../src/host.ts";
import { kvmTest } from "./support/kvm.ts";

/** Boot a probe, collecting what it prints on the serial console. */
async function run(name: string, opts: Parameters<typeof bootProbe>[1] = {}) {
  let text = "";
  const decoder = new TextDecoder();
  const vm = await bootProbe(name, { ...opts, consoleOutput: (b) => (text += decoder.decode(b)) });
  const timer = setTimeout(() => void vm.stop("test timeout: the probe did not end within 10 s"), 10_000);
  const exit = await vm.exited;
  clearTimeout(timer);
  return { exit, text: () => text, vm };
}

describe("probe guests", () => {
  kvmTest("hello: real mode, prints its greeting over the UART, halts", async () => {
    const { exit, text } = await run("hello");
    expect(text()).toBe("Hello from kindling: a real-mode probe guest wrote this through the 8250 UART.\n");
    expect(exit.reason).toBe("halt");
  });

  kvmTest("longmode: the VMM's page tables and GDT take the guest to 64-bit CPL3", async () => {
    const { exit, text } = await run("longmode");
    expect(text()).toBe("longmode: 64-bit code at CPL3\n");
    expect(exit.reason).toBe("reset");
  });

  kvmTest("mmio: CPL3 loads and stores reach an MMIO device with the right sizes and values", async () => {
    const accesses: string[] = [];
    const device: BusDevice = {
      name: "test-device",
      read(offset, data) {
        accesses.push(`read ${offset.toString(16)}/${data.length}`);
        new DataView(data.buffer, data.byteOffset, data.byteLength).setUint32(0, 0xfeedc0de, true);
      },
      write(offset, data) {
        const hex = [...data].reverse().map((b) => b.toString(16).padStart(2, "0")).join("");
        accesses.push(`write ${offset.toString(16)}/${data.length}=${hex}`);
      },
    };
    const { exit, text } = await run("mmio", { beforeStart: (vm) => vm.mmio.register(SCRATCH_MMIO_START, PAGE_SIZE, device) });
    expect(accesses).toEqual([
      "write 0/1=11",
      "write 2/2=2233",
      "write 4/4=44556677",
      "write 8/8=8899aabbccddeeff",
      "read 10/4",
      "write 18/4=feedc0df",
    ]);
    expect(text()).toBe("mmio: read 0xfeedc0de\nmmio: unclaimed read 0xffffffff\n");
    expect(exit.reason).toBe("reset");
  });

  kvmTest("int3: a breakpoint at CPL0 reaches the guest's #BP handler and execution continues", async () => {
    const { exit, text, vm } = await run("int3");
    expect(text()).toBe("int3: the #BP handler ran once and returned past the breakpoint\n");
    expect(exit.reason).toBe("reset");
    // Where the host emulates CPL0 code, the VMM's emulation assist delivered it (once); on hardware the
    // CPU did, and the assist never ran.
    expect(vm.vcpus[0]!.assists.get("int3 at CPL0") ?? 0).toBe(detectHost().emulatesGuestKernel ? 1 : 0);
  });

  kvmTest("mxcsr: ldmxcsr and stmxcsr at CPL0 load and store the MXCSR the vCPU runs with", async () => {
    const { exit, text, vm } = await run("mxcsr");
    expect(text()).toBe("mxcsr: ldmxcsr at CPL0 loaded 0x00007f80; stmxcsr read 0x00007f80 at CPL0 and 0x00007f80 at CPL3\n");
    expect(exit.reason).toBe("reset");
    const assisted = detectHost().emulatesGuestKernel ? 1 : 0;
    expect(vm.vcpus[0]!.assists.get("ldmxcsr at CPL0") ?? 0).toBe(assisted);
    expect(vm.vcpus[0]!.assists.get("stmxcsr at CPL0") ?? 0).toBe(assisted);
  });

  kvmTest("syscall: CPL3 system calls reach a CPL0 entry and return; other page faults stay the guest's", async () => {
    const emulating = detectHost().emulatesGuestKernel;
    const { exit, text, vm } = await run("syscall");
    expect(text()).toBe("syscall: #PF gate and syscall MSRs set\nsyscall: 3 system calls returned their answers; 1 page fault reached the guest's handler\n");
    expect(exit.reason).toBe("reset");
    // Where the host leaves `syscall` at CPL3, the VMM completed each one (one debug exit each) and stepped
    // the guest's handler over the one genuine fault (two exits); on hardware nothing was armed.
    const assist = vm.vcpus[0]!.syscallAssist;
    if (emulating) {
      expect(assist?.counts).toMatchObject({ syscalls: 3, otherFaults: 1, debugExits: 5 });
    } else {
      expect(assist).toBeUndefined();
    }
  });

  kvmTest("syscall: without the assist, an emulating host delivers the syscall to the guest's #PF handler", async () => {
    const { text } = await run("syscall", { syscallAssist: false });
    expect(text()).toBe("syscall: #PF gate and syscall MSRs set\n" + (
      detectHost().emulatesGuestKernel
        ? "syscall: the #PF at LSTAR reached the guest: nothing completed the system call\n"
        : "syscall: 3 system calls returned their answers; 1 page fault reached the guest's handler\n"),
    );
  });

  kvmTest("irq: a byte fed to the UART raises IRQ 4 through irqfd; the guest's handler takes it", async () => {
    let text = "";
    const decoder = new TextDecoder();
    let fed = false;
    let serial: { queueInput(b: Uint8Array): void } | undefined;
    const vm = await bootProbe("irq", {
      beforeStart: (v) => (serial = v.serial),
      consoleOutput: (b) => {
        text += decoder.decode(b);
        // Once the guest says it waits, type a key on its console.
        if (!fed && text.includes("irq: waiting")) {
          fed = true;
          serial!.queueInput(new TextEncoder().encode("k"));
        }
      },
    });
    const timer = setTimeout(() => void vm.stop("test timeout"), 10_000);
    const exit = await vm.exited;
    clearTimeout(timer);
    expect(text).toBe("irq: waiting for an interrupt\nirq: handler ran at CPL0, received 'k'\n");
    expect(exit.reason).toBe("reset");
  });

  kvmTest("pause stops the guest where it is; resume lets it go on", async () => {
    let text = "";
    const decoder = new TextDecoder();
    let vmRef: Vm | undefined;
    const waiting = Promise.withResolvers<void>();
    const vm = await bootProbe("irq", {
      beforeStart: (v) => (vmRef = v),
      consoleOutput: (b) => {
        text += decoder.decode(b);
        if (text.includes("irq: waiting for an interrupt\n")) waiting.resolve();
      },
    });
    const timer = setTimeout(() => void vm.stop("test timeout"), 10_000);
    await waiting.promise;
    vmRef!.pause();
    // The key arrives while the vCPU is paused: the interrupt is pending, but no guest code runs.
    vm.serial.queueInput(new TextEncoder().encode("p"));
    await Bun.sleep(300);
    expect(text).toBe("irq: waiting for an interrupt\n");
    vm.resume();
    const exit = await vm.exited;
    clearTimeout(timer);
    expect(text).toBe("irq: waiting for an interrupt\nirq: handler ran at CPL0, received 'p'\n");
    expect(exit.reason).toBe("reset");
  });
});
