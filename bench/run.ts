// kindling's benchmarks, side by side with QEMU's microvm: `bun run bench` (everything, a few minutes) or
// `bun bench/run.ts --quick` (a smoke run: every metric once, small counts, no Linux boot, under a minute).
// Prints a table, writes <out>/<date>-<host>.json (raw samples, medians, p90, the host, kindling's git
// revision) and <out>/latest.svg. bench/README.md says how each figure is measured.
//
//   bun bench/run.ts [--quick] [--only first,linux,memory,exits,creation,restore,clones,exec-snapshot] [--no-qemu] [--out DIR] [--markdown]
//   bun bench/run.ts --from RESULTS.json [--out DIR] [--markdown]     table and chart again, measuring nothing

import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { describeEnvironment, type Environment } from "./lib/environment.ts";
import { formatMarkdown, formatTable, headlineRows, type Results } from "./lib/report.ts";
import { renderChart } from "./lib/chart.ts";
import { timedSpawn } from "./lib/timed-spawn.ts";
import { qemuCommand } from "./qemu/command.ts";
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
    startRuns: 20, breakdownRuns: 10, memoryCounts: [1, 4, 16, 32], exitRuns: 3, creationSeconds: 10, creationBreakdown: 20,
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
  qemu: { used: boolean; reason: string | null; version: string | null };
  headline: ReturnType<typeof headlineRows>;
  results: Results;
  durationSeconds: number;
}

function usage(problem?: string): never {
  if (problem) process.stderr.write(`bench: ${problem}\n`);
  process.stderr.write(
    "usage: bun bench/run.ts [--quick] [--only first,linux,memory,exits,creation] [--no-qemu] [--out DIR] [--markdown]\n" +
      "       bun bench/run.ts --from RESULTS.json [--out DIR] [--markdown]\n",
  );
  process.exit(2);
}

function parseArgs(argv: string[]) {
  const o = { quick: false, only: undefined as Metric[] | undefined, qemu: true, out: undefined as string | undefined, markdown: false, from: undefined as string | undefined };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--quick") o.quick = true;
    else if (a === "--no-qemu") o.qemu = false;
    else if (a === "--markdown") o.markdown = true;
    else if (a === "--help" || a === "-h") usage();
    else if (a === "--out") o.out = argv[++i] ?? usage("--out needs a directory");
    else if (a === "--from") o.from = argv[++i] ?? usage("--from needs a results JSON file");
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

/** Build the PVH images and boot one under QEMU, so a QEMU that cannot run here is found out once, up front. */
async function prepareQemu(env: Environment): Promise<{ probes?: PvhProbes; reason?: string }> {
  if (!env.qemu) return { reason: "qemu-system-x86_64 is not installed (Debian: apt-get install qemu-system-x86)" };
  const probes = buildPvhProbes();
  const r = await timedSpawn(qemuCommand({ kernel: probes.firstWrite, memSize: 16 * MiB }), { signal: /!/, timeoutMs: 30_000 });
  if (r.signalMs === undefined || r.exitCode !== 0) return { reason: `QEMU did not run the first-write probe with -accel kvm (exit ${r.exitCode}): ${r.stderr.trim().split("\n").pop()}` };
  return { probes };
}

async function measure(args: ReturnType<typeof parseArgs>): Promise<Report> {
  const config = args.quick ? CONFIG.quick : CONFIG.full;
  const metrics = args.only ?? config.metrics;
  const env = describeEnvironment();
  if (!env.kvm.usable) {
    process.stderr.write(`bench: KVM is not usable here: ${env.kvm.error}\n`);
    process.exit(1);
  }
  log(`${args.quick ? "quick" : "full"} run of ${metrics.join(", ")} on ${env.cpu} (${env.cores} cores), ${env.kvm.description}; load ${env.load.start.join(" ")}`);
  const qemu = args.qemu ? await prepareQemu(env) : { reason: "--no-qemu" };
  if (qemu.reason) log(`QEMU comparisons skipped: ${qemu.reason}`);

  const results: Results = {};
  if (metrics.includes("first")) {
    log(`start to first instruction: ${config.startRuns} runs each, ${config.breakdownRuns} breakdown runs`);
    results.startToFirst = await startToFirst({ runs: config.startRuns, breakdownRuns: config.breakdownRuns, qemuElf: qemu.probes?.firstWrite, log });
  }
  if (metrics.includes("memory")) {
    log(`memory: N = ${config.memoryCounts.join(", ")}`);
    results.memory = await memory({ counts: config.memoryCounts, qemuElf: qemu.probes?.firstWrite, breakdown: !args.quick, log });
  }
  if (metrics.includes("exits")) {
    log(`exit round trip: ${config.exitRuns} run(s) of 2 x 100k exits each`);
    results.exitRtt = await exitRtt({ runs: config.exitRuns, qemu: qemu.probes?.exits, log });
  }
  if (metrics.includes("creation")) {
    log(`creation rate: ${config.creationSeconds} s windows`);
    results.creation = await creation({ seconds: config.creationSeconds, breakdownCount: config.creationBreakdown, qemuElf: qemu.probes?.firstWrite, log });
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
      runs, qemuRuns, vmlinux: guest.vmlinux, initramfs: guest.initramfs, emulatingHost: env.kvm.emulatesGuestKernel, qemu: qemu.probes !== undefined, log,
    });
  }
  if (qemu.probes) rmSync(qemu.probes.dir, { recursive: true, force: true });
  env.load.end = loadavg().map((x) => Math.round(x * 100) / 100);
  return {
    kind: args.quick ? "quick" : "full", metrics, environment: env, config,
    qemu: { used: qemu.probes !== undefined, reason: qemu.reason ?? null, version: env.qemu },
    headline: headlineRows(results), results, durationSeconds: Math.round((performance.now() - started) / 100) / 10,
  };
}

/** The chart, from a report. */
function chart(report: Report): string {
  const env = report.environment;
  return renderChart(report.headline, {
    title: `kindling vs QEMU ${env.qemu?.match(/version (\S+)/)?.[1] ?? ""} microvm${report.kind === "quick" ? " (quick run)" : ""}`,
    lines: [
      `${env.date.slice(0, 16).replace("T", " ")} UTC, kindling ${env.kindlingRevision}, Bun ${env.bun}`,
      `${env.cpu ?? "unknown CPU"}, ${env.cores} cores, Linux ${env.kernel}: ${env.kvm.description}`,
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
console.log(formatTable(report.headline));
if (args.markdown) console.log(`\n${formatMarkdown(report.headline)}`);
