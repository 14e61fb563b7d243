// Helpers for the API, library and CLI tests:
//   - fakeMicroVM: a MicroVM whose "boot" needs no KVM, a stand-in for src/vm.ts's Vm that records what it
//     was asked to boot, lets a test write console output, and ends when stopped. For the tests about
//     configuration, state and HTTP rather than about running a guest.
//   - serveFake: an API server for it on a fresh socket, and a fetch that talks to it.
//   - spawnKindling, collect: the real CLI as a child process, and its output as it arrives.

import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { LinuxBootOptions } from "../../src/boot/linux.ts";
import { createVirtioDevices, driveName } from "../../src/boot/machine.ts";
import { MicroVM, type MicroVMOptions, type RunningVm, type VmEnd } from "../../src/microvm.ts";
import type { MicroVMConfig } from "../../src/config/schemas.ts";
import type { VirtioBalloon } from "../../src/devices/virtio/balloon.ts";
import type { VirtioDevice } from "../../src/devices/virtio/device.ts";
import { serveApi, type ApiServer } from "../../src/api/server.ts";

export interface FakeVm extends RunningVm {
  opts: LinuxBootOptions;
  /** The devices, by name, in window order: drives and entropy as stand-ins, nets and vsock from the recipe. */
  devices: { name: string; device: unknown }[];
  paused: boolean;
  input: number[];
  /** How many times SendCtrlAltDel reached the keyboard. */
  ctrlAltDels: number;
  /** The guest "prints" to its console. */
  print(text: string): void;
  /** The guest ends on its own. */
  end(exit: VmEnd): void;
}

export function fakeBoot(booted: FakeVm[] = []) {
  return async (opts: LinuxBootOptions): Promise<{ vm: FakeVm; devices: { virtio: { name: string; device: VirtioDevice }[]; balloon?: VirtioBalloon } }> => {
    let resolve!: (e: VmEnd) => void;
    const exited = new Promise<VmEnd>((r) => (resolve = r));
    // Net and vsock devices and the balloon come from the real recipe (with the test's device models); drives
    // and the entropy device are stand-ins whose counters the metrics tests read.
    const built = createVirtioDevices({ kernel: opts.kernel, nets: opts.nets, vsock: opts.vsock, balloon: opts.balloon }, { models: opts.deviceModels, log: opts.log });
    const standIn = (counters?: Record<string, number>) => ({ counters, describe: () => ({ kind: "stand-in" }) }) as unknown as VirtioDevice;
    const virtio = [
      ...(opts.drives ?? []).map((d, i) => ({ name: `block_${driveName(d, i)}`, device: standIn({ reads: 1 }) })),
      ...(opts.entropy ? [{ name: "entropy", device: standIn() }] : []),
      ...built.virtio,
    ];
    const devices = virtio.map((v) => v.device);
    const vm: FakeVm = {
      opts,
      devices: virtio,
      paused: false,
      input: [],
      ctrlAltDels: 0,
      legacy: { i8042: { sendCtrlAltDel: () => (vm.ctrlAltDels++, true) } },
      pause: () => void (vm.paused = true),
      resume: () => void (vm.paused = false),
      stop: async (message = "stopped") => {
        vm.end({ reason: "stopped", message });
        return exited;
      },
      // As Vm.close() does: the devices are closed when the VM ends.
      end: (exit) => {
        for (const d of devices as { close?: () => void }[]) d.close?.();
        resolve(exit);
      },
      exited,
      print: (text) => opts.consoleOutput?.(new TextEncoder().encode(text)),
      serial: {
        queueInput: (b) => (vm.input.push(...b), b.length),
        counters: { bytesOut: 10, bytesIn: 0, inputDropped: 0, interrupts: 2 },
      },
      vcpus: [{ exitCounts: new Map([[2, 7], [6, 3]]) }], // KVM_EXIT_IO, KVM_EXIT_MMIO
    };
    booted.push(vm);
    return { vm, devices: { virtio, balloon: built.balloon } };
  };
}

/** A net/vsock device model that records its options. */
export class FakeDeviceModel implements VirtioDevice {
  static made: Record<string, unknown>[] = [];
  readonly name = "fake";
  readonly deviceId = 1;
  readonly deviceFeatures = 0n;
  readonly queueMaxSizes = [16];
  closed = false;
  constructor(readonly options: Record<string, unknown>) {
    FakeDeviceModel.made.push(options);
  }
  readConfig(): void {}
  writeConfig(): void {}
  activate(): void {}
  process(): boolean {
    return false;
  }
  reset(): void {}
  describe() {
    return { kind: "fake" };
  }
  restore(): void {}
  close(): void {
    this.closed = true;
  }
}

/** A temporary directory with a pretend kernel, initrd and disk (the fake boot never reads them). */
export function fixtureFiles(): { dir: string; kernel: string; initrd: string; disk: string } {
  const dir = mkdtempSync(join(tmpdir(), "kindling-api-"));
  const f = (name: string) => {
    writeFileSync(join(dir, name), "not really an image\n");
    return join(dir, name);
  };
  return { dir, kernel: f("vmlinux"), initrd: f("initrd"), disk: f("disk.img") };
}

export function fakeMicroVM(config: MicroVMConfig = {}, opts: MicroVMOptions = {}, booted: FakeVm[] = []): MicroVM {
  return new MicroVM(config, { boot: fakeBoot(booted), deviceModels: { VirtioNet: FakeDeviceModel, VirtioVsock: FakeDeviceModel }, ...opts });
}

/** An API server for `vm` on a fresh socket, and a fetch that talks to it. */
export async function serveFake(vm: MicroVM, dir: string): Promise<{ server: ApiServer; call: (method: string, path: string, body?: unknown) => Promise<{ status: number; json: unknown; text: string }> }> {
  const server = await serveApi({ socketPath: join(dir, `api-${Math.random().toString(36).slice(2)}.sock`), microvm: vm });
  const call = async (method: string, path: string, body?: unknown) => {
    const init: RequestInit & { unix: string } = { method, unix: server.socketPath };
    if (body !== undefined) init.body = typeof body === "string" ? body : JSON.stringify(body);
    const res = await fetch(`http://localhost${path}`, init);
    const text = await res.text();
    let json: unknown;
    try {
      json = text ? JSON.parse(text) : undefined;
    } catch {
      json = undefined;
    }
    return { status: res.status, json, text };
  };
  return { server, call };
}

export const ROOT = join(import.meta.dir, "../..");

/** `kindling ...args` as a child process, from a checkout. */
export function spawnKindling(args: string[]) {
  return Bun.spawn([process.execPath, "src/cli/main.ts", ...args], { cwd: ROOT, env: { ...process.env, NO_COLOR: "1" }, stdout: "pipe", stderr: "pipe", stdin: "ignore" });
}

/** Everything a child writes to a pipe, as it arrives; `until` waits for a test to hold (false on timeout). */
export function collect(stream: ReadableStream<Uint8Array>) {
  let text = "";
  const decoder = new TextDecoder();
  const done = (async () => {
    for await (const chunk of stream) text += decoder.decode(chunk, { stream: true });
  })();
  return {
    get text() {
      return text;
    },
    done,
    async until(test: RegExp | ((text: string) => boolean), ms: number): Promise<boolean> {
      const end = Date.now() + ms;
      while (!(typeof test === "function" ? test(text) : test.test(text))) {
        if (Date.now() > end) return false;
        await Bun.sleep(100);
      }
      return true;
    },
  };
}

/** One request through curl on the API's Unix socket, as a user would send it; the status comes from curl's -w. */
export async function curl(sock: string, method: string, path: string, body?: unknown): Promise<{ status: number; body: string }> {
  const args = ["curl", "-sS", "--unix-socket", sock, "-X", method, "-w", "\n%{http_code}", `http://localhost${path}`];
  if (body !== undefined) args.push("-H", "Content-Type: application/json", "-d", JSON.stringify(body));
  const p = Bun.spawn(args, { stdout: "pipe", stderr: "pipe" });
  const [out, err] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text()]);
  if ((await p.exited) !== 0) throw new Error(`curl ${method} ${path} failed: ${err}`);
  const cut = out.lastIndexOf("\n");
  return { status: Number(out.slice(cut + 1)), body: out.slice(0, cut) };
}
