// The benchmark harness, end to end: `bun bench/run.ts --quick` must produce a number for every metric it
// runs, for kindling and (where QEMU is installed) for QEMU, and write its JSON and its chart. No thresholds:
// the figures depend on the machine; this only proves that every measurement still works. Where QEMU is
// installed, the run starts with a `-cpu` model QEMU cannot have, so the fallback to the next model is
// exercised on every machine and must be recorded; a run that can make no comparison must fail.

import { expect } from "bun:test";
import { mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { kvmTest } from "./support/kvm.ts";
import { QEMU_CPU_MODELS, qemuVersion } from "../bench/qemu/command.ts";

const ROOT = join(import.meta.dir, "..");
const NO_SUCH_CPU = "no-such-cpu-model";
const HAVE_QEMU = qemuVersion() !== undefined;

async function runBench(args: string[]) {
  const p = Bun.spawn([process.execPath, "bench/run.ts", ...args], { cwd: ROOT, stdout: "pipe", stderr: "pipe" });
  const [stdout, stderr, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  return { stdout, stderr, code };
}

/** A positive, finite number: a measurement that happened. */
function measured(x: unknown, what: string): void {
  if (typeof x !== "number" || !Number.isFinite(x) || x <= 0) throw new Error(`${what}: expected a measurement, got ${JSON.stringify(x)}`);
}

kvmTest(
  "bench/run.ts --quick measures every metric and writes its JSON and chart",
  async () => {
    const out = mkdtempSync(join(tmpdir(), "kindling-bench-smoke-"));
    try {
      const qemuArgs = HAVE_QEMU ? ["--qemu-cpu", [NO_SUCH_CPU, ...QEMU_CPU_MODELS].join(",")] : ["--no-qemu"];
      const { stdout, stderr, code } = await runBench(["--quick", "--out", out, ...qemuArgs]);
      if (code !== 0) throw new Error(`bench/run.ts --quick exited with ${code}\n${stderr}\n${stdout}`);
      expect(stdout).toContain("start to first guest instruction");

      const files = readdirSync(out);
      const jsonName = files.find((f) => f.endsWith("-quick.json"));
      expect(jsonName).toBeDefined();
      const report = JSON.parse(readFileSync(join(out, jsonName!), "utf8"));
      const r = report.results;
      const qemu: boolean = report.qemu.used;

      expect(report.environment.kindlingRevision).toMatch(/^[0-9a-f]{12}(-dirty)?$/);
      expect(typeof report.environment.kvm.emulatesGuestKernel).toBe("boolean");
      // The machine is named with every result: in the JSON and above the table.
      expect(report.environment.cpuVendor).toMatch(/\w/);
      expect(report.environment.machine).toContain(report.environment.cpuVendor);
      expect(stdout).toContain(`machine: ${report.environment.machine}`);
      // Where QEMU is installed, it must have run, with the model after the impossible one that worked.
      expect(qemu).toBe(HAVE_QEMU);
      if (HAVE_QEMU) {
        expect(report.qemu.attempts[0].cpu).toBe(NO_SUCH_CPU);
        expect(report.qemu.attempts[0].error).toMatch(/\w/);
        expect(QEMU_CPU_MODELS as readonly string[]).toContain(report.qemu.cpu);
        expect(report.qemu.attempts.at(-1)).toEqual({ cpu: report.qemu.cpu, error: null });
        expect(stdout).toContain(`-cpu ${report.qemu.cpu}`);
      }

      // 1. start to first instruction, with raw samples and the breakdown of kindling's start.
      measured(r.startToFirst.kindling.wallMs.median, "kindling start to first instruction");
      measured(r.startToFirst.kindling.cpuMs.median, "kindling CPU");
      expect(r.startToFirst.kindling.wallMs.samples.length).toBe(report.config.startRuns);
      expect(r.startToFirst.breakdown.phases.length).toBeGreaterThan(5);
      for (const p of r.startToFirst.breakdown.phases) expect(Number.isFinite(p.medianMs)).toBe(true);
      // 3. memory: every N, with guest RAM left out.
      for (const p of r.memory.kindling.points) measured(p.rssKiB, `kindling memory at N=${p.n}`);
      measured(r.memory.kindling.slopeMiB.rss, "kindling memory slope");
      measured(r.memory.kindling.marginalMiB.rss, "kindling memory per extra VM");
      // 4. exit round trip.
      measured(r.exitRtt.kindling.pioUs.median, "kindling PIO exit");
      measured(r.exitRtt.kindling.mmioUs.median, "kindling MMIO exit");
      measured(r.exitRtt.kindlingMainThread.pioUs.median, "kindling PIO exit handed to the main thread");
      measured(r.exitRtt.kindlingMainThread.mmioUs.median, "kindling MMIO exit handed to the main thread");
      // The executable (the headline), the bundle run with bun and the child from source all ran.
      measured(r.startToFirst.kindlingBundled.wallMs.median, "kindling start to first instruction, bundled");
      measured(r.startToFirst.kindlingJit4.wallMs.median, "kindling start to first instruction, JIT policy 4");
      measured(r.startToFirst.kindlingFromSource.wallMs.median, "kindling start to first instruction from source");
      expect(r.startToFirst.breakdownBundled.phases.length).toBe(r.startToFirst.breakdown.phases.length);
      // 5. creation rate, and what one VM's creation costs by part.
      measured(r.creation.kindlingInProcess.perSecond, "kindling creation rate in one process");
      measured(r.creation.breakdown.medianMs["total per VM, one at a time"], "creation breakdown");
      measured(r.creation.kindlingProcesses.perSecond, "kindling creation rate as processes");
      // 6. snapshot restore to first instruction, and memory per clone.
      measured(r.restore.kindling.spareCallMs.median, "kindling restore");
      measured(r.restore.kindling.coldCallMs.median, "kindling restore, fresh process");
      for (const p of r.clones.inProcess.points) measured(p.rssKiB, `clones at N=${p.n}`);
      measured(r.clones.inProcess.perCloneMiB.rss, "memory per clone");

      if (qemu) {
        measured(r.startToFirst.qemu.wallMs.median, "QEMU start to first instruction");
        measured(r.restore.qemu.commandToFirstMs.median, "QEMU migrate_incoming");
        for (const p of r.memory.qemu.points) measured(p.rssKiB, `QEMU memory at N=${p.n}`);
        measured(r.exitRtt.qemu.loopMs.both.median, "QEMU exits loop");
        expect(Number.isFinite(r.exitRtt.qemu.pioUs.median)).toBe(true);
        expect(Number.isFinite(r.exitRtt.qemu.mmioUs.median)).toBe(true);
        measured(r.creation.qemuProcesses.perSecond, "QEMU creation rate");
      } else {
        console.warn(`[bench smoke] QEMU comparisons not run: ${report.qemu.reason}`);
      }

      const svg = readFileSync(join(out, "latest.svg"), "utf8");
      expect(svg).toStartWith("<svg");
      expect(svg).toContain("start to first guest instruction");
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  },
  240_000,
);

kvmTest(
  "bench/run.ts fails, naming why, when no QEMU comparison can be made and --no-qemu was not given",
  async () => {
    const out = mkdtempSync(join(tmpdir(), "kindling-bench-smoke-"));
    try {
      const { stdout, stderr, code } = await runBench(["--quick", "--only", "first", "--out", out, "--qemu-cpu", NO_SUCH_CPU]);
      expect(code).toBe(3);
      expect(stderr).toContain("FAILED: no QEMU comparison can be made");
      expect(stderr).toContain(HAVE_QEMU ? NO_SUCH_CPU : "not installed");
      expect(stdout).not.toContain("start to first guest instruction");
      expect(readdirSync(out)).toEqual([]); // nothing measured, nothing written
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  },
  60_000,
);
