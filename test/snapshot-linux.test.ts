// A Linux guest at its shell, with a network interface and a vsock device, snapshotted through the API of
// one `kindling api` process, which is then killed, and loaded in a new `kindling api` process through the
// API with resume_vm, `network_overrides` (a new TAP) and `vsock_override` (a new Unix socket): commands
// typed after the load run, read the root disk through virtio-blk, ping the host side of the new TAP
// (eth0 was addressed and brought up before the snapshot), and use vsock both ways. Then `kindling exec
// --snapshot` runs a command in a restore of the same snapshot. A second test makes the snapshot the way
// `kindling exec --save-snapshot` does, without root or a network. Slow where the host emulates guest
// kernel code (each boot takes a minute or more there, more under load; the loads do not boot at all).

import { afterAll, describe, expect } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildGuest } from "../guest/build.ts";
import { DEFAULT_CMDLINE } from "../src/arch/x86_64/cmdline.ts";
import { KVM_MISSING, kvmTest } from "./support/kvm.ts";
import { NetNs, netnsTest, uniqueName } from "./support/netns.ts";
import { ROOT } from "./support/api.ts";
import { vsockConnectOnce, vsockListener } from "./support/vsock.ts";

const dir = mkdtempSync(join(tmpdir(), "kindling-snapshot-linux-"));
const procs: ReturnType<typeof Bun.spawn>[] = [];
const cleanups: (() => void)[] = [];
afterAll(() => {
  for (const p of procs) p.kill("SIGKILL");
  cleanups.reverse().forEach((c) => c());
  rmSync(dir, { recursive: true, force: true });
});

const HOST_IP = "192.168.128.1";
const GUEST_IP = "192.168.128.2";
const GUEST_MAC = "06:00:c0:a8:80:02";
const VSOCK_GUEST_TO_HOST = 5101;
const VSOCK_HOST_TO_GUEST = 5102;

/** `kindling api` with its stdin a pipe (the guest's console input) and the console sent to a file. */
async function kindlingApi(name: string) {
  const sock = join(dir, `${name}.sock`);
  const serial = join(dir, `${name}.serial`);
  const p = Bun.spawn([process.execPath, "src/cli/main.ts", "api", "--api-sock", sock], { cwd: ROOT, stdin: "pipe", stdout: "ignore", stderr: "pipe" });
  procs.push(p);
  for (let i = 0; i < 100 && !existsSync(sock); i++) await Bun.sleep(100);
  const call = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(`http://localhost${path}`, { method, unix: sock, body: body === undefined ? undefined : JSON.stringify(body) } as RequestInit);
    return { status: res.status, body: await res.text() };
  };
  expect(await call("PUT", "/serial", { serial_out_path: serial })).toEqual({ status: 204, body: "" });
  return {
    call,
    console: () => (existsSync(serial) ? readFileSync(serial, "latin1") : ""),
    type: (text: string) => void (p.stdin.write(text), p.stdin.flush()),
    kill: async () => (p.kill("SIGKILL"), await p.exited),
  };
}

async function until(test: () => boolean, ms: number, what: string, show: () => string): Promise<void> {
  const end = Date.now() + ms;
  while (!test()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}; console:\n${show().slice(-2000)}`);
    await Bun.sleep(250);
  }
}

describe("a Linux guest at its shell", () => {
  netnsTest("boot with net and vsock, snapshot, kill; load in a new kindling api with resume_vm and overrides: disk, net and vsock work; kindling exec --snapshot", async () => {
    if (KVM_MISSING) throw new Error(`this test needs /dev/kvm: ${KVM_MISSING}`);
    const g = await buildGuest({ log: () => {} });
    const ok = { status: 204, body: "" };
    const state = join(dir, "vm.state");
    const mem = join(dir, "vm.mem");
    const ns = NetNs.create("ksnp");
    cleanups.push(() => ns.delete());

    // Boot to the shell (the guest's init runs one when no command is given) in a `kindling api`.
    const a = await kindlingApi("boot");
    const udsA = join(dir, "vsock-a.sock");
    for (const [path, body] of [
      ["/boot-source", { kernel_image_path: g.vmlinux, boot_args: `${DEFAULT_CMDLINE} quiet` }],
      ["/machine-config", { vcpu_count: 1, mem_size_mib: 128 }],
      ["/drives/rootfs", { drive_id: "rootfs", path_on_host: g.rootfs, is_root_device: true, is_read_only: true }],
      ["/network-interfaces/eth0", { iface_id: "eth0", host_dev_name: uniqueName("ktpa"), guest_mac: GUEST_MAC }],
      ["/vsock", { guest_cid: 3, uds_path: udsA }],
      ["/actions", { action_type: "InstanceStart" }],
    ] as const) expect(await a.call("PUT", path, body), path).toEqual(ok);
    // Ask until the shell answers (the arithmetic shows the shell ran the line, not the tty's echo).
    await until(() => a.console().includes("kindling: init ready"), 1_500_000, "the guest's init", a.console);
    let asked = 0;
    await until(() => {
      if (Date.now() - asked > 10_000) (a.type("echo shell-$((6*7))\n"), (asked = Date.now()));
      return a.console().includes("shell-42");
    }, 600_000, "the shell", a.console);
    // eth0 gets its address and goes up before the snapshot.
    a.type(`ip addr add ${GUEST_IP}/24 dev eth0 && ip link set eth0 up && echo net-$((6*7))-up\n`);
    await until(() => a.console().includes("net-42-up"), 300_000, "eth0 up", a.console);
    await Bun.sleep(500); // let the shell print its prompt and wait for input again
    expect(await a.call("PATCH", "/vm", { state: "Paused" })).toEqual(ok);
    expect(await a.call("PUT", "/snapshot/create", { snapshot_type: "Full", snapshot_path: state, mem_file_path: mem })).toEqual(ok);
    await a.kill();

    // Load in a new process: a new TAP, a new vsock socket.
    const b = await kindlingApi("load");
    const tapB = uniqueName("ktpb");
    const udsB = join(dir, "vsock-b.sock");
    expect(await b.call("PUT", "/snapshot/load", {
      snapshot_path: state, mem_backend: { backend_type: "File", backend_path: mem }, resume_vm: true,
      network_overrides: [{ iface_id: "eth0", host_dev_name: tapB }], vsock_override: { uds_path: udsB },
    })).toEqual(ok);
    expect(JSON.parse((await b.call("GET", "/")).body).state).toBe("Running");
    // The configuration came with the snapshot, with the overrides.
    const config = JSON.parse((await b.call("GET", "/vm/config")).body);
    expect(config.drives[0].path_on_host).toBe(g.rootfs);
    expect(config["network-interfaces"][0].host_dev_name).toBe(tapB);
    expect(config.vsock.uds_path).toBe(udsB);
    // The new TAP, which the load created, goes into the namespace with the host's address.
    ns.adopt(tapB);
    ns.ip("addr", "add", `${HOST_IP}/24`, "dev", tapB);
    ns.ip("link", "set", tapB, "up");

    // A command after the load; it reads the root disk (virtio-blk, through the restored queues) too.
    b.type("echo after-$((6*7)) $(dd if=/dev/vda bs=4096 skip=77 count=1 2>/dev/null | wc -c)\n");
    await until(() => b.console().includes("after-42 4096"), 300_000, "the command after the load", b.console);
    // The network, through the new TAP.
    b.type(`ping -c 1 -W 10 ${HOST_IP} > /dev/null && echo ping-$((6*7))-ok\n`);
    await until(() => b.console().includes("ping-42-ok"), 300_000, "a ping from the guest", b.console);
    expect(ns.stat(tapB, "rx_packets")).toBeGreaterThan(0);
    // vsock, guest-initiated then host-initiated, through the new socket.
    const fromGuest = vsockListener(udsB, VSOCK_GUEST_TO_HOST, cleanups);
    b.type(`echo vsock-out-$((6*7)) $(echo from-guest | vsock connect 2 ${VSOCK_GUEST_TO_HOST})\n`);
    await until(() => b.console().includes("vsock-out-42 from-host-to-from-guest"), 300_000, "guest-to-host vsock", b.console);
    expect(await fromGuest).toBe("from-guest\n");
    b.type(`echo vsock-in-$((6*7)) $(echo from-guest-listener | vsock listen ${VSOCK_HOST_TO_GUEST})\n`);
    await until(() => b.console().includes(`vsock listen ${VSOCK_HOST_TO_GUEST})`), 60_000, "the typed line's echo", b.console);
    let toGuest: string | Error = new Error("not tried");
    for (let i = 0; i < 60 && typeof toGuest !== "string"; i++) {
      // The guest's listener may not be up yet: the guest driver then answers RST.
      toGuest = await vsockConnectOnce(udsB, VSOCK_HOST_TO_GUEST).catch((e: Error) => e);
      if (typeof toGuest !== "string") await Bun.sleep(1000);
    }
    expect(toGuest).toBe("from-guest-listener\n");
    await until(() => b.console().includes("vsock-in-42 from-host"), 300_000, "host-to-guest vsock", b.console);
    await b.kill();

    // kindling exec --snapshot: the same snapshot, a command, its output and exit status. The killed
    // process left its vsock socket file behind; Firecracker's rule: whoever loads removes a stale one.
    rmSync(udsA, { force: true });
    const p = Bun.spawn([process.execPath, "src/cli/main.ts", "exec", "--snapshot", dir, "--timeout", "300", "--", "sh", "-c", "echo from-snapshot; exit 3"], { cwd: ROOT, stdout: "pipe", stderr: "pipe" });
    procs.push(p);
    const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
    // The command's output first; kindling's own info line (on stdout when it is not a terminal) after it.
    expect({ first: out.split("\n")[0], code }, err).toEqual({ first: "from-snapshot", code: 3 });
    expect(out + err).toMatch(/exit status 3; snapshot loaded \d+ ms, first output \d+ ms/);
  }, 2_400_000);

  kvmTest("kindling exec --save-snapshot boots to the shell and saves it; exec --snapshot runs a command in a restore of it", async () => {
    const snap = join(dir, "exec-save");
    const run = async (args: string[]) => {
      const p = Bun.spawn([process.execPath, "src/cli/main.ts", "exec", ...args], { cwd: ROOT, stdout: "pipe", stderr: "pipe" });
      procs.push(p);
      const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
      return { out, err, code };
    };
    const saved = await run(["--save-snapshot", snap, "--timeout", "1500"]);
    expect(saved.code, saved.err).toBe(0);
    expect(existsSync(join(snap, "vm.mem")), saved.err).toBe(true);
    // Left at the quick shell (src/exec.ts): echo off, commands read a line at a time, stdin /dev/null.
    expect(JSON.parse(readFileSync(join(snap, "exec.json"), "utf8")), saved.err).toMatchObject({ shell: 2, state_sha256: expect.stringMatching(/^[0-9a-f]{64}$/) });
    const r = await run(["--snapshot", snap, "--timeout", "300", "--", "sh", "-c", "echo saved-$((6*7)); echo to-stderr >&2; cat; exit 4"]);
    // Nothing but the command's output: no echo of the typed line, no prompt; `cat` read /dev/null.
    expect({ out: r.out.split("\n").slice(0, 2), code: r.code }, r.err).toEqual({ out: ["saved-42", "to-stderr"], code: 4 });
    // Twice from the same snapshot: each restore is independent.
    const again = await run(["--snapshot", snap, "--timeout", "300", "--", "echo", "it's", "quoted"]);
    expect({ first: again.out.split("\n")[0], code: again.code }, again.err).toEqual({ first: "it's quoted", code: 0 });
    // Output without a final newline: the status shares its line, and is still found.
    const bare = await run(["--snapshot", snap, "--timeout", "300", "--", "printf", "no-newline"]);
    expect({ starts: bare.out.startsWith("no-newline"), code: bare.code }, bare.out + bare.err).toEqual({ starts: true, code: 0 });
    expect(bare.out + bare.err).not.toContain("kindling: exit status");
  }, 2_400_000);
});
