// The seccomp filter (src/seccomp/): the BPF program kindling assembles, run through an interpreter of
// classic BPF on chosen system calls; then for real, in child processes (a filter covers the whole
// process and cannot be removed, so the test runner never installs one): a refused call kills the process
// or fails with the filter's errno, and `kindling api` with the filter on boots a guest through the API.

import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync, readFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { compileFilter, kindlingFilter, parseFilter, type SeccompFilter } from "../src/seccomp/filter.ts";
import { encode, run, AUDIT_ARCH_X86_64, SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO, SECCOMP_RET_KILL_PROCESS, sock_filter } from "../src/seccomp/bpf.ts";
import { syscallNumber } from "../src/seccomp/syscalls.ts";
import { KVM } from "../src/kvm/ioctl.ts";
import { TUNSETIFF } from "../src/net/uapi.ts";
import { MicroVMError } from "../src/config/errors.ts";
import { EXIT } from "../src/cli/main.ts";
import { kvmTest } from "./support/kvm.ts";
import { collect, ROOT, spawnKindling } from "./support/api.ts";
import { LOG_LINE, serialElf } from "./support/serial-elf.ts";

const dir = mkdtempSync(join(tmpdir(), "kindling-seccomp-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const nr = (name: string) => syscallNumber(name)!;
const program = compileFilter(kindlingFilter(4242));
const verdict = (name: string, ...args: (number | bigint)[]) => run(program, { nr: nr(name), args });

describe("the built-in filter, as BPF", () => {
  test("allows what the VMM does, kills the rest", () => {
    for (const call of ["read", "write", "futex", "mmap", "epoll_pwait2", "openat", "accept4", "pread64", "pwrite64", "fsync"]) {
      expect(verdict(call), call).toBe(SECCOMP_RET_ALLOW);
    }
    for (const call of ["execve", "execveat", "fork", "vfork", "ptrace", "mount", "unshare", "setns", "chroot", "setuid", "bpf", "process_vm_readv", "kill"]) {
      expect(verdict(call), call).toBe(SECCOMP_RET_KILL_PROCESS);
    }
  });

  test("ioctl: the KVM, TUN and terminal requests only", () => {
    expect(verdict("ioctl", 5, KVM.RUN)).toBe(SECCOMP_RET_ALLOW);
    expect(verdict("ioctl", 5, KVM.SET_USER_MEMORY_REGION)).toBe(SECCOMP_RET_ALLOW);
    expect(verdict("ioctl", 5, TUNSETIFF)).toBe(SECCOMP_RET_ALLOW);
    expect(verdict("ioctl", 0, 0x5401)).toBe(SECCOMP_RET_ALLOW); // TCGETS
    expect(verdict("ioctl", 5, 0x5412)).toBe(SECCOMP_RET_KILL_PROCESS); // TIOCSTI: typing into a terminal
    expect(verdict("ioctl", 5, 0xae03 + 0x100)).toBe(SECCOMP_RET_KILL_PROCESS);
    // The request is an `unsigned int` in the kernel: the high half of the register is ignored there too.
    expect(verdict("ioctl", 5, (1n << 32n) | BigInt(KVM.RUN))).toBe(SECCOMP_RET_ALLOW);
  });

  test("arguments: AF_UNIX sockets, threads not processes, tgkill to itself, prctl names", () => {
    expect(verdict("socket", 1, 1, 0)).toBe(SECCOMP_RET_ALLOW); // AF_UNIX
    expect(verdict("socket", 2, 1, 0)).toBe(SECCOMP_RET_KILL_PROCESS); // AF_INET
    expect(verdict("socket", 16, 3, 0)).toBe(SECCOMP_RET_KILL_PROCESS); // AF_NETLINK
    const threadFlags = 0x3d0f00; // what glibc's pthread_create passes (CLONE_VM|CLONE_FS|...|CLONE_THREAD|...)
    expect(verdict("clone", threadFlags)).toBe(SECCOMP_RET_ALLOW);
    expect(verdict("clone", 0x01200011)).toBe(SECCOMP_RET_KILL_PROCESS); // fork(): SIGCHLD|CLONE_CHILD_SETTID|CLONE_CHILD_CLEARTID
    expect(verdict("clone3")).toBe((SECCOMP_RET_ERRNO | 38) >>> 0); // ENOSYS: glibc falls back to clone
    expect(verdict("tgkill", 4242, 4243, 34)).toBe(SECCOMP_RET_ALLOW);
    expect(verdict("tgkill", 1, 1, 9)).toBe(SECCOMP_RET_KILL_PROCESS);
    expect(verdict("kill", 4242, 15)).toBe(SECCOMP_RET_ALLOW);
    expect(verdict("kill", 1, 9)).toBe(SECCOMP_RET_KILL_PROCESS);
    expect(verdict("prctl", 15)).toBe(SECCOMP_RET_ALLOW); // PR_SET_NAME
    expect(verdict("prctl", 38)).toBe(SECCOMP_RET_KILL_PROCESS); // PR_SET_NO_NEW_PRIVS again is not needed
  });

  test("another architecture's or an x32 system call kills", () => {
    expect(run(program, { nr: 0, arch: 0x40000003 })).toBe(SECCOMP_RET_KILL_PROCESS); // AUDIT_ARCH_I386
    expect(run(program, { nr: 0x40000000 | nr("read"), arch: AUDIT_ARCH_X86_64 })).toBe(SECCOMP_RET_KILL_PROCESS);
  });

  test("encodes to struct sock_filter, within BPF_MAXINSNS", () => {
    const bytes = encode(program);
    expect(bytes.byteLength).toBe(program.length * sock_filter.size);
    expect(program.length).toBeLessThan(4096);
    const v = new DataView(bytes.buffer);
    expect([v.getUint16(0, true), v.getUint8(2), v.getUint8(3), v.getUint32(4, true)]).toEqual([0x20, 0, 0, 4]); // ld [4] (arch)
  });
});

describe("filter files", () => {
  const file = (f: unknown) => {
    const path = join(dir, `f-${Math.random().toString(36).slice(2)}.json`);
    writeFileSync(path, typeof f === "string" ? f : JSON.stringify(f));
    return path;
  };

  test("qword, ne and masked_eq conditions; rules for one syscall are alternatives", () => {
    const f: SeccompFilter = {
      default_action: { errno: 1 },
      filter_action: "allow",
      filter: [
        { syscall: "mmap", args: [{ index: 3, type: "qword", op: "eq", val: 0x1_0000_0022 }] },
        { syscall: "mmap", args: [{ index: 0, type: "qword", op: "ne", val: 0 }, { index: 2, type: "dword", op: { masked_eq: 4 }, val: 0 }] },
        { syscall: "write", args: [{ index: 0, type: "dword", op: "ne", val: 1 }] },
      ],
    };
    const p = compileFilter(parseFilter(f, "test"));
    const EPERM = (SECCOMP_RET_ERRNO | 1) >>> 0;
    expect(run(p, { nr: nr("mmap"), args: [0, 0, 0, 0x1_0000_0022] })).toBe(SECCOMP_RET_ALLOW);
    expect(run(p, { nr: nr("mmap"), args: [0, 0, 0, 0x22] })).toBe(EPERM); // high word differs
    expect(run(p, { nr: nr("mmap"), args: [1n << 40n, 0, 3, 0] })).toBe(SECCOMP_RET_ALLOW); // addr != 0, no PROT_EXEC
    expect(run(p, { nr: nr("mmap"), args: [1n << 40n, 0, 7, 0] })).toBe(EPERM); // PROT_EXEC
    expect(run(p, { nr: nr("mmap"), args: [0, 0, 3, 0] })).toBe(EPERM);
    expect(run(p, { nr: nr("write"), args: [2] })).toBe(SECCOMP_RET_ALLOW);
    expect(run(p, { nr: nr("write"), args: [1] })).toBe(EPERM);
    expect(run(p, { nr: nr("read") })).toBe(EPERM);
  });

  test("errors name the field", async () => {
    const { loadFilterFile } = await import("../src/seccomp/install.ts");
    const bad = (f: unknown) => () => loadFilterFile(file(f));
    expect(bad({ default_action: "allow", filter_action: "allow", filter: [{ syscall: "not_a_call" }] })).toThrow(/\.json: filter\[0\]\.syscall: not an x86-64 system call/);
    expect(bad({ default_action: "allow", filter_action: "allow", filter: [{ syscall: "read", args: [{ index: 6, type: "dword", op: "eq", val: 0 }] }] })).toThrow(/index/);
    expect(bad({ default_action: "explode", filter_action: "allow", filter: [{ syscall: "read" }] })).toThrow(/default_action/);
    expect(bad({ default_action: "allow", filter_action: "allow", filter: [{ syscall: "read", args: [{ index: 0, type: "dword", op: "eq", val: 2 ** 33 }] }] })).toThrow(/32 bits/);
    expect(bad("{ not json")).toThrow(MicroVMError);
    expect(() => loadFilterFile(join(dir, "missing.json"))).toThrow(/no such file/);
  });

  test("the CLI refuses a bad file and contradictory flags with a usage error", async () => {
    const cases = [
      ["api", "--seccomp-filter", file({ default_action: "allow" })],
      ["api", "--no-seccomp", "--seccomp-filter", file(kindlingFilter(1))],
    ];
    for (const args of cases) {
      const p = spawnKindling(args);
      const err = collect(p.stderr);
      expect(await p.exited, args.join(" ")).toBe(EXIT.USAGE);
      await err.done;
      expect(err.text).toMatch(/filter_action|contradict/);
    }
  });
});

/** Run test/support/seccomp-child.ts; returns how it ended and what it printed. */
async function child(filter: string, call: string) {
  const p = Bun.spawn([process.execPath, "test/support/seccomp-child.ts", filter, call], { cwd: ROOT, stdout: "pipe", stderr: "pipe" });
  const [out, err] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text()]);
  await p.exited;
  return { out, err, code: p.exitCode, signal: p.signalCode };
}

describe("installed, in a child process", () => {
  test("execve under the built-in filter: the process is killed with SIGSYS; every thread is filtered", async () => {
    const r = await child("builtin", "execve");
    expect(r.out, r.err).toMatch(/^threads \d+ seccomp modes 2\n$/); // SECCOMP_MODE_FILTER on all threads
    expect(Number(/threads (\d+)/.exec(r.out)![1])).toBeGreaterThan(3);
    expect(r.signal, r.err).toBe("SIGSYS");
  });

  test("ptrace under a filter whose default action is errno EPERM: the call fails with EPERM", async () => {
    const f = kindlingFilter(0);
    f.default_action = { errno: 1 };
    f.filter = f.filter.filter((r) => r.syscall !== "tgkill" && r.syscall !== "kill").concat({ syscall: "tgkill" }); // the child's pid is not known here
    const path = join(dir, "eperm.json");
    writeFileSync(path, JSON.stringify(f));
    const r = await child(path, "ptrace");
    expect(r.out, r.err).toMatch(/seccomp modes 2\nptrace returned EPERM\n$/);
    expect(r.code).toBe(0);
  });

  kvmTest("kindling api with the filter on boots a guest through the API", async () => {
    const kernel = join(dir, "guest.elf");
    writeFileSync(kernel, serialElf("booted under seccomp\n"));
    const disk = join(dir, "disk.img");
    writeFileSync(disk, new Uint8Array(1 << 20));
    const sock = join(dir, "api.sock");
    const p = spawnKindling(["--level", "debug", "api", "--api-sock", sock]);
    const out = collect(p.stdout);
    const err = collect(p.stderr);
    const report = () => `--- stdout ---\n${out.text}\n--- stderr ---\n${err.text}`;
    const killer = setTimeout(() => p.kill("SIGKILL"), 30_000);
    try {
      for (let i = 0; i < 100 && !existsSync(sock); i++) await Bun.sleep(50);
      const call = (method: string, path: string, body: unknown) => fetch(`http://localhost${path}`, { method, body: JSON.stringify(body), unix: sock } as RequestInit);
      expect(await out.until(/seccomp: \d+ BPF instructions/, 5000), report()).toBe(true);
      expect(readFileSync(`/proc/${p.pid}/status`, "utf8")).toMatch(/Seccomp:\s+2/);
      for (const [path, body] of [
        ["/logger", { log_path: join(dir, "log.txt"), level: "Info" }],
        ["/metrics", { metrics_path: join(dir, "metrics.txt") }],
        ["/boot-source", { kernel_image_path: kernel }],
        ["/machine-config", { vcpu_count: 1, mem_size_mib: 32 }],
        ["/drives/rootfs", { drive_id: "rootfs", path_on_host: disk, is_root_device: true, is_read_only: false }],
        ["/entropy", {}],
        ["/actions", { action_type: "InstanceStart" }],
      ] as const) {
        expect((await call("PUT", path, body)).status, `PUT ${path}\n${report()}`).toBe(204);
      }
      expect(await p.exited, report()).toBe(0);
      await out.done;
      // The guest's bytes and the VMM's log lines share stdout and may interleave.
      expect(out.text.replace(LOG_LINE, ""), report()).toContain("booted under seccomp\n");
      expect(p.signalCode).toBeNull();
    } finally {
      clearTimeout(killer);
    }
  }, 40_000);
});
