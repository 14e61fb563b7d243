// The headline figures of a run, as rows: what the table prints and the chart draws. Each row is one
// number per VMM (medians unless it says otherwise), which way is better, and the target it is held to.

import type { StartToFirstResult } from "../metrics/start-to-first.ts";
import type { LinuxBootResult } from "../metrics/linux-boot.ts";
import type { MemoryResult } from "../metrics/memory.ts";
import type { ExitRttResult } from "../metrics/exit-rtt.ts";
import type { CreationResult } from "../metrics/creation.ts";
import type { ClonesResult, ExecSnapshotResult, RestoreResult } from "../metrics/snapshot.ts";
import { round } from "./stats.ts";
import { MILESTONES } from "../../src/boot/milestones.ts";

export interface Results {
  startToFirst?: StartToFirstResult;
  linuxBoot?: LinuxBootResult;
  memory?: MemoryResult;
  exitRtt?: ExitRttResult;
  creation?: CreationResult;
  restore?: RestoreResult;
  clones?: ClonesResult;
  execSnapshot?: ExecSnapshotResult;
}

export interface Row {
  metric: string;
  unit: string;
  kindling?: number;
  qemu?: number;
  better: "lower" | "higher";
  /** The target in words, and whether kindling's figure meets it. */
  target?: { text: string; met: boolean };
  /** Draw it in the chart (rows that repeat another in a different unit are left out). */
  chart: boolean;
  /** The chart panel's title, when the row's own name is too long or needs the row above it for context. */
  title?: string;
  /** A short note under the chart panel's bars. */
  note?: string;
}

/** The kernel's own words for a milestone (the first alternative of its pattern in milestones.ts). */
export function milestoneText(m: keyof typeof MILESTONES): string {
  return MILESTONES[m].source.split("|")[0]!.replace(/ \\d$/, "").replace(/\\/g, "");
}

const MiB = (kib: number) => round(kib / 1024);

export function headlineRows(r: Results): Row[] {
  const rows: Row[] = [];
  const s = r.startToFirst;
  if (s) {
    const k = s.kindling.wallMs.median;
    const q = s.qemu?.wallMs.median;
    rows.push({
      metric: "start to first guest instruction (wall)", unit: "ms", kindling: k, qemu: q, better: "lower", chart: true,
      target: { text: "<= 20 ms and <= 1/3 of QEMU", met: k <= 20 && (q === undefined || k <= q / 3) },
    });
    rows.push({ metric: "  p90", unit: "ms", kindling: s.kindling.wallMs.p90, qemu: s.qemu?.wallMs.p90, better: "lower", chart: false });
    if (s.kindlingBundled) {
      rows.push({ metric: "  kindling bundled to bytecode, run with bun", unit: "ms", kindling: s.kindlingBundled.wallMs.median, qemu: q, better: "lower", chart: false });
    }
    if (s.kindlingJit4) {
      rows.push({ metric: "  kindling executable, JIT policy 4", unit: "ms", kindling: s.kindlingJit4.wallMs.median, qemu: q, better: "lower", chart: false });
    }
    if (s.kindlingFromSource) {
      rows.push({ metric: "  kindling run from TypeScript source (not bundled)", unit: "ms", kindling: s.kindlingFromSource.wallMs.median, qemu: q, better: "lower", chart: false });
    }
    rows.push({
      metric: "  CPU until the process exited", title: "start to first instruction: CPU, until exit", unit: "ms",
      kindling: s.kindling.cpuMs.median, qemu: s.qemu?.cpuMs.median, better: "lower", chart: true,
    });
  }
  const l = r.linuxBoot;
  if (l) {
    const label = l.emulatingHost ? " (emulated guest kernel)" : "";
    const note = l.emulatingHost ? "emulated guest kernel: seconds, where hardware KVM takes ms" : undefined;
    if (l.common) {
      const line = milestoneText(l.common.milestone);
      rows.push({
        metric: `Linux: spawn to "${line}"${label}`, title: `Linux boot: spawn to "${line}"`, note, unit: "s",
        kindling: round(l.common.kindlingMs.median / 1000), qemu: round(l.common.qemuMs.median / 1000), better: "lower", chart: true,
      });
    }
    if (l.kindlingEnd.ms) rows.push({ metric: `Linux: spawn to ${l.kindlingEnd.what}${label}`, unit: "s", kindling: round(l.kindlingEnd.ms.median / 1000), better: "lower", chart: false });
  }
  const m = r.memory;
  if (m) {
    const one = m.kindling.points.find((p) => p.n === 1);
    const q = m.qemu?.points.find((p) => p.n === 1);
    if (one) {
      rows.push({ metric: `memory overhead, one ${m.guestMemMiB} MiB VM alone: RSS`, unit: "MiB", kindling: MiB(one.rssKiB), qemu: q && MiB(q.rssKiB), better: "lower", chart: true });
      rows.push({ metric: "  PSS", unit: "MiB", kindling: MiB(one.pssKiB), qemu: q && MiB(q.pssKiB), better: "lower", chart: false });
      rows.push({ metric: "  private dirty", unit: "MiB", kindling: MiB(one.privateDirtyKiB), qemu: q && MiB(q.privateDirtyKiB), better: "lower", chart: false });
    }
    const k = m.kindling.marginalMiB;
    const qm = m.qemu?.marginalMiB;
    if (k) {
      rows.push({
        metric: `memory per extra VM, N=1 to ${k.to}: RSS (QEMU: a process each, summed)`, title: `memory per extra VM, N=1 to ${k.to}: RSS`,
        note: "QEMU: one process per VM, Rss summed", unit: "MiB", kindling: k.rss, qemu: qm?.rss, better: "lower", chart: true,
        target: { text: "<= 2 MiB", met: k.rss <= 2 },
      });
      rows.push({
        metric: "  PSS (shared pages counted once)", title: `memory per extra VM, N=1 to ${k.to}: PSS`, unit: "MiB",
        note: "shared pages counted once across processes",
        kindling: k.pss, qemu: qm?.pss, better: "lower", chart: true,
      });
    }
    const p16 = m.kindling.points.find((p) => p.n === 16);
    const p64 = m.kindling.points.find((p) => p.n === 64);
    const q16 = m.qemu?.points.find((p) => p.n === 16);
    const q64 = m.qemu?.points.find((p) => p.n === 64);
    if (p16 && p64) {
      const per = (a: number, b: number) => MiB((b - a) / 48);
      rows.push({
        metric: "  per extra VM, N=16 to 64: RSS", unit: "MiB", kindling: per(p16.rssKiB, p64.rssKiB),
        qemu: q16 && q64 ? per(q16.rssKiB, q64.rssKiB) : undefined, better: "lower", chart: false,
      });
      rows.push({
        metric: "  per extra VM, N=16 to 64: PSS", unit: "MiB", kindling: per(p16.pssKiB, p64.pssKiB),
        qemu: q16 && q64 ? per(q16.pssKiB, q64.pssKiB) : undefined, better: "lower", chart: false,
      });
    }
    rows.push({ metric: "  slope over all N (RSS)", unit: "MiB", kindling: m.kindling.slopeMiB.rss, qemu: m.qemu?.slopeMiB.rss, better: "lower", chart: false });
    const biggest = Math.max(...m.kindling.points.map((p) => p.n));
    rows.push({ metric: `  average per VM at N=${biggest} (RSS)`, unit: "MiB", kindling: m.kindling.averageMiB[biggest], qemu: m.qemu?.averageMiB[biggest], better: "lower", chart: false });
  }
  const e = r.exitRtt;
  if (e) {
    const exitTarget = (k: number, q?: number) => (q === undefined ? undefined : { text: "<= 1.1x QEMU", met: k <= 1.1 * q });
    rows.push({
      metric: "exit round trip, port I/O", unit: "µs", kindling: e.kindling.pioUs.median, qemu: e.qemu?.pioUs.median, better: "lower", chart: true,
      target: exitTarget(e.kindling.pioUs.median, e.qemu?.pioUs.median),
    });
    rows.push({
      metric: "exit round trip, MMIO", unit: "µs", kindling: e.kindling.mmioUs.median, qemu: e.qemu?.mmioUs.median, better: "lower", chart: true,
      target: exitTarget(e.kindling.mmioUs.median, e.qemu?.mmioUs.median),
    });
    if (e.kindlingMainThread) {
      rows.push({ metric: "  port I/O handed to the main thread", unit: "µs", kindling: e.kindlingMainThread.pioUs.median, qemu: e.qemu?.pioUs.median, better: "lower", chart: false });
      rows.push({ metric: "  MMIO handed to the main thread", unit: "µs", kindling: e.kindlingMainThread.mmioUs.median, qemu: e.qemu?.mmioUs.median, better: "lower", chart: false });
    }
  }
  const c = r.creation;
  if (c) {
    rows.push({
      metric: `creation rate, one process (${c.concurrency} at a time)`, unit: "VMs/s", kindling: c.kindlingInProcess.perSecond, better: "higher", chart: true,
      target: { text: ">= 60 VMs/s", met: c.kindlingInProcess.perSecond >= 60 },
    });
    rows.push({ metric: `creation rate, a process per VM (${c.concurrency} at a time)`, unit: "VMs/s", kindling: c.kindlingProcesses.perSecond, qemu: c.qemuProcesses?.perSecond, better: "higher", chart: true });
  }
  const rs = r.restore;
  if (rs) {
    const k = rs.kindling.spareCallMs.median;
    const q = rs.qemu?.commandToFirstMs.median;
    rows.push({
      metric: `snapshot restore to first instruction, ${rs.guestMemMiB} MiB probe (QEMU: migrate_incoming)`, title: "restore to first instruction",
      note: "kindling: restoreSnapshot() with a spare vCPU worker; QEMU: -incoming defer", unit: "ms", kindling: k, qemu: q, better: "lower", chart: true,
      target: { text: "<= 5 ms and <= 0.2x QEMU", met: k <= 5 && (q === undefined || k <= 0.2 * q) },
    });
    rows.push({ metric: "  p90", unit: "ms", kindling: rs.kindling.spareCallMs.p90, qemu: rs.qemu?.commandToFirstMs.p90, better: "lower", chart: false });
    rows.push({ metric: "  warm process, no spare worker", unit: "ms", kindling: rs.kindling.warmCallMs.median, better: "lower", chart: false });
    rows.push({ metric: "  first restore of a fresh process", unit: "ms", kindling: rs.kindling.coldCallMs.median, better: "lower", chart: false });
    rows.push({
      metric: "  spawn to first instruction after restore", title: "spawn to first instruction after restore", unit: "ms",
      kindling: rs.kindling.spawnToFirstMs.median, qemu: rs.qemu?.spawnToFirstMs.median, better: "lower", chart: true,
    });
  }
  const cl = r.clones;
  if (cl) {
    const p = cl.inProcess.perCloneMiB;
    rows.push({
      metric: `memory per clone, one process, N=${cl.inProcess.points.map((x) => x.n).join("/")}: RSS beyond guest pages`, title: "memory per clone (RSS, one process)",
      unit: "MiB", kindling: p.rss, better: "lower", chart: true, target: { text: "<= 2 MiB beyond touched pages", met: p.rss <= 2 },
    });
    rows.push({ metric: "  guest pages each clone wrote", unit: "MiB", kindling: p.guestWritten, better: "lower", chart: false });
    if (cl.processes) rows.push({ metric: "  a process per clone: PSS", unit: "MiB", kindling: cl.processes.perCloneMiB.pss, better: "lower", chart: false });
  }
  const ex = r.execSnapshot;
  if (ex) {
    rows.push({
      metric: "exec --snapshot echo hi: call to first output (Linux at its shell; compiled program)", title: "exec --snapshot: echo hi", unit: "ms",
      note: "execFromSnapshot() in a standalone executable", kindling: ex.firstOutputMs.median, better: "lower", chart: true,
      target: { text: "<= 50 ms", met: ex.firstOutputMs.median <= 50 },
    });
    rows.push({ metric: "  p90", unit: "ms", kindling: ex.firstOutputMs.p90, better: "lower", chart: false });
    rows.push({ metric: "  of which the load (restore)", unit: "ms", kindling: ex.loadMs.median, better: "lower", chart: false });
    if (ex.cli) {
      rows.push({ metric: "  kindling exec --snapshot, CLI from TypeScript source", unit: "ms", kindling: ex.cli.firstOutputMs.median, better: "lower", chart: false });
      rows.push({ metric: "    of which the load (restore)", unit: "ms", kindling: ex.cli.loadMs.median, better: "lower", chart: false });
    }
  }
  return rows;
}

const fmt = (x: number | undefined) => (x === undefined || Number.isNaN(x) ? "-" : String(round(x)));

/** A plain-text table: metric, unit, kindling, QEMU, kindling / QEMU, target. */
export function formatTable(rows: Row[]): string {
  const cells = rows.map((r) => [
    r.metric, r.unit, fmt(r.kindling), fmt(r.qemu),
    r.kindling !== undefined && r.qemu ? `${round(r.kindling / r.qemu)}x` : "",
    r.target ? `${r.target.met ? "met" : "MISSED"}: ${r.target.text}` : "",
  ]);
  const head = ["metric", "unit", "kindling", "QEMU", "k/QEMU", "target"];
  const widths = head.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
  const line = (c: string[]) => c.map((x, i) => (i >= 2 && i <= 4 ? x.padStart(widths[i]!) : x.padEnd(widths[i]!))).join("  ").trimEnd();
  return [line(head), widths.map((w) => "-".repeat(w)).join("  "), ...cells.map(line)].join("\n");
}

/** The same table as Markdown, for bench/README.md. */
export function formatMarkdown(rows: Row[]): string {
  const out = ["| metric | unit | kindling | QEMU | kindling / QEMU | target |", "|---|---|--:|--:|--:|---|"];
  for (const r of rows) {
    const ratio = r.kindling !== undefined && r.qemu ? `${round(r.kindling / r.qemu)}x` : "";
    const target = r.target ? `${r.target.met ? "met" : "**missed**"}: ${r.target.text}` : "";
    const metric = r.metric.startsWith("  ") ? `↳ ${r.metric.trim()}` : r.metric;
    out.push(`| ${metric} | ${r.unit} | ${fmt(r.kindling)} | ${fmt(r.qemu)} | ${ratio} | ${target} |`);
  }
  return out.join("\n");
}
