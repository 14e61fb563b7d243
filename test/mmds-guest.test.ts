// MMDS from inside a Linux guest: one boot (exec(), src/exec.ts) with a virtio-net interface that MMDS is
// configured on, version V2, and a shell script run by the guest's busybox: it addresses eth0 and routes
// 169.254.169.254 through it (as Firecracker's guide tells a guest to), asks for a token with PUT (busybox
// nc, since busybox wget cannot PUT), reads a nested key with it (busybox wget --header), and shows that a
// GET without a token (V1 style) is refused. No timeouts (nc -w, wget -T): busybox 1.35's static wget
// crashes with -T, and nc ends by itself (it half-closes after its input, MMDS answers and closes). The guest kernel's own TCP talks to src/mmds/; no frame of it
// reaches the TAP. Slow where the host emulates guest kernel code (minutes), so it is one boot.

import { afterAll, describe, expect } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildGuest } from "../guest/build.ts";
import { exec } from "../src/exec.ts";
import { KVM_MISSING } from "./support/kvm.ts";
import { netnsTest, uniqueName } from "./support/netns.ts";

const dir = mkdtempSync(join(tmpdir(), "kindling-mmds-guest-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const MAC_KEY = "latest/meta-data/network/interfaces/macs/02:29:96:8f:6a:2d/device-number";

/** Each check prints "name value" on a line of its own. */
const SCRIPT = `
ip addr add 10.0.2.2/24 dev eth0 && ip link set eth0 up && ip route add 169.254.169.254 dev eth0
T=$(printf 'PUT /latest/api/token HTTP/1.1\\r\\nX-metadata-token-ttl-seconds: 60\\r\\n\\r\\n' | nc 169.254.169.254 80 | tail -n 1)
echo "token-length \${#T}"
echo "key $(wget -q -O - --header "X-metadata-token: $T" http://169.254.169.254/${MAC_KEY})"
echo "listing $(wget -q -O - --header "X-metadata-token: $T" http://169.254.169.254/latest/ | tr '\\n' ,)"
wget -q -O - http://169.254.169.254/latest/meta-data/ami-id >/dev/null 2>&1
echo "v1-status $?"
echo "v1-answer $(printf 'GET /latest/meta-data/ami-id HTTP/1.1\\r\\n\\r\\n' | nc 169.254.169.254 80 | head -n 1)"
`;

describe("MMDS inside a Linux guest", () => {
  netnsTest(
    "V2: a token by PUT, a nested key with it, a GET without a token refused (busybox nc and wget in the guest)",
    async () => {
      if (KVM_MISSING) throw new Error(`this test needs /dev/kvm: ${KVM_MISSING}`);
      const guest = await buildGuest({ log: () => {} });
      const logs: string[] = [];
      const consoleLines: string[] = [];
      const result = await exec(["sh", "-c", SCRIPT], {
        kernel: guest.vmlinux,
        rootfs: guest.rootfs,
        // The TAP stays down on the host: MMDS answers inside the VMM, nothing needs the host's network.
        config: { "network-interfaces": [{ iface_id: "eth0", host_dev_name: uniqueName("kmmds"), guest_mac: "06:00:0a:00:02:02" }] },
        timeoutMs: 900_000,
        onVm: (vm) => {
          vm.setMmdsConfig({ network_interfaces: ["eth0"], version: "V2" });
          vm.putMmds({ latest: { "meta-data": { "ami-id": "ami-87654321", network: { interfaces: { macs: { "02:29:96:8f:6a:2d": { "device-number": "13345342" } } } } }, "user-data": "x" } });
        },
        onConsole: (l) => consoleLines.push(l),
        log: (l) => logs.push(l),
      });
      const c = new Map(result.stdout.split("\n").filter(Boolean).map((l) => [l.split(" ")[0]!, l.slice(l.indexOf(" ") + 1)] as [string, string]));
      const report = `stdout:\n${result.stdout}\nstderr:\n${result.stderr}\nconsole (last 30 lines):\n${consoleLines.slice(-30).join("\n")}\nvmm:\n${logs.slice(-20).join("\n")}`;
      expect(result.exitCode, report).toBe(0);
      expect(c.get("token-length"), report).toBe("48");
      expect(c.get("key"), report).toBe("13345342");
      expect(c.get("listing"), report).toBe("meta-data/,user-data");
      expect(c.get("v1-status"), report).toBe("1");
      expect(c.get("v1-answer")?.trim(), report).toBe("HTTP/1.1 401");
    },
    1_000_000,
  );
});
