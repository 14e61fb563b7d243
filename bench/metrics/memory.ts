// Metric 3: memory overhead, Firecracker's way (tests/host_tools/memory.py): the sum of Rss over every
// mapping in /proc/<pid>/smaps except guest RAM, for 1-vCPU, 128 MiB VMs whose guests are up and running.
//   kindling: bench/children/hold-vms.ts with N = 1, 4, 16, 64 VMs in one process (the irq probe, spinning
//             at CPL3); it reports the addresses of its guest RAM mappings, and exactly those are left out.
//   QEMU:     N microvm processes, each with the first-write probe as a PVH ELF and no i8042, so its reset
//             goes nowhere and the vCPU stays halted; guest RAM is the mapping exactly as large as -m.
//             Figures are summed over the N processes: Rss sums count shared pages (the QEMU binary, its
//             libraries) once per process, Pss sums count them once in all.
// Per VM: the marginal cost from 1 to 16 VMs ((O(16) - O(1)) / 15; to the largest N in a quick run), the
// least-squares slope over all N, and the average O(N) / N.
// Breakdown (full runs): the same counts of bare vCPU worker threads, and of KVM objects without workers
// or devices, each in a process of its own.

import { join } from "node:path";
import { overhead, readSmaps, residentKiB, type Overhead } from "../lib/smaps.ts";
import { timedSpawn } from "../lib/timed-spawn.ts";
import { linearFit, round } from "../lib/stats.ts";
import { qemuCommand } from "../qemu/command.ts";
import { MiB as MIB } from "../../src/arch/x86_64/layout.ts";

const CHILD = join(import.meta.dir, "../children/hold-vms.ts");
/** The VM Firecracker's figure is for: 1 vCPU, 128 MiB. */
const GUEST_MEM = 128 * MIB;
/** Wait this long after the guests are up before reading smaps, so the processes have settled. */
const SETTLE_MS = 300;

export interface MemoryPoint extends Overhead {
  n: number;
}

type PerVm = { rss: number; pss: number; privateDirty: number };

export interface MemorySeries {
  points: MemoryPoint[];
  /** MiB per additional VM, least squares over all points. */
  slopeMiB: PerVm;
  /** MiB per VM added from N=1 to N=`to`. */
  marginalMiB?: PerVm & { from: number; to: number };
  /** Rss MiB per VM at each N. */
  averageMiB: Record<number, number>;
}

export interface MemoryResult {
  guestMemMiB: number;
  kindling: MemorySeries;
  /** Per-VM parts of kindling's cost, as slopes over the same N (left out of quick runs). */
  breakdown?: { workers: MemorySeries; kvm: MemorySeries };
  qemu?: MemorySeries & { command: string[] };
}

const MiB = (kib: number) => round(kib / 1024);

function analyse(points: MemoryPoint[]): MemorySeries {
  const slope = (f: (p: MemoryPoint) => number) => MiB(linearFit(points.map((p) => ({ x: p.n, y: f(p) }))).slope);
  const first = points.find((p) => p.n === 1);
  const last = points.find((p) => p.n === 16) ?? points.filter((p) => p.n > 1).at(-1);
  const per = (f: (p: MemoryPoint) => number) => MiB((f(last!) - f(first!)) / (last!.n - first!.n));
  return {
    points,
    slopeMiB: { rss: slope((p) => p.rssKiB), pss: slope((p) => p.pssKiB), privateDirty: slope((p) => p.privateDirtyKiB) },
    marginalMiB: first && last
      ? { from: 1, to: last.n, rss: per((p) => p.rssKiB), pss: per((p) => p.pssKiB), privateDirty: per((p) => p.privateDirtyKiB) }
      : undefined,
    averageMiB: Object.fromEntries(points.filter((p) => p.n > 0).map((p) => [p.n, MiB(p.rssKiB / p.n)])),
  };
}

/** One kindling process holding N of something (see hold-vms.ts). */
async function measureChild(mode: string, n: number): Promise<MemoryPoint> {
  let point: MemoryPoint | undefined;
  const r = await timedSpawn([process.execPath, CHILD, mode, String(n), String(GUEST_MEM / MIB)], {
    signal: /^ready .*\n/m,
    timeoutMs: 120_000,
    killOnSignal: true,
    onSignal: async (pid, _ms, stdout) => {
      await Bun.sleep(SETTLE_MS);
      const ram = JSON.parse(/^ready (.*)$/m.exec(stdout)![1]!) as [number, number][];
      // The kernel may merge guest RAM with a neighbouring mapping: count the guest's resident pages.
      const guestKiB = (m: { start: number; end: number }) =>
        ram.reduce((sum, [a, s]) => {
          const from = Math.max(a, m.start);
          const to = Math.min(a + s, m.end);
          return to > from ? sum + residentKiB(pid, from, to) : sum;
        }, 0);
      point = { n, ...overhead(readSmaps(pid), guestKiB, GUEST_MEM) };
    },
  });
  if (!point) throw new Error(`hold-vms ${mode} ${n}: never ready\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  return point;
}

/** N QEMU processes at once, each with one idle VM; their overheads summed. */
async function measureQemu(command: string[], n: number): Promise<MemoryPoint> {
  const procs = Array.from({ length: n }, () => Bun.spawn(command, { stdin: "ignore", stdout: "pipe", stderr: "pipe" }));
  try {
    await Promise.all(procs.map(async (p) => {
      const timeout = setTimeout(() => p.kill("SIGKILL"), 30_000);
      let text = "";
      for await (const chunk of p.stdout) {
        text += new TextDecoder().decode(chunk);
        if (text.includes("!")) break; // the probe ran: the VM is up
      }
      clearTimeout(timeout);
      if (!text.includes("!")) throw new Error(`QEMU memory: a guest never printed its marker\n${await new Response(p.stderr).text()}`);
    }));
    await Bun.sleep(SETTLE_MS);
    const sum: MemoryPoint = { n, rssKiB: 0, pssKiB: 0, privateDirtyKiB: 0, guestRssKiB: 0, firecrackerRuleRssKiB: 0 };
    for (const p of procs) {
      const o = overhead(readSmaps(p.pid), (m) => (m.end - m.start === GUEST_MEM ? (m.kib.Rss ?? 0) : 0), GUEST_MEM);
      for (const k of Object.keys(o) as (keyof Overhead)[]) sum[k] += o[k];
    }
    return sum;
  } finally {
    for (const p of procs) p.kill("SIGKILL");
    await Promise.all(procs.map((p) => p.exited));
  }
}

async function series(measure: (n: number) => Promise<MemoryPoint>, counts: number[]): Promise<MemorySeries> {
  const points: MemoryPoint[] = [];
  for (const n of counts) points.push(await measure(n));
  return analyse(points);
}

export async function memory(opts: { counts: number[]; qemuElf?: string; qemuCpu?: string; breakdown: boolean; log: (s: string) => void }): Promise<MemoryResult> {
  const kindling = await series((n) => measureChild("vms", n), opts.counts);
  // The breakdown starts at 0 so that the slope is the cost of one more, with nothing else around it.
  const breakdown = opts.breakdown
    ? { workers: await series((n) => measureChild("workers", n), [0, ...opts.counts]), kvm: await series((n) => measureChild("kvm", n), [0, ...opts.counts]) }
    : undefined;
  let qemu: MemoryResult["qemu"];
  if (opts.qemuElf) {
    const command = qemuCommand({ kernel: opts.qemuElf, memSize: GUEST_MEM, i8042: false, cpu: opts.qemuCpu });
    qemu = { ...(await series((n) => measureQemu(command, n), opts.counts)), command };
  }
  const m = (s?: MemorySeries) => (s?.marginalMiB ? `${s.marginalMiB.rss} MiB RSS, ${s.marginalMiB.pss} MiB PSS` : "-");
  opts.log(`memory per extra VM (1 to ${kindling.marginalMiB?.to}): kindling ${m(kindling)}; QEMU ${m(qemu)}`);
  return { guestMemMiB: GUEST_MEM / MIB, kindling, breakdown, qemu };
}
