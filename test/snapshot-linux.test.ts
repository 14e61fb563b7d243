// A Linux guest at its shell, snapshotted and loaded in a new `kindling api` process through the API with
// resume_vm: a command typed after the load runs, and reads its root disk through virtio-blk; and
// `kindling exec --snapshot` runs a command in a restore of the same snapshot. Slow where the host emulates
// guest kernel code (the one boot takes minutes there, more under load; the loads do not boot at all).

import { afterAll, describe, expect } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildGuest } from "../guest/build.ts";
import { EXEC_SNAPSHOT_MEM, EXEC_SNAPSHOT_STATE, saveExecSnapshot } from "../src/exec.ts";
import { kvmTest } from "./support/kvm.ts";
import { ROOT } from "./support/api.ts";

const dir = mkdtempSync(join(tmpdir(), "kindling-snapshot-linux-"));
const procs: ReturnType<typeof Bun.spawn>[] = [];
afterAll(() => {
  for (const p of procs) p.kill("SIGKILL");
  rmSync(dir, { recursive: true, force: true });
});

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
  kvmTest("snapshot at the shell; load in a new kindling api through curl with resume_vm, a typed command runs and reads the disk; kindling exec --snapshot", async () => {
    const g = await buildGuest({ log: () => {} });
    const snap = join(dir, "shell");
    // Boot to the shell (the guest's init runs one when no command is given), pause, snapshot: the API's
    // own create path (MicroVM.createSnapshot), in this process, which then lets the VM go.
    await saveExecSnapshot(snap, { kernel: g.vmlinux, rootfs: g.rootfs, timeoutMs: 1_500_000 });
    const state = join(snap, EXEC_SNAPSHOT_STATE);
    const mem = join(snap, EXEC_SNAPSHOT_MEM);

    const b = await kindlingApi("load");
    const ok = { status: 204, body: "" };
    expect(await b.call("PUT", "/snapshot/load", { snapshot_path: state, mem_backend: { backend_type: "File", backend_path: mem }, resume_vm: true })).toEqual(ok);
    expect(JSON.parse((await b.call("GET", "/")).body).state).toBe("Running");
    // The configuration came with the snapshot.
    expect(JSON.parse((await b.call("GET", "/vm/config")).body).drives[0].path_on_host).toBe(g.rootfs);
    // A command after the load; it reads the root disk (virtio-blk, through the restored queues) too.
    b.type("echo after-$((6*7)) $(dd if=/dev/vda bs=4096 skip=77 count=1 2>/dev/null | wc -c)\n");
    await until(() => b.console().includes("after-42 4096"), 300_000, "the command after the load", b.console);
    await b.kill();

    // kindling exec --snapshot: the same snapshot, a command, its output and exit status.
    const p = Bun.spawn([process.execPath, "src/cli/main.ts", "exec", "--snapshot", snap, "--timeout", "300", "--", "sh", "-c", "echo from-snapshot; exit 3"], { cwd: ROOT, stdout: "pipe", stderr: "pipe" });
    procs.push(p);
    const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
    // The command's output first; kindling's own info line (on stdout when it is not a terminal) after it.
    expect({ first: out.split("\n")[0], code }, err).toEqual({ first: "from-snapshot", code: 3 });
    expect(out + err).toMatch(/exit status 3; snapshot loaded \d+ ms, first output \d+ ms/);
  }, 2_400_000);
});
