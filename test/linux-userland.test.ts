// Guest userland through kindling: one Linux boot on 2 vCPUs with Firecracker's device set, running a
// script of checks in the guest with exec() (src/exec.ts), each check one line of its stdout. Slow where
// the host emulates guest kernel code (a few minutes: the kernel, then every system call through the
// syscall assist), so it is one boot that checks many things:
//   boot: init ready, the boot-timer write, the command's exit status, a clean end of the VM;
//   SMP: 2 CPUs seen, a user process run on each;
//   virtio-blk: a known file read from a second (ext4, read-only) drive, bytes written to a third
//     (raw, read-write) drive read back by the host, a write to the read-only drive refused;
//   virtio-net: an address by DHCP from dnsmasq on a TAP in a network namespace, ping to the host side,
//     a page fetched with wget from an HTTP server (busybox httpd) there;
//   virtio-vsock: guest-initiated (to uds_path_<port>) and host-initiated (CONNECT <port>), both ways;
//   virtio-rng: bytes from /dev/hwrng;
//   the kernel's own view (dmesg): both CPUs up, the 16550A, the disk, the ext4 root, the DHCP answer.

import { afterAll, describe, expect } from "bun:test";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { exec } from "../src/exec.ts";
import { VirtioNet } from "../src/devices/virtio/net.ts";
import { buildGuest } from "../guest/build.ts";
import { detectHost } from "../src/host.ts";
import { GLIBC_NO_AVX } from "../src/arch/x86_64/cpuid.ts";
import { KVM_MISSING } from "./support/kvm.ts";
import { NetNs, netnsTest, uniqueName } from "./support/netns.ts";
import { vsockConnect, vsockListener } from "./support/vsock.ts";

const dir = mkdtempSync(join(tmpdir(), "kindling-userland-"));
const cleanups: (() => void)[] = [() => rmSync(dir, { recursive: true, force: true })];
afterAll(() => cleanups.reverse().forEach((c) => c()));

const HOST_IP = "192.168.127.1";
const GUEST_MAC = "06:00:c0:a8:7f:0b";
const VSOCK_GUEST_TO_HOST = 5001;
const VSOCK_HOST_TO_GUEST = 5002;
const WRITTEN = "kindling-wrote-this";

/**
 * The checks, run by the guest's shell from the second drive (too long for the kernel command line); each
 * prints "name value" on a line of its own. The drive is mounted at /mnt before it runs.
 */
const SCRIPT = `
dmesg | grep -e 'smp: Brought up' -e 'is a 16550A' -e 'virtio_blk virtio0' -e 'EXT4-fs (vda)' -e 'IP-Config: Got DHCP' | sed 's/^[^]]*] /dmesg /'
printf 'cpus '; grep -c ^processor /proc/cpuinfo
printf 'stat-on-cpu0 '; taskset -c 0 cat /proc/self/stat
printf 'stat-on-cpu1 '; taskset -c 1 cat /proc/self/stat
printf 'sha256 '; sha256sum /mnt/known.bin
printf '%s' ${WRITTEN} | dd of=/dev/vdc conv=notrunc 2>/dev/null && sync && echo "rw-write ok"
if dd if=/dev/zero of=/dev/vdb bs=512 count=1 2>/dev/null; then echo "ro-write allowed"; else echo "ro-write refused"; fi
printf 'hwrng '; head -c 16 /dev/hwrng | wc -c
printf 'tunables %s\n' "$GLIBC_TUNABLES"
printf 'addr '; ip -4 -o addr show eth0
ping -c 1 -W 10 ${HOST_IP} > /dev/null && echo "ping ok"
printf 'http '; wget -q -O - http://${HOST_IP}:8080/hello.txt
printf 'vsock-out '; echo from-guest | vsock connect 2 ${VSOCK_GUEST_TO_HOST}
(echo from-guest-listener | vsock listen ${VSOCK_HOST_TO_GUEST} > /tmp/vsock-in) &
sleep 1
echo "vsock-listening"
wait
printf 'vsock-in '; cat /tmp/vsock-in
echo "to stderr" >&2
exit 7
`;

/** "name value" lines of the script's stdout as a map ("dmesg" lines are collected apart). */
function checks(stdout: string): Map<string, string> {
  return new Map(stdout.split("\n").filter((l) => l && !l.startsWith("dmesg ")).map((l) => [l.split(" ")[0]!, l.slice(l.indexOf(" ") + 1)] as [string, string]));
}

describe("Linux userland", () => {
  netnsTest(
    "one boot on 2 vCPUs: init, boot timer, exit status; SMP, blk, net, vsock and rng used from inside the guest",
    async () => {
      if (KVM_MISSING) throw new Error(`this test needs /dev/kvm: ${KVM_MISSING}`);
      const guest = await buildGuest({ log: () => {} });

      // A second drive: ext4 holding a known file. A third: raw, read-write, zeroed.
      const known = new Uint8Array(64 * 1024).map((_, i) => (i * 31 + 7) & 0xff);
      const knownDir = join(dir, "known");
      mkdirSync(knownDir);
      writeFileSync(join(knownDir, "known.bin"), known);
      writeFileSync(join(knownDir, "checks.sh"), SCRIPT);
      const dataImg = join(dir, "data.ext4");
      const mkfs = Bun.spawnSync(["mkfs.ext4", "-q", "-d", knownDir, dataImg, "4M"], { stderr: "pipe" });
      expect(mkfs.exitCode, mkfs.stderr.toString()).toBe(0);
      const scratch = join(dir, "scratch.img");
      writeFileSync(scratch, new Uint8Array(1024 * 1024));

      const boot = async () => {
        // The network: a TAP in a namespace, dnsmasq for DHCP, busybox httpd serving a page.
        const ns = NetNs.create("kusr");
        cleanups.push(() => ns.delete());
        const tap = uniqueName("ktap");
        const www = join(dir, "www");
        mkdirSync(www);
        writeFileSync(join(www, "hello.txt"), "hello-from-the-host\n");
        // The VM's net device creates the TAP; this wrapper then moves it into the namespace and starts
        // dnsmasq and httpd there, before any vCPU runs.
        class NetInNamespace extends VirtioNet {
          constructor(o: ConstructorParameters<typeof VirtioNet>[0]) {
            super(o);
            setUpNetwork(ns, tap, dir, www, cleanups);
          }
        }

        const uds = join(dir, "vsock.sock");
        const fromGuest = vsockListener(uds, VSOCK_GUEST_TO_HOST, cleanups);
        let hostToGuest: Promise<string> | undefined;
        let stdout = "";
        const logs: string[] = [];
        const consoleLines: string[] = [];
        const result = await exec(["sh", "-c", "mount -o ro /dev/vdb /mnt && . /mnt/checks.sh"], {
            kernel: guest.vmlinux,
            rootfs: guest.rootfs,
            vcpus: 2,
            bootArgs: "ip=dhcp",
            config: {
              drives: [
                { drive_id: "data", path_on_host: dataImg, is_root_device: false, is_read_only: true },
                { drive_id: "scratch", path_on_host: scratch, is_root_device: false, is_read_only: false },
              ],
              "network-interfaces": [{ iface_id: "eth0", host_dev_name: tap, guest_mac: GUEST_MAC }],
              vsock: { guest_cid: 3, uds_path: uds },
              entropy: {},
            },
            timeoutMs: 900_000,
            microvm: { deviceModels: { VirtioNet: NetInNamespace as never } },
            onStdout: (b) => {
              stdout += new TextDecoder().decode(b);
              if (!hostToGuest && stdout.includes("vsock-listening\n")) hostToGuest = vsockConnect(uds, VSOCK_HOST_TO_GUEST);
            },
            onConsole: (l) => consoleLines.push(l),
            log: (l) => logs.push(l),
          });
        return { result, fromGuest, hostToGuest, logs, consoleLines };
      };
      const { result, fromGuest, hostToGuest, logs, consoleLines } = await boot();
      const c = checks(result.stdout);
      const report = `stdout:\n${result.stdout}\nstderr:\n${result.stderr}\nconsole (last 40 lines):\n${consoleLines.slice(-40).join("\n")}\nvmm:\n${logs.slice(-20).join("\n")}`;

      // Boot and the command.
      expect(result.exitCode, report).toBe(7);
      expect(result.stderr, report).toBe("to stderr\n");
      expect(consoleLines, report).toContain("kindling: init ready");
      expect(result.timings.bootCompleteMs, report).toBeGreaterThan(0);
      expect(logs.some((l) => /^boot complete: the guest wrote 123 to the boot timer [\d.]+ ms after VM creation/.test(l)), report).toBe(true);
      expect(result.end.reason, report).toBe("reset");
      // What the kernel said on the way (its log is kept off the console by `quiet`; dmesg has it).
      const dmesg = result.stdout.split("\n").filter((l) => l.startsWith("dmesg ")).join("\n");
      expect(dmesg, report).toContain("smp: Brought up 1 node, 2 CPUs");
      expect(dmesg, report).toMatch(/ttyS0 at I\/O 0x3f8 \(irq = 4, base_baud = 115200\) is a 16550A/);
      expect(dmesg, report).toMatch(/virtio_blk virtio0: \[vda\] \d+ 512-byte logical blocks/);
      expect(dmesg, report).toContain("EXT4-fs (vda): mounted filesystem");
      expect(dmesg, report).toMatch(new RegExp(`IP-Config: Got DHCP answer from ${HOST_IP.replaceAll(".", "\\.")}`));
      // SMP.
      expect(c.get("cpus"), report).toBe("2");
      // Field 39 of /proc/self/stat: the CPU the process last ran on (proc(5)); its comm "(cat)" has no spaces.
      expect(c.get("stat-on-cpu0")?.split(" ")[38], report).toBe("0");
      expect(c.get("stat-on-cpu1")?.split(" ")[38], report).toBe("1");
      // Block devices.
      expect(c.get("sha256")?.split(" ")[0], report).toBe(new Bun.CryptoHasher("sha256").update(known).digest("hex"));
      expect(c.get("rw-write"), report).toBe("ok");
      expect(new TextDecoder().decode(readFileSync(scratch).subarray(0, WRITTEN.length))).toBe(WRITTEN);
      expect(c.get("ro-write"), report).toBe("refused");
      // Network.
      expect(c.get("addr"), report).toMatch(/inet 192\.168\.127\.(1\d|20)\//);
      expect(c.get("ping"), report).toBe("ok");
      expect(c.get("http"), report).toBe("hello-from-the-host");
      // vsock, both ways.
      expect(await fromGuest).toBe("from-guest\n");
      expect(c.get("vsock-out"), report).toBe("from-host-to-from-guest");
      expect(hostToGuest, report).toBeDefined();
      expect(await hostToGuest!).toBe("from-guest-listener\n");
      expect(c.get("vsock-in"), report).toBe("from-host");
      // Entropy.
      expect(c.get("hwrng"), report).toBe("16");
      if (detectHost().emulatesGuestKernel) {
        expect(logs.some((l) => l.includes("syscall assist: breakpoint on the guest's #PF handler")), report).toBe(true);
        // Inherited from init's environment by every process: glibc stays off the AVX registers the guest
        // kernel (noxsave) does not save (GLIBC_NO_AVX in src/arch/x86_64/cpuid.ts).
        expect(c.get("tunables"), report).toBe(GLIBC_NO_AVX);
      }
    },
    1_000_000,
  );
});

/** Move the VM's TAP into the namespace, address it, and start dnsmasq and httpd there. */
function setUpNetwork(ns: NetNs, tap: string, dir: string, www: string, cleanups: (() => void)[]): void {
  ns.adopt(tap);
  ns.ip("addr", "add", `${HOST_IP}/24`, "dev", tap);
  ns.ip("link", "set", tap, "up");
  const dnsmasq = Bun.spawn(
    ["ip", "netns", "exec", ns.name, "dnsmasq", "--no-daemon", "--port=0", "--no-resolv", "--no-hosts", `--interface=${tap}`,
      "--bind-interfaces", "--dhcp-range=192.168.127.10,192.168.127.20,1h", "--dhcp-authoritative", `--log-facility=${join(dir, "dnsmasq.log")}`, "--pid-file="],
    { stdout: "ignore", stderr: "ignore" },
  );
  const httpd = Bun.spawn(["ip", "netns", "exec", ns.name, "busybox", "httpd", "-f", "-p", `${HOST_IP}:8080`, "-h", www], { stdout: "ignore", stderr: "ignore" });
  cleanups.push(() => dnsmasq.kill(), () => httpd.kill());
}
