// kindling's benchmarks, side by side with QEMU's microvm: `bun run bench` (everything, a few minutes) or
// `bun bench/run.ts --quick` (a smoke run: every metric once, small counts, no Linux boot, under a minute).
// Prints a table, writes <out>/<date>-<host>.json (raw samples, medians, p90, the host, kindling's git
// revision) and <out>/latest.svg. bench/README.md says how each figure is measured.
//
//   bun bench/run.ts [--quick] [--only first,linux,memory,exits,creation,restore,clones,exec-snapshot] [--no-qemu]
//                    [--qemu-cpu host,max,qemu64] [--out DIR] [--markdown]
//   bun bench/run.ts --from RESULTS.json [--out DIR] [--markdown]     table and chart again, measuring nothing
// QEMU runs with the first `-cpu` model of the list (default QEMU_CPU_MODELS) that boots the first probe
// here; the JSON and the table name it. When none does, or QEMU is missing, the run stops before measuring
// and exits 3 naming why (a figure without its comparison must not pass silently), unless --no-qemu.

import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { describeEnvironment, machineLine, type Environment } from "./lib/environment.ts";
import { formatMarkdown, formatTable, headlineRows, type Results } from "./lib/report.ts";
import { renderChart } from "./lib/chart.ts";
import { bundledChildren } from "./lib/bundled-children.ts";
import { timedSpawn } from "./lib/timed-spawn.ts";
import { QEMU_CPU_MODELS, qemuCommand } from "./qemu/command.ts";
import { buildPvhProbes, type PvhProbes } from "./qemu/pvh.ts";
import { startToFirst } from "./metrics/start-to-first.ts";
import { linuxBoot } from "./metrics/linux-boot.ts";
import { memory } from "./metrics/memory.ts";
import { exitRtt } from "./metrics/exit-rtt.ts";
import { creation } from "./metrics/creation.ts";
import { cloneMemory, execSnapshot, restoreLatency } from "./metrics/snapshot.ts";
import { buildGuest, guestArtifactsIfBuilt } from "../guest/build.ts";
import { MiB } from "../src/arch/x86_64/layout.ts";

const METRICS = ["first", "linux", "memory", "exits", "creation", "restore", "clones", "exec-snapshot"] as const;
type Metric = (typeof METRICS)[number];

/** How much of each metric a run does. */
const CONFIG = {
  full: {
    startRuns: 20, breakdownRuns: 10, memoryCounts: [1, 4, 16, 64], exitRuns: 3, creationSeconds: 10, creationBreakdown: 20,
    linuxRuns: 1, qemuLinuxRuns: 2, restoreRuns: 10, restoreWarm: 5, cloneCounts: [1, 16, 64], cloneProcessCounts: [1, 16, 64],
    metrics: [...METRICS],
  },
  quick: {
    startRuns: 3, breakdownRuns: 2, memoryCounts: [1, 4], exitRuns: 1, creationSeconds: 2, creationBreakdown: 3,
    linuxRuns: 0, qemuLinuxRuns: 0, restoreRuns: 2, restoreWarm: 2, cloneCounts: [1, 4], cloneProcessCounts: [] as number[],
    metrics: METRICS.filter((m) => m !== "linux" && m !== "exec-snapshot"),
  },
};

/** What the JSON file holds. */
interface Report {
  kind: "full" | "quick";
  metrics: Metric[];
  environment: Environment;
  config: (typeof CONFIG)["full"];
  qemu: {
    used: boolean; reason: string | null; version: string | null;
    /** The `-cpu` model every QEMU figure ran with, and each model tried before it with why it failed. */
    cpu: string | null; attempts: { cpu: string; error: string | null }[];
  };
  headline: ReturnType<typeof headlineRows>;
  results: Results;
  durationSeconds: number;
}

function usage(problem?: string): never {
  if (problem) process.stderr.write(`bench: ${problem}\n`);
  process.stderr.write(
    "usage: bun bench/run.ts [--quick] [--only first,linux,memory,exits,creation] [--no-qemu] [--qemu-cpu host,max,qemu64] [--out DIR] [--markdown]\n" +
      "       bun bench/run.ts --from RESULTS.json [--out DIR] [--markdown]\n",
  );
  process.exit(2);
}

function parseArgs(argv: string[]) {
  const o = {
    quick: false, only: undefined as Metric[] | undefined, qemu: true, out: undefined as string | undefined, markdown: false, from: undefined as string | undefined,
    qemuCpus: [...QEMU_CPU_MODELS] as string[],
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--quick") o.quick = true;
    else if (a === "--no-qemu") o.qemu = false;
    else if (a === "--markdown") o.markdown = true;
    else if (a === "--help" || a === "-h") usage();
    else if (a === "--out") o.out = argv[++i] ?? usage("--out needs a directory");
    else if (a === "--from") o.from = argv[++i] ?? usage("--from needs a results JSON file");
    else if (a === "--qemu-cpu") {
      o.qemuCpus = (argv[++i] ?? usage("--qemu-cpu needs a list of -cpu models")).split(",").filter((c) => c !== "");
      if (o.qemuCpus.length === 0 || o.qemuCpus.some((c) => !/^[A-Za-z0-9_.+=-]+$/.test(c))) usage("--qemu-cpu: a comma-separated list of QEMU -cpu model names");
    }
    else if (a === "--only") {
      const list = (argv[++i] ?? usage("--only needs a list")).split(",");
      const bad = list.filter((m) => !METRICS.includes(m as Metric));
      if (bad.length > 0) usage(`--only: unknown metric ${bad.join(", ")} (have: ${METRICS.join(", ")})`);
      o.only = list as Metric[];
    } else usage(`unknown argument ${a}`);
  }
  return o;
}

const started = performance.now();
const log = (line: string) => process.stderr.write(`[bench ${((performance.now() - started) / 1000).toFixed(1).padStart(6)} s] ${line}\n`);

interface QemuSetup {
  probes?: PvhProbes;
  cpu?: string;
  attempts: Report["qemu"]["attempts"];
  reason?: string;
}

/**
 * Build the PVH images and boot the first one under QEMU with each `-cpu` model in turn until one runs, so
 * a QEMU that cannot run here is found out once, up front, and every QEMU figure uses the model that ran.
 */
async function prepareQemu(env: Environment, cpus: string[]): Promise<QemuSetup> {
  if (!env.qemu) return { attempts: [], reason: "qemu-system-x86_64 is not installed (Debian: apt-get install qemu-system-x86)" };
  const probes = buildPvhProbes();
  const attempts: QemuSetup["attempts"] = [];
  for (const cpu of cpus) {
    const r = await timedSpawn(qemuCommand({ kernel: probes.firstWrite, memSize: 16 * MiB, cpu }), { signal: /!/, timeoutMs: 30_000 });
    if (r.signalMs !== undefined && r.exitCode === 0) {
      attempts.push({ cpu, error: null });
      return { probes, cpu, attempts };
    }
    const why = r.stderr.trim().split("\n").filter((l) => !/warning: host doesn't support/.test(l)).slice(-2).join(" / ");
    attempts.push({ cpu, error: `exit ${r.exitCode}${r.timedOut ? " (timed out)" : ""}: ${why || "no output"}` });
    log(`QEMU -cpu ${cpu} did not run the first-write probe: ${attempts[attempts.length - 1]!.error}`);
  }
  rmSync(probes.dir, { recursive: true, force: true });
  return {
    attempts,
    reason: `QEMU did not run the first-write probe with -accel kvm and any -cpu model of ${cpus.join(", ")}: ${attempts.map((a) => `${a.cpu}: ${a.error}`).join("; ")}`,
  };
}

async function measure(args: ReturnType<typeof parseArgs>): Promise<Report> {
  const config = args.quick ? CONFIG.quick : CONFIG.full;
  const metrics = args.only ?? config.metrics;
  const env = describeEnvironment();
  if (!env.kvm.usable) {
    process.stderr.write(`bench: KVM is not usable here: ${env.kvm.error}\n`);
    process.exit(1);
  }
  log(`${args.quick ? "quick" : "full"} run of ${metrics.join(", ")} on ${env.machine}; load ${env.load.start.join(" ")}`);
  const qemu: QemuSetup = args.qemu ? await prepareQemu(env, args.qemuCpus) : { attempts: [], reason: "--no-qemu" };
  if (qemu.reason && args.qemu) {
    // A run meant to compare that cannot is a failed run, not a run with a column left out.
    process.stderr.write(`bench: FAILED: no QEMU comparison can be made: ${qemu.reason}\n(run with --no-qemu to measure kindling alone)\n`);
    process.exit(3);
  }
  if (qemu.reason) log(`QEMU comparisons skipped: ${qemu.reason}`);
  else log(`QEMU runs with -cpu ${qemu.cpu}`);
  const qemuCpu = qemu.cpu;

  const results: Results = {};
  if (metrics.includes("first")) {
    log(`start to first instruction: ${config.startRuns} runs each, ${config.breakdownRuns} breakdown runs`);
    results.startToFirst = await startToFirst({ runs: config.startRuns, breakdownRuns: config.breakdownRuns, qemuElf: qemu.probes?.firstWrite, qemuCpu, log });
  }
  if (metrics.includes("memory")) {
    log(`memory: N = ${config.memoryCounts.join(", ")}`);
    results.memory = await memory({ counts: config.memoryCounts, qemuElf: qemu.probes?.firstWrite, qemuCpu, breakdown: !args.quick, log });
  }
  if (metrics.includes("exits")) {
    log(`exit round trip: ${config.exitRuns} run(s) of 2 x 100k exits each`);
    results.exitRtt = await exitRtt({ runs: config.exitRuns, qemu: qemu.probes?.exits, qemuCpu, log });
  }
  if (metrics.includes("creation")) {
    log(`creation rate: ${config.creationSeconds} s windows`);
    results.creation = await creation({ seconds: config.creationSeconds, breakdownCount: config.creationBreakdown, qemuElf: qemu.probes?.firstWrite, qemuCpu, log });
  }
  if (metrics.includes("restore")) {
    log(`snapshot restore to first instruction: ${config.restoreRuns} processes, ${config.restoreWarm} warm restores each`);
    results.restore = await restoreLatency({ runs: config.restoreRuns, warm: config.restoreWarm, qemuElf: qemu.probes?.counter, log });
  }
  if (metrics.includes("clones")) {
    log(`clone memory: N = ${config.cloneCounts.join(", ")} in one process${config.cloneProcessCounts.length ? `, ${config.cloneProcessCounts.join(", ")} processes` : ""}`);
    results.clones = await cloneMemory({ counts: config.cloneCounts, processCounts: config.cloneProcessCounts, log });
  }
  if (metrics.includes("exec-snapshot")) {
    log(`exec --snapshot (Linux at its shell): ${config.restoreRuns} runs`);
    results.execSnapshot = await execSnapshot({ runs: config.restoreRuns, log });
  }
  if (metrics.includes("linux")) {
    const guest = guestArtifactsIfBuilt() ?? (log("building the guest kernel and initramfs first (guest/build.ts): this takes long, once"), await buildGuest({ log }));
    const runs = Math.max(1, config.linuxRuns);
    const qemuRuns = Math.max(1, config.qemuLinuxRuns);
    log(`Linux boot: ${runs} kindling run(s), ${qemu.probes ? qemuRuns : 0} QEMU run(s)${env.kvm.emulatesGuestKernel ? " (emulated guest kernel: minutes each)" : ""}`);
    results.linuxBoot = await linuxBoot({
      runs, qemuRuns, vmlinux: guest.vmlinux, initramfs: guest.initramfs, emulatingHost: env.kvm.emulatesGuestKernel, qemu: qemu.probes !== undefined, qemuCpu, log,
    });
  }
  if (qemu.probes) rmSync(qemu.probes.dir, { recursive: true, force: true });
  if (metrics.includes("first") || metrics.includes("creation")) rmSync((await bundledChildren()).dir, { recursive: true, force: true });
  env.load.end = loadavg().map((x) => Math.round(x * 100) / 100);
  return {
    kind: args.quick ? "quick" : "full", metrics, environment: env, config,
    qemu: { used: qemu.probes !== undefined, reason: qemu.reason ?? null, version: env.qemu, cpu: qemu.cpu ?? null, attempts: qemu.attempts },
    headline: headlineRows(results), results, durationSeconds: Math.round((performance.now() - started) / 100) / 10,
  };
}

/** The machine and the QEMU a report's figures came from: printed above every table and in the chart. */
function caption(report: Report): string[] {
  const env = report.environment;
  const q = report.qemu;
  const qemu = q.used
    ? `QEMU ${env.qemu?.match(/version (\S+)/)?.[1] ?? "?"} microvm, -cpu ${q.cpu ?? "host"}${q.attempts?.some((a) => a.error) ? ` (${q.attempts.filter((a) => a.error).map((a) => a.cpu).join(", ")} failed here)` : ""}`
    : `no QEMU comparison: ${q.reason}`;
  return [`machine: ${env.machine ?? machineLine(env)}`, qemu];
}

/** The chart, from a report. */
function chart(report: Report): string {
  const env = report.environment;
  return renderChart(report.headline, {
    title: `kindling vs QEMU ${env.qemu?.match(/version (\S+)/)?.[1] ?? ""} microvm${report.kind === "quick" ? " (quick run)" : ""}`,
    lines: [
      `${env.date.slice(0, 16).replace("T", " ")} UTC, kindling ${env.kindlingRevision}, Bun ${env.bun}`,
      `${env.machine ?? machineLine(env)}, Linux ${env.kernel}`,
      caption(report)[1]!,
      `load average at start ${env.load.start.join(" ")}, at end ${env.load.end?.join(" ") ?? "?"}; medians`,
    ],
  });
}

const args = parseArgs(process.argv.slice(2));
let report: Report;
let outDir: string;
if (args.from) {
  report = JSON.parse(readFileSync(args.from, "utf8")) as Report;
  report.headline = headlineRows(report.results); // the rows as this version of report.ts makes them
  outDir = args.out ?? dirname(args.from);
} else {
  report = await measure(args);
  outDir = args.out ?? (args.quick ? join(tmpdir(), "kindling-bench") : join(import.meta.dir, "results"));
  mkdirSync(outDir, { recursive: true });
  const env = report.environment;
  const json = join(outDir, `${env.date.slice(0, 10)}-${env.hostname.replace(/[^A-Za-z0-9_.-]/g, "_")}${args.quick ? "-quick" : ""}.json`);
  writeFileSync(json, `${JSON.stringify(report, null, 1)}\n`);
  console.log(`wrote ${json}`);
}
mkdirSync(outDir, { recursive: true });
const svg = join(outDir, "latest.svg");
writeFileSync(svg, chart(report));
console.log(`wrote ${svg}\n`);
console.log(caption(report).join("\n"));
console.log(formatTable(report.headline));
if (args.markdown) console.log(`\n${caption(report).map((l) => `${l[0]!.toUpperCase()}${l.slice(1)}.`).join(" ")}\n\n${formatMarkdown(report.headline)}`);
