// `kindling jailer`: a jailed `kindling api` (the VMM compiled with bun build --compile) boots a guest
// through its API socket inside the jail; a request naming a host path outside the jail fails; the VMM runs
// as the given uid/gid, under seccomp, in the cgroup with the limits written, with the resource limits
// set. Read back from /proc/<pid>/ and cgroupfs. Needs /dev/kvm and root (mknod, mounts, setuid).

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { copyFileSync, chownSync, existsSync, linkSync, mkdtempSync, readdirSync, readFileSync, rmdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildVmm } from "../src/jail/build.ts";
import { buildGuest, guestArtifactsIfBuilt } from "../guest/build.ts";
import { cgroupMounts, controllerOf, parseCgroupSetting } from "../src/jail/cgroups.ts";
import { EXIT } from "../src/cli/main.ts";
import { gatedTest } from "./support/gated.ts";
import { KVM_MISSING } from "./support/kvm.ts";
import { NETNS_MISSING, NetNs } from "./support/netns.ts";
import { collect, spawnKindling } from "./support/api.ts";
import { LOG_LINE, serialElf } from "./support/serial-elf.ts";

const rootMissing = process.getuid?.() === 0 ? undefined : "the jailer needs root (mknod, mount, setuid)";
const jailTest = gatedTest("KVM and root", KVM_MISSING ?? rootMissing);

const UID = 12345;
const GID = 12346;
const dir = mkdtempSync(join(tmpdir(), "kindling-jailer-"));
const vmm = join(dir, "kindling");
const made: string[] = [];
afterAll(async () => {
  for (const d of made.reverse()) {
    // A cgroup can be removed once its last process has gone.
    for (let i = 0; i < 50 && existsSync(d); i++) {
      try {
        rmdirSync(d);
      } catch {
        await Bun.sleep(100);
      }
    }
  }
  rmSync(dir, { recursive: true, force: true });
});

describe("jailer pieces", () => {
  test("cgroup mounts from mountinfo: v2 and v1 by controller", () => {
    const m = cgroupMounts([
      "30 25 0:26 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw",
      "31 25 0:27 / /sys/fs/cgroup/memory rw,nosuid shared:9 - cgroup cgroup rw,memory",
      "32 25 0:28 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct",
      "33 25 0:29 / /proc rw - proc proc rw",
    ].join("\n"));
    expect(m.v2).toBe("/sys/fs/cgroup/unified");
    expect([...m.v1]).toEqual([["memory", "/sys/fs/cgroup/memory"], ["cpu", "/sys/fs/cgroup/cpu,cpuacct"], ["cpuacct", "/sys/fs/cgroup/cpu,cpuacct"]]);
  });

  test("--cgroup KEY=VALUE", () => {
    expect(parseCgroupSetting("memory.max=268435456")).toEqual({ key: "memory.max", value: "268435456" });
    expect(controllerOf("memory.max")).toBe("memory");
    expect(controllerOf("cgroup.max.descendants")).toBeUndefined();
    for (const bad of ["memory", "=1", "../x.max=1", "memory.max=a/b", "memory.max="]) expect(() => parseCgroupSetting(bad), bad).toThrow(/--cgroup/);
  });

  test("usage errors: no VMM arguments, a bad id, a bad limit", async () => {
    const base = ["jailer", "--exec-file", "/bin/true", "--uid", "1", "--gid", "1"];
    for (const [args, message] of [
      [[...base, "--id", "a"], /after --/],
      [[...base, "--id", "a/b", "--", "api"], /letters, digits/],
      [[...base, "--id", "a", "--resource-limit", "cpu=1", "--", "api"], /--resource-limit/],
      [[...base, "--id", "a", "--cgroup-version", "3", "--", "api"], /1 or 2/],
    ] as const) {
      const p = spawnKindling([...args]);
      const err = collect(p.stderr);
      expect(await p.exited, args.join(" ")).toBe(EXIT.USAGE);
      await err.done;
      expect(err.text).toMatch(message);
    }
  });
});

/** The jailed VMM's pid: the jailer's own (it execs the VMM), or with --new-pid-ns the one in /kindling.pid. */
function vmmPid(jailer: number, root: string): number | undefined {
  const file = join(root, "kindling.pid");
  if (existsSync(file)) return Number(readFileSync(file, "utf8"));
  return readFileSync(`/proc/${jailer}/comm`, "utf8").trim() === "kindling" ? jailer : undefined;
}

const status = (pid: number, field: string) => new RegExp(`^${field}:[ \\t]*(.*)$`, "m").exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1];

interface JailRun {
  id: string;
  extra: string[];
  /** Files the jailer leaves in the jail's root beside the VMM, its libraries, /dev, /proc and the socket. */
  files: string[];
  check: (pid: number) => void;
}

/** Start a jailed `kindling api`, check it with `check`, then boot the serial ELF through its API. */
async function jailedBoot({ id, extra, files, check }: JailRun): Promise<void> {
  const base = join(dir, "jails");
  const root = join(base, "kindling", id, "root");
  const p = spawnKindling(["jailer", "--id", id, "--exec-file", vmm, "--uid", String(UID), "--gid", String(GID), "--chroot-base-dir", base, ...extra, "--", "--level", "debug", "api", "--api-sock", "/api.sock"]);
  const out = collect(p.stdout);
  const err = collect(p.stderr);
  const report = () => `--- stdout ---\n${out.text}\n--- stderr ---\n${err.text}`;
  let pid: number | undefined;
  const killer = setTimeout(() => p.kill("SIGKILL"), 30_000);
  try {
    const sock = join(root, "api.sock");
    for (let i = 0; i < 200 && !existsSync(sock); i++) await Bun.sleep(50);
    expect(existsSync(sock), report()).toBe(true);
    // The filter goes on once the VMM is set up, just after its socket is listening.
    expect(await out.until(/seccomp: \d+ BPF instructions/, 5000), report()).toBe(true);
    pid = vmmPid(p.pid, root);
    if (pid === undefined) throw new Error(`no jailed VMM among the jailer's processes\n${report()}`);
    expect(status(pid, "Uid")).toBe(`${UID}\t${UID}\t${UID}\t${UID}`);
    expect(status(pid, "Gid")).toBe(`${GID}\t${GID}\t${GID}\t${GID}`);
    expect(status(pid, "Groups")).toBe("");
    expect(status(pid, "Seccomp")).toBe("2"); // on by default in the jailer
    expect(readFileSync(`/proc/${pid}/limits`, "utf8")).toMatch(/Max open files\s+512\s+512/);
    // Its root is the jail: only the VMM, its libraries, /dev's three nodes, /proc and its socket.
    expect(readdirSync(`/proc/${pid}/root`).sort()).toEqual(["api.sock", "dev", "kindling", "lib", "lib64", "proc", ...files].sort());
    expect(readdirSync(`/proc/${pid}/root/dev`).sort()).toEqual(["kvm", "net", "urandom"]);
    check(pid);

    const call = async (method: string, path: string, body: unknown) => {
      const r = await fetch(`http://localhost${path}`, { method, body: JSON.stringify(body), unix: sock } as RequestInit);
      return { status: r.status, text: await r.text() };
    };
    // A host path outside the jail does not exist in it.
    const hostKernel = join(dir, "guest.elf");
    writeFileSync(hostKernel, serialElf("jailed guest\n"));
    const outside = await call("PUT", "/boot-source", { kernel_image_path: hostKernel });
    expect(outside.status).toBe(400);
    expect(outside.text).toContain(`${hostKernel}: no such file`);
    expect((await call("PUT", "/drives/rootfs", { drive_id: "rootfs", path_on_host: "/etc/hostname", is_root_device: true, is_read_only: true })).status).toBe(400);
    // The same kernel copied into the jail boots.
    writeFileSync(join(root, "guest.elf"), serialElf("jailed guest\n"));
    for (const [path, body] of [
      ["/boot-source", { kernel_image_path: "/guest.elf" }],
      ["/machine-config", { vcpu_count: 1, mem_size_mib: 32 }],
      ["/actions", { action_type: "InstanceStart" }],
    ] as const) {
      expect(await call("PUT", path, body), `PUT ${path}\n${report()}`).toEqual({ status: 204, text: "" });
    }
    // The VMM ends with the guest; with --new-pid-ns the jailer had already ended (0) after starting it.
    expect(await p.exited, report()).toBe(0);
    await out.done;
    // The guest's bytes and the VMM's log lines share stdout and may interleave.
    expect(out.text.replace(LOG_LINE, ""), report()).toContain("jailed guest\n");
    expect(out.text, report()).toContain("guest ended: guest reset the machine");
  } finally {
    clearTimeout(killer);
    p.kill("SIGKILL");
    if (pid !== undefined) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // ended
      }
    }
  }
}

describe("a jailed kindling api", () => {
  beforeAll(async () => {
    if (!KVM_MISSING && !rootMissing) await buildVmm(vmm);
  }, 60_000);

  jailTest("cgroup v2: boots a guest through the API; uid, gid, seccomp, cgroup and limits read back", async () => {
    const mounts = cgroupMounts();
    if (!mounts.v2) throw new Error("no cgroup2 file system is mounted on this host");
    // Only controllers cgroup v2 holds here can be limited through it (on a hybrid host, v1 holds most).
    const available = readFileSync(join(mounts.v2, "cgroup.controllers"), "utf8").trim().split(/\s+/);
    const settings: Record<string, string> = { "cgroup.max.descendants": "0", "cgroup.max.depth": "0" };
    if (available.includes("pids")) settings["pids.max"] = "64";
    if (available.includes("memory")) settings["memory.max"] = String(512 << 20);
    if (available.includes("hugetlb")) settings["hugetlb.2MB.max"] = "0";
    const parent = "kindling-jailer-test";
    const cg = join(mounts.v2, parent, "v2");
    made.push(join(mounts.v2, parent), cg);
    await jailedBoot({
      id: "v2",
      files: [],
      extra: ["--cgroup-version", "2", "--parent-cgroup", parent, ...Object.entries(settings).flatMap(([k, v]) => ["--cgroup", `${k}=${v}`]), "--resource-limit", "no-file=512"],
      check: (pid) => {
        expect(readFileSync(`/proc/${pid}/cgroup`, "utf8")).toContain(`0::/${parent}/v2\n`);
        for (const [k, v] of Object.entries(settings)) expect(readFileSync(join(cg, k), "utf8").trim(), k).toBe(v);
        expect(readFileSync(join(cg, "cgroup.procs"), "utf8").trim()).toBe(String(pid));
        expect(status(pid, "NSpid")).toBe(String(pid)); // no new PID namespace without --new-pid-ns
      },
    });
  }, 60_000);

  jailTest("cgroup v1 memory limit and a new PID namespace: the VMM is its pid 1", async () => {
    const mounts = cgroupMounts();
    const memory = mounts.v1.get("memory");
    if (!memory) throw new Error("no cgroup v1 memory hierarchy on this host (a pure cgroup v2 host: the v2 test covers it)");
    // Under this process's own memory cgroup, so the VMM stays accounted where the test runs.
    const own = /^\d+:memory:(.*)$/m.exec(readFileSync("/proc/self/cgroup", "utf8"))?.[1] ?? "/";
    const parent = join(own, "kindling-jailer-test").replace(/^\//, "");
    const cg = join(memory, parent, "v1");
    made.push(join(memory, parent), cg);
    const limit = String(768 << 20);
    await jailedBoot({
      id: "v1",
      extra: ["--cgroup-version", "1", "--parent-cgroup", parent, "--cgroup", `memory.limit_in_bytes=${limit}`, "--resource-limit", "no-file=512", "--new-pid-ns"],
      files: ["kindling.pid"],
      check: (pid) => {
        expect(readFileSync(`/proc/${pid}/cgroup`, "utf8")).toContain(`:memory:/${parent}/v1\n`);
        expect(readFileSync(join(cg, "memory.limit_in_bytes"), "utf8").trim()).toBe(limit);
        expect(readFileSync(join(cg, "cgroup.procs"), "utf8")).toContain(String(pid));
        expect(status(pid, "NSpid")).toBe(`${pid}\t1`);
      },
    });
  }, 60_000);
});

describe("a daemonized jailer in a network namespace", () => {
  const netnsJailTest = gatedTest("KVM, root and network namespaces", KVM_MISSING ?? rootMissing ?? NETNS_MISSING);

  netnsJailTest("--daemonize --netns: the VMM opens a TAP its uid owns there; console and log go to files in the jail", async () => {
    if (!existsSync(vmm)) await buildVmm(vmm);
    const ns = NetNs.create("kjail");
    const base = join(dir, "jails");
    const root = join(base, "kindling", "daemon", "root");
    let pid: number | undefined;
    try {
      // The VMM has no CAP_NET_ADMIN: the TAP is made beforehand and given to its uid.
      ns.ip("tuntap", "add", "dev", "tapjail0", "mode", "tap", "user", String(UID), "vnet_hdr");
      const p = spawnKindling(["jailer", "--id", "daemon", "--exec-file", vmm, "--uid", String(UID), "--gid", String(GID), "--chroot-base-dir", base, "--netns", `/var/run/netns/${ns.name}`, "--daemonize", "--", "api", "--api-sock", "/api.sock"]);
      const out = collect(p.stdout);
      expect(await p.exited).toBe(0); // at once: the jailer goes on in the background
      await out.done;
      const sock = join(root, "api.sock");
      for (let i = 0; i < 200 && !existsSync(sock); i++) await Bun.sleep(50);
      expect(existsSync(sock)).toBe(true);
      pid = Number(out.text.trim());
      expect(status(pid, "Uid")).toBe(`${UID}\t${UID}\t${UID}\t${UID}`);
      // In the namespace given, in a session of its own, with no terminal.
      const inode = (path: string) => Bun.spawnSync(["stat", "-L", "-c", "%i", path]).stdout.toString().trim();
      expect(inode(`/proc/${pid}/ns/net`)).toBe(inode(`/var/run/netns/${ns.name}`));
      expect(readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ")[3]).toBe(String(pid)); // session id
      writeFileSync(join(root, "guest.elf"), serialElf("daemonized guest\n"));
      const call = async (path: string, body: unknown) => (await fetch(`http://localhost${path}`, { method: "PUT", body: JSON.stringify(body), unix: sock } as RequestInit)).status;
      for (const [path, body] of [
        ["/logger", { log_path: "/vmm.log", level: "Info" }],
        ["/serial", { serial_out_path: "/serial.out" }],
        ["/boot-source", { kernel_image_path: "/guest.elf" }],
        ["/machine-config", { vcpu_count: 1, mem_size_mib: 32 }],
        ["/network-interfaces/eth0", { iface_id: "eth0", host_dev_name: "tapjail0" }],
        ["/actions", { action_type: "InstanceStart" }],
      ] as const) {
        expect(await call(path, body), `PUT ${path}\n${existsSync(join(root, "vmm.log")) ? readFileSync(join(root, "vmm.log"), "utf8") : ""}`).toBe(204);
      }
      for (let i = 0; i < 100 && existsSync(`/proc/${pid}`); i++) await Bun.sleep(50);
      expect(existsSync(`/proc/${pid}`)).toBe(false);
      expect(readFileSync(join(root, "serial.out"), "utf8")).toBe("daemonized guest\n");
      expect(readFileSync(join(root, "vmm.log"), "utf8")).toMatch(/ended: reset/);
    } finally {
      if (pid !== undefined) {
        try {
          process.kill(pid, "SIGKILL");
        } catch {
          // ended
        }
      }
      ns.delete();
    }
  }, 60_000);
});

describe("a jailed kindling api booting Linux", () => {
  // The one Linux boot of this file: 2 to 4 minutes where the host emulates guest kernel code.
  jailTest("the guest kernel finds its root drive, entropy and vsock devices and mounts ext4, under the filter", async () => {
    if (!existsSync(vmm)) await buildVmm(vmm);
    const g = guestArtifactsIfBuilt() ?? (await buildGuest({ log: () => {} }));
    const base = join(dir, "jails");
    const root = join(base, "kindling", "linux", "root");
    const p = spawnKindling(["jailer", "--id", "linux", "--exec-file", vmm, "--uid", String(UID), "--gid", String(GID), "--chroot-base-dir", base, "--", "api", "--api-sock", "/api.sock"]);
    const out = collect(p.stdout);
    const err = collect(p.stderr);
    const report = () => `--- stdout (last 3000) ---\n${out.text.slice(-3000)}\n--- stderr ---\n${err.text.slice(-3000)}`;
    const killer = setTimeout(() => p.kill("SIGKILL"), 330_000);
    try {
      const sock = join(root, "api.sock");
      for (let i = 0; i < 200 && !existsSync(sock); i++) await Bun.sleep(50);
      expect(existsSync(sock), report()).toBe(true);
      // The kernel and a writable copy of the root filesystem, placed in the jail as an operator would.
      linkSync(g.vmlinux, join(root, "vmlinux"));
      copyFileSync(g.rootfs, join(root, "rootfs.ext4"));
      chownSync(join(root, "rootfs.ext4"), UID, GID);
      const call = async (path: string, body: unknown) => (await fetch(`http://localhost${path}`, { method: "PUT", body: JSON.stringify(body), unix: sock } as RequestInit)).status;
      for (const [path, body] of [
        ["/boot-source", { kernel_image_path: "/vmlinux", boot_args: "console=ttyS0 reboot=k panic=1 pci=off" }],
        ["/drives/rootfs", { drive_id: "rootfs", path_on_host: "/rootfs.ext4", is_root_device: true, is_read_only: false }],
        ["/entropy", {}],
        ["/vsock", { guest_cid: 3, uds_path: "/v.sock" }],
        ["/machine-config", { vcpu_count: 1, mem_size_mib: 128 }],
        ["/actions", { action_type: "InstanceStart" }],
      ] as const) {
        expect(await call(path, body), `PUT ${path}\n${report()}`).toBe(204);
      }
      expect(status(p.pid, "Seccomp")).toBe("2");
      expect(await out.until(/EXT4-fs \(vda\): mounted filesystem/, 300_000), report()).toBe(true);
      expect(out.text).toMatch(/virtio_blk virtio0: \[vda\]/);
      expect(existsSync(join(root, "v.sock")), "vsock's Unix socket, made inside the jail").toBe(true);
      p.kill("SIGTERM");
      expect(await p.exited, report()).toBe(0);
      expect(p.signalCode).toBeNull();
    } finally {
      clearTimeout(killer);
      p.kill("SIGKILL");
    }
  }, 340_000);
});
