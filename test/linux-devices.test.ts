// Linux with Firecracker's device set: one boot (slow where the host emulates guest kernel code) that
// checks the kernel finds virtio-blk, -net, -vsock and -rng, mounts its ext4 root from /dev/vda, and gets
// an address by kernel-level DHCP (`ip=dhcp`) over virtio-net from dnsmasq on a TAP in a network namespace.

import { afterAll, describe, expect } from "bun:test";
import { copyFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { bootLinux } from "../src/boot/linux.ts";
import { ConsoleWatcher } from "../src/boot/milestones.ts";
import { DEFAULT_CMDLINE } from "../src/arch/x86_64/cmdline.ts";
import { VirtioNet } from "../src/devices/virtio/net.ts";
import type { DeviceClass } from "../src/boot/machine.ts";
import { VIRTIO_CONFIG_S_DRIVER_OK } from "../src/devices/virtio/uapi.ts";
import { detectHost } from "../src/host.ts";
import { buildGuest } from "../guest/build.ts";
import { KVM_MISSING } from "./support/kvm.ts";
import { NetNs, netnsTest, uniqueName } from "./support/netns.ts";

const dir = mkdtempSync(join(tmpdir(), "kindling-devices-"));
const cleanups: (() => void)[] = [() => rmSync(dir, { recursive: true, force: true })];
afterAll(() => cleanups.reverse().forEach((c) => c()));

const HOST_IP = "192.168.127.1";
const GUEST_MAC = "06:00:c0:a8:7f:0a";

describe("Linux with virtio devices", () => {
  netnsTest(
    "finds blk, net, vsock and rng, mounts root from /dev/vda, and gets a DHCP lease over virtio-net",
    async () => {
      if (KVM_MISSING) throw new Error(`this test needs /dev/kvm: ${KVM_MISSING}`);
      const guest = await buildGuest({ log: () => {} });
      const rootfs = join(dir, "rootfs.ext4");
      copyFileSync(guest.rootfs, rootfs);

      // The host side of the guest's network: a TAP moved into a namespace, with dnsmasq serving DHCP on it.
      const ns = NetNs.create("kdev");
      cleanups.push(() => ns.delete());
      const tapName = uniqueName("ktap");
      const net = new VirtioNet({ hostDevName: tapName, guestMac: GUEST_MAC });
      ns.adopt(tapName);
      ns.ip("addr", "add", `${HOST_IP}/24`, "dev", tapName);
      ns.ip("link", "set", tapName, "up");
      const leases = join(dir, "dnsmasq.log");
      const dnsmasq = Bun.spawn(
        ["ip", "netns", "exec", ns.name, "dnsmasq", "--no-daemon", "--port=0", "--no-resolv", "--no-hosts",
          `--interface=${tapName}`, "--bind-interfaces", "--dhcp-range=192.168.127.10,192.168.127.20,1h",
          "--dhcp-authoritative", "--log-dhcp", `--log-facility=${leases}`, "--pid-file="],
        { stdout: "ignore", stderr: "pipe" },
      );
      cleanups.push(() => dnsmasq.kill());

      const watcher = new ConsoleWatcher();
      const { vm, plan, devices } = await bootLinux({
        kernel: guest.vmlinux,
        cmdline: `${DEFAULT_CMDLINE} ip=dhcp`,
        drives: [{ path: rootfs, root: true, id: "rootfs" }],
        entropy: true,
        nets: [{ id: "eth0", hostDevName: tapName, guestMac: GUEST_MAC }],
        vsock: { guestCid: 3, udsPath: join(dir, "vsock.sock") },
        // The TAP had to exist before it moved into the namespace: the recipe takes the one made above.
        deviceModels: { VirtioNet: function () { return net; } as unknown as DeviceClass },
        consoleOutput: (b) => watcher.push(b),
      });
      expect([...devices.drives.keys(), ...devices.nets.keys()]).toEqual(["rootfs", "eth0"]);
      expect(devices.nets.get("eth0")).toBe(net);
      const deadline = setTimeout(() => void vm.stop("test deadline of 400 s passed"), 400_000);
      // Look at the devices once the kernel has started init (which cannot run on an emulating host).
      await Promise.race([watcher.until((w) => w.seen.has("runInit")), vm.exited]);
      const status = vm.virtio.map((d) => ({ name: d.transport.name, driverOk: (d.transport.status & VIRTIO_CONFIG_S_DRIVER_OK) !== 0 }));
      const rx = net.counters.rxFrames;
      const exit = await (detectHost().emulatesGuestKernel ? vm.exited : vm.stop("the test has what it needs"));
      clearTimeout(deadline);
      const text = watcher.text;
      const report = `exit: ${exit.reason}: ${exit.message}\n--- console (last 3000 chars) ---\n${text.slice(-3000)}`;

      // Four virtio-mmio devices announced on the command line, one 4 KiB window and IRQ each.
      expect(plan.devices.map((d) => d.name.replace(/\(.*\)$/, ""))).toEqual(["virtio-blk", "virtio-rng", "virtio-net", "virtio-vsock"]);
      for (const d of plan.devices) expect(plan.cmdline).toContain(`virtio_mmio.device=4K@0x${d.addr.toString(16)}:${d.irq}`);
      // Each driver bound and brought its device to DRIVER_OK.
      expect(status, report).toEqual(plan.devices.map((d) => ({ name: d.name, driverOk: true })));
      // The disk, its ext4 root, the lease.
      expect(text, report).toMatch(/virtio_blk virtio0: \[vda\] 131072 512-byte logical blocks/);
      expect(text, report).toContain("EXT4-fs (vda): mounted filesystem");
      expect(text, report).toContain("VFS: Mounted root (ext4 filesystem)");
      expect(text, report).toMatch(new RegExp(`IP-Config: Got DHCP answer from ${HOST_IP.replaceAll(".", "\\.")}, my address is 192\\.168\\.127\\.(1\\d|20)`));
      expect(rx, report).toBeGreaterThan(0);
      expect(await Bun.file(leases).text()).toContain(`DHCPACK(${tapName})`);
      expect(text, report).toContain("Run /sbin/init as init process");
    },
    480_000,
  );
});
