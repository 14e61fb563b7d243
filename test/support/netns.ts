// Tests that need a network namespace (root, `ip`, /dev/net/tun) use `netnsTest` instead of `test`. Where
// one cannot be made they fail loudly under CI=true (CI must run them) and are skipped with a printed
// reason elsewhere, as kvmTest does for /dev/kvm.
//
// A NetNs is a namespace of its own for one test file: its TAP interfaces and addresses cannot collide
// with the host's or another test's, and deleting it deletes everything in it.

import { gatedTest, type GatedTest } from "./gated.ts";
import { existsSync } from "node:fs";

function sh(args: string[]): { ok: boolean; out: string } {
  const r = Bun.spawnSync(args, { stdout: "pipe", stderr: "pipe" });
  return { ok: r.exitCode === 0, out: `${r.stdout.toString()}${r.stderr.toString()}`.trim() };
}

let probes = 0;
/** A short name unique to this process: interface names have at most 15 bytes. */
export function uniqueName(prefix: string): string {
  return `${prefix}${process.pid % 100000}${probes++}`;
}

function netnsMissingReason(): string | undefined {
  if (process.getuid?.() !== 0) return "network namespaces and TAP devices need root";
  if (!existsSync("/dev/net/tun")) return "/dev/net/tun does not exist";
  if (!sh(["ip", "-V"]).ok) return "the `ip` command (iproute2) is not installed";
  const name = uniqueName("kprobe");
  const add = sh(["ip", "netns", "add", name]);
  if (!add.ok) return `ip netns add failed: ${add.out}`;
  sh(["ip", "netns", "del", name]);
  return undefined;
}

export const NETNS_MISSING = netnsMissingReason();

export const netnsTest: GatedTest = gatedTest("a network namespace", NETNS_MISSING);

export class NetNs {
  private deleted = false;
  private constructor(readonly name: string) {}

  /** `ip netns add` a fresh namespace with its loopback up. */
  static create(prefix = "kns"): NetNs {
    const ns = new NetNs(uniqueName(prefix));
    const r = sh(["ip", "netns", "add", ns.name]);
    if (!r.ok) throw new Error(`ip netns add ${ns.name}: ${r.out}`);
    ns.ip("link", "set", "lo", "up");
    return ns;
  }

  /** Run a command inside the namespace; throws with its output if it fails. Returns its output. */
  exec(...args: string[]): string {
    const r = sh(["ip", "netns", "exec", this.name, ...args]);
    if (!r.ok) throw new Error(`ip netns exec ${this.name} ${args.join(" ")}: ${r.out}`);
    return r.out;
  }

  /** `ip ...` inside the namespace. */
  ip(...args: string[]): string {
    return this.exec("ip", ...args);
  }

  /** Move a host interface (a TAP this process opened) into the namespace. */
  adopt(ifname: string): void {
    const r = sh(["ip", "link", "set", ifname, "netns", this.name]);
    if (!r.ok) throw new Error(`ip link set ${ifname} netns ${this.name}: ${r.out}`);
  }

  /** A statistics counter of an interface in the namespace (/sys/class/net/IF/statistics/NAME). */
  stat(ifname: string, counter: string): number {
    return Number(this.exec("cat", `/sys/class/net/${ifname}/statistics/${counter}`));
  }

  /**
   * Start a Bun script inside the namespace (`bun -e script`). Its stdout is collected; `kill()` ends it.
   */
  spawnBun(script: string): { proc: ReturnType<typeof Bun.spawn>; output: () => Promise<string> } {
    const proc = Bun.spawn(["ip", "netns", "exec", this.name, process.execPath, "-e", script], {
      stdout: "pipe", stderr: "pipe",
    });
    return {
      proc,
      output: async () => `${await new Response(proc.stdout as ReadableStream).text()}${await new Response(proc.stderr as ReadableStream).text()}`,
    };
  }

  delete(): void {
    if (this.deleted) return;
    this.deleted = true;
    sh(["ip", "netns", "del", this.name]);
  }
}
