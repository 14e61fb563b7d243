// The library class: configuration through the zod schemas, the life cycle (start, pause, resume, stop),
// events and the serial stream, with a stand-in boot (tes./support/api.ts) so no KVM is needed.
// The real boot through the same class is in test/api-e2e.test.ts.

import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { consola } from "consola";
import { MicroVM, MicroVMError } from "../src/index.ts";
import { buildCmdline, rootArgs } from "../src/arch/x86_64/cmdline.ts";
import { fakeBoot, fakeMicroVM, FakeDeviceModel, fixtureFiles, type FakeVm } from "./support/api.ts";

consola.level = 0;
const files = fixtureFiles();
afterAll(() => rmSync(files.dir, { recursive: true, force: true }));

const bootSource = { kernel_image_path: files.kernel, initrd_path: files.initrd, boot_args: "console=ttyS0" };

describe("MicroVM configuration", () => {
  test("a config is checked by the schemas; errors name the field and the rule", () => {
    expect(() => new MicroVM({ "machine-config": { vcpu_count: 33, mem_size_mib: 128 } })).toThrow("machine-config.vcpu_count: must be 1..32");
    expect(() => new MicroVM({ drives: [{ drive_id: "a", is_root_device: true, path_on_host: "/nonexistent.img" }] })).toThrow(
      "drives[0].path_on_host: /nonexistent.img: no such file",
    );
    expect(() => new MicroVM({ "boot-source": { kernel_image_path: files.kernel, extra: 1 } as never })).toThrow("boot-source.extra: unknown field");
    expect(() => new MicroVM({ balloon: {} } as never)).toThrow("balloon.amount_mib: required; balloon.deflate_on_oom: required");
    expect(() => new MicroVM({}, { id: "no spaces" })).toThrow("id:");
  });

  test("drive ids are unique and there is one root device", () => {
    const d = { is_root_device: false, path_on_host: files.disk };
    expect(() => new MicroVM({ drives: [{ ...d, drive_id: "a" }, { ...d, drive_id: "a" }] })).toThrow("drives[1].drive_id: a is used twice");
    const vm = new MicroVM({ drives: [{ ...d, drive_id: "a", is_root_device: true }] });
    expect(() => vm.putDrive({ ...d, drive_id: "b", is_root_device: true })).toThrow("drive.is_root_device: drive a is already the root device");
  });

  test("what kindling does not implement is refused by name, never ignored", () => {
    const vm = new MicroVM();
    expect(() => vm.setMachineConfig({ vcpu_count: 1, mem_size_mib: 128, cpu_template: "V1N1" })).toThrow("cpu_template: V1N1 is an aarch64");
    expect(() => vm.putBalloon({ amount_mib: 1, deflate_on_oom: true, free_page_hinting: true })).toThrow("balloon.free_page_hinting: free page hinting is not supported");
    expect(() => vm.putDrive({ drive_id: "v", is_root_device: false, socket: "/tmp/vhost.sock" })).toThrow("vhost-user-block");
    expect(() => vm.sendCtrlAltDel()).toThrow("SendCtrlAltDel: the microVM has not started");
    // Nothing was stored by the refused calls.
    expect(vm.config["machine-config"]).toEqual({ vcpu_count: 1, mem_size_mib: 128, smt: false, track_dirty_pages: false, huge_pages: "None" });
    expect(vm.config.drives).toBeUndefined();
  });

  test("PATCH-style machine config keeps what it does not name, and the whole must still hold", () => {
    const vm = new MicroVM({ "machine-config": { vcpu_count: 3, mem_size_mib: 256 } });
    vm.patchMachineConfig({ mem_size_mib: 512 });
    expect(vm.machineConfig).toMatchObject({ vcpu_count: 3, mem_size_mib: 512 });
    expect(() => vm.patchMachineConfig({ mem_size_mib: 1 })).toThrow("machine-config.mem_size_mib: must be 32..65536");
  });

  test("config round-trips: what goes in is what GET /vm/config reports", () => {
    const config = {
      "boot-source": bootSource,
      "machine-config": { vcpu_count: 2, mem_size_mib: 256, smt: false, track_dirty_pages: false, huge_pages: "None" as const },
      drives: [{ drive_id: "rootfs", is_root_device: true, path_on_host: files.disk, is_read_only: true }],
      "network-interfaces": [{ iface_id: "eth0", host_dev_name: "tap0", guest_mac: "06:00:ac:10:00:02" }],
      vsock: { guest_cid: 3, uds_path: join(files.dir, "v.sock") },
      entropy: {},
    };
    expect(new MicroVM(config).config).toEqual(config);
  });
});

describe("MicroVM life cycle", () => {
  test("start boots what was configured: root drive first, partuuid root on the command line", async () => {
    const booted: FakeVm[] = [];
    const vm = fakeMicroVM({ "boot-source": bootSource, "machine-config": { vcpu_count: 2, mem_size_mib: 64 }, entropy: {} }, {}, booted);
    vm.putDrive({ drive_id: "data", is_root_device: false, path_on_host: files.disk });
    vm.putDrive({ drive_id: "rootfs", is_root_device: true, path_on_host: files.disk, is_read_only: true, partuuid: "0eaa91a0-01" });
    await vm.start();
    const o = booted[0]!.opts;
    expect(o).toMatchObject({ kernel: files.kernel, initrd: files.initrd, memSize: 64 * 1024 * 1024, vcpus: 2, entropy: true });
    expect(o.drives!.map((d) => [d.id, d.root, d.readOnly, d.partuuid])).toEqual([["rootfs", true, true, "0eaa91a0-01"], ["data", false, false, undefined]]);
    // The root= rule is the command-line module's (cmdline.ts rootArgs, tested in test/cmdline.test.ts).
    expect(o.cmdline).toBe("console=ttyS0");
    expect(buildCmdline({ base: o.cmdline, extra: rootArgs(o.drives!) })).toBe("console=ttyS0 root=PARTUUID=0eaa91a0-01 ro");
    expect(vm.state).toBe("Running");
    expect(() => vm.putDrive({ drive_id: "late", is_root_device: false, path_on_host: files.disk })).toThrow("only be configured before the microVM starts");
    await expect(vm.start()).rejects.toThrow("already been started");
    await vm.stop();
  });

  test("pause, resume, stop; events and the exited promise", async () => {
    const booted: FakeVm[] = [];
    const vm = fakeMicroVM({ "boot-source": bootSource }, { id: "lib-test" }, booted);
    expect(() => vm.pause()).toThrow("has not started");
    const exits: unknown[] = [];
    vm.on("exit", (e) => exits.push(e));
    await vm.start();
    vm.pause();
    expect([vm.state, booted[0]!.paused]).toEqual(["Paused", true]);
    vm.resume();
    expect([vm.state, booted[0]!.paused]).toEqual(["Running", false]);
    expect(vm.writeSerial(new Uint8Array([104, 105]))).toBe(2);
    expect(booted[0]!.input).toEqual([104, 105]);
    const exit = await vm.stop("enough");
    expect(exit).toEqual({ reason: "stopped", message: "enough" });
    expect(await vm.exited).toBe(exit);
    expect(exits).toEqual([exit]);
    expect(vm.state).toBe("Stopped");
    expect(() => vm.resume()).toThrow("has stopped");
    expect(vm.writeSerial(new Uint8Array([1]))).toBe(0);
  });

  test("SendCtrlAltDel reaches the VM's i8042 keyboard once started, as in Firecracker", async () => {
    const booted: FakeVm[] = [];
    const vm = fakeMicroVM({ "boot-source": bootSource }, {}, booted);
    expect(() => vm.sendCtrlAltDel()).toThrow("SendCtrlAltDel: the microVM has not started");
    await vm.start();
    vm.sendCtrlAltDel();
    expect(booted[0]!.ctrlAltDels).toBe(1);
    await vm.stop();
    expect(() => vm.sendCtrlAltDel()).toThrow("SendCtrlAltDel: the microVM has stopped");
  });

  test("balloon: PUT before boot, PATCH and statistics after; the device gets the new target", async () => {
    const booted: FakeVm[] = [];
    const vm = fakeMicroVM({ "boot-source": bootSource, "machine-config": { vcpu_count: 1, mem_size_mib: 256 } }, {}, booted);
    expect(() => vm.balloonConfig).toThrow("no balloon device is configured");
    expect(() => vm.putBalloon({ amount_mib: 512, deflate_on_oom: false })).toThrow("amount of pages requested is too large");
    vm.putBalloon({ amount_mib: 0, deflate_on_oom: true, stats_polling_interval_s: 5 });
    vm.patchBalloon({ amount_mib: 8 });
    expect(vm.balloonConfig).toEqual({ amount_mib: 8, deflate_on_oom: true, stats_polling_interval_s: 5 });
    expect(() => vm.balloonStatistics).toThrow("balloon statistics: the microVM has not started");
    vm.patchBalloon({ amount_mib: 100 });
    expect(() => vm.setMachineConfig({ vcpu_count: 1, mem_size_mib: 64 })).toThrow("less than the balloon's 100 MiB");
    vm.patchBalloon({ amount_mib: 8 });
    await vm.start();
    expect(() => vm.putBalloon({ amount_mib: 1, deflate_on_oom: true })).toThrow("only be configured before the microVM starts");
    vm.patchBalloon({ amount_mib: 64 });
    expect(vm.balloonStatistics).toMatchObject({ target_mib: 64, target_pages: 64 * 256, actual_pages: 0 });
    vm.patchBalloonStatistics({ stats_polling_interval_s: 1 });
    expect(() => vm.patchBalloonStatistics({ stats_polling_interval_s: 0 })).toThrow("cannot be turned on or off");
    expect(vm.config.balloon).toEqual({ amount_mib: 64, deflate_on_oom: true, stats_polling_interval_s: 1 });
    expect(booted[0]!.opts.balloon).toEqual({ amountMib: 8, deflateOnOom: true, statsPollingIntervalS: 5, freePageReporting: undefined });
    await vm.stop();
  });

  test("balloon and cpu-config in a config file (flintlock's and Firecracker's FullVmConfiguration keys)", () => {
    const vm = fakeMicroVM({
      "boot-source": bootSource,
      balloon: { amount_mib: 16, deflate_on_oom: true, stats_polling_interval_s: 2, free_page_reporting: true },
      "cpu-config": { msr_modifiers: [{ addr: "0x10a", bitmap: "0b1" }] },
    });
    expect(vm.config.balloon).toEqual({ amount_mib: 16, deflate_on_oom: true, stats_polling_interval_s: 2, free_page_reporting: true });
    expect(() => fakeMicroVM({ balloon: { amount_mib: 4096, deflate_on_oom: false } })).toThrow("balloon.amount_mib: 4096 MiB is more than the guest's 128 MiB");
  });

  test("smt and CPU templates reach the machine description; a custom template wins over a static one", async () => {
    const booted: FakeVm[] = [];
    const vm = fakeMicroVM({ "boot-source": bootSource, "machine-config": { vcpu_count: 2, mem_size_mib: 128, smt: true, cpu_template: "T2A" } }, {}, booted);
    await vm.start();
    expect(booted[0]!.opts).toMatchObject({ smt: true, cpuTemplate: "T2A" });
    await vm.stop();
    const custom = fakeMicroVM({ "boot-source": bootSource, "machine-config": { vcpu_count: 1, mem_size_mib: 128, cpu_template: "T2" } }, {}, booted);
    custom.putCpuConfig({ cpuid_modifiers: [{ leaf: "0x80000001", subleaf: "0x0", flags: 0, modifiers: [{ register: "ecx", bitmap: "0bxxxxxxxx0" }] }] });
    expect(() => custom.putCpuConfig({ kvm_capabilities: ["121"] })).toThrow("cpu-config.kvm_capabilities");
    await custom.start();
    expect(booted[1]!.opts.cpuTemplate).toEqual({ custom: { cpuid_modifiers: [{ leaf: 0x80000001, subleaf: 0, flags: 0, modifiers: [{ register: "ecx", filter: 1, value: 0 }] }], msr_modifiers: [] } });
    await custom.stop();
  });

  test("a guest that ends by itself ends the MicroVM, with the reason", async () => {
    const booted: FakeVm[] = [];
    const vm = fakeMicroVM({ "boot-source": bootSource }, {}, booted);
    await vm.start();
    booted[0]!.end({ reason: "reset", message: "guest reset" });
    expect((await vm.exited).reason).toBe("reset");
    expect(vm.state).toBe("Stopped");
  });

  test("start without a boot source, or with a failing boot, is refused and can be retried", async () => {
    const vm = new MicroVM({}, { boot: async () => Promise.reject(new Error("KVM_CREATE_VM failed: ENOMEM")) });
    await expect(vm.start()).rejects.toThrow("no boot source");
    vm.setBootSource(bootSource);
    await expect(vm.start()).rejects.toThrow("InstanceStart failed: KVM_CREATE_VM failed: ENOMEM");
    expect(vm.state).toBe("Not started");
    vm.setBootSource({ kernel_image_path: files.kernel }); // still configurable
  });

  test("stop before start resolves at once", async () => {
    const vm = new MicroVM();
    expect((await vm.stop()).reason).toBe("stopped");
    expect(vm.state).toBe("Stopped");
    await expect(vm.start()).rejects.toThrow("already been started");
  });

  test("network interfaces and vsock are created through the device models, and closed at the end", async () => {
    FakeDeviceModel.made = [];
    const booted: FakeVm[] = [];
    const vm = fakeMicroVM({ "boot-source": bootSource, "network-interfaces": [{ iface_id: "eth0", host_dev_name: "tap0", mtu: 1500 }], vsock: { guest_cid: 3, uds_path: "/tmp/v.sock" } }, {}, booted);
    await vm.start();
    expect(FakeDeviceModel.made).toEqual([
      { ifaceId: "eth0", hostDevName: "tap0", guestMac: undefined, mtu: 1500, log: expect.any(Function) },
      { guestCid: 3, udsPath: "/tmp/v.sock", log: expect.any(Function) },
    ]);
    const devices = booted[0]!.devices.map((d) => d.device as FakeDeviceModel);
    expect(booted[0]!.devices.map((d) => d.name)).toEqual(["net_eth0", "vsock"]);
    await vm.stop();
    expect(devices.map((d) => d.closed)).toEqual([true, true]);
  });

  test("without a net device model in this build, InstanceStart says network interfaces are not supported yet", async () => {
    const hasNet = existsSync(join(import.meta.dir, "../src/devices/virtio/net.ts"));
    const vm = new MicroVM({ "boot-source": bootSource, "network-interfaces": [{ iface_id: "eth0", host_dev_name: "tap0" }] }, { boot: fakeBoot() });
    const started = vm.start();
    if (hasNet) {
      // The real model is there: whatever happens, it is not the "not supported" refusal.
      await started.then(() => vm.stop(), (e: Error) => expect(e.message).not.toContain("not supported yet"));
    } else {
      await expect(started).rejects.toThrow("network interfaces are not supported yet");
      expect(vm.state).toBe("Not started");
    }
  });
});

describe("MicroVM output", () => {
  test("serial output reaches the stream, the event and serial_out_path", async () => {
    const booted: FakeVm[] = [];
    const vm = fakeMicroVM({ "boot-source": bootSource }, {}, booted);
    const outPath = join(files.dir, "serial.out");
    vm.setSerial({ serial_out_path: outPath });
    const seen: string[] = [];
    vm.on("serial", (b) => seen.push(new TextDecoder().decode(b)));
    const stream = vm.serial;
    await vm.start();
    booted[0]!.print("Linux version 6.1\n");
    booted[0]!.print("Command line: console=ttyS0\n");
    await vm.stop();
    expect(await new Response(stream).text()).toBe("Linux version 6.1\nCommand line: console=ttyS0\n");
    expect(seen.join("")).toBe("Linux version 6.1\nCommand line: console=ttyS0\n");
    expect(readFileSync(outPath, "utf8")).toBe("Linux version 6.1\nCommand line: console=ttyS0\n");
  });

  test("boot-complete is an event; a throwing listener does not break the VM", async () => {
    const booted: FakeVm[] = [];
    const vm = fakeMicroVM({ "boot-source": bootSource }, {}, booted);
    const times: number[] = [];
    vm.on("boot-complete", () => {
      throw new Error("listener bug");
    });
    vm.on("boot-complete", (i) => times.push(i.wallMs));
    await vm.start();
    booted[0]!.opts.onBootComplete!({ wallMs: 125, cpuUserUs: 1, cpuSystemUs: 2 });
    expect(times).toEqual([125]);
    expect(vm.state).toBe("Running");
    await vm.stop();
  });

  test("errors are MicroVMErrors", () => {
    try {
      new MicroVM({ vsock: { guest_cid: 2, uds_path: "x" } });
      throw new Error("accepted a reserved CID");
    } catch (e) {
      expect(e).toBeInstanceOf(MicroVMError);
      expect((e as Error).message).toBe("vsock.guest_cid: must be 3..4294967294");
    }
  });
});
