// Metric 6: snapshot restore, and the memory of clones.
//
// Restore to the guest's first instruction, for the counter probe in a 1-vCPU, 128 MiB VM (snapshot taken
// at count 1000 by children/make-snapshot.ts):
//   kindling, call:   restoreSnapshot() (resume) to the guest's first port write after it, in ms, measured in
//                     children/restore.ts: the first restore of a fresh process ("cold"), then restores in the
//                     same warm process, then restores with a spare vCPU worker loaded beforehand (as an idle
//                     `kindling api` would have: see prewarmVcpuWorkers), with restore's step timings;
//   kindling, spawn:  from spawning children/restore.ts, compiled to a standalone executable, to its line
//                     saying the guest ran (process start, module loading and the cold restore);
//   QEMU, command:    `-incoming defer`, then the monitor's `migrate_incoming "exec:cat FILE"` to the guest's
//                     first byte on the serial port (QEMU's stdout): QEMU's restore inside a running process;
//   QEMU, spawn:      spawning QEMU with `-incoming "exec:cat FILE"` to the guest's first serial byte.
// QEMU's file comes from a live migration (`migrate "exec:cat > FILE"`) of the same probe as a PVH ELF:
// live, so that the source was running when it ended and the destination starts by itself.
//
// Clone memory: one process restores the snapshot N times (N = 1, 16, 64; children/hold-clones.ts), each
// clone runs until it has counted, then all are paused and /proc/<pid>/smaps is read. Per clone: the slope
// over N of the process's memory without guest RAM (Rss, Pss, Private_Dirty, as metrics/memory.ts), and,
// separately, the guest pages each clone wrote (Private_Dirty of its RAM mapping: copied on write) and the
// file pages all share. Then the same as N processes of one clone each, Pss summed.
//
// QEMU runs with `-cpu host,-arch-capabilities`: on this project's (PVM) host QEMU 7.2 aborts setting
// IA32_ARCH_CAPABILITIES (MSR 0x10a) with plain `-cpu host`.

import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, dirname, join } from "node:path";
import { overhead, readSmaps, residentKiB, type Overhead } from "../lib/smaps.ts";
import { timedSpawn } from "../lib/timed-spawn.ts";
import { linearFit, round, summarize, type Summary } from "../lib/stats.ts";
import { qemuCommand } from "../qemu/command.ts";
import { MiB as MIB } from "../../src/arch/x86_64/layout.ts";

const RESTORE = join(import.meta.dir, "../children/restore.ts");
const MAKE = join(import.meta.dir, "../children/make-snapshot.ts");
const CLONES = join(import.meta.dir, "../children/hold-clones.ts");
const GUEST_MEM = 128 * MIB;
export const QEMU_CPU = "host,-arch-capabilities";

export interface RestoreResult {
  guestMemMiB: number;
  snapshot: { stateBytes: number; memoryBytes: number; memFileBytes: number; createMs: Record<string, number> };
  kindling: {
    coldCallMs: Summary;
    warmCallMs: Summary;
    spareCallMs: Summary;
    spawnToFirstMs: Summary;
    /** Medians of restore's steps in the spare-worker runs. */
    breakdown: { phase: string; medianMs: number }[];
  };
  qemu?: { commandToFirstMs: Summary; spawnToFirstMs: Summary; migrationBytes: number; command: string[] };
}

export interface ClonePoint extends Overhead {
  n: number;
  /** Guest pages the clones wrote (copied from the file on write), KiB, all clones. */
  guestPrivateKiB: number;
  /** Guest pages mapped from the file and shared, KiB as Rss (each clone counts them). */
  guestSharedKiB: number;
}

export interface ClonesResult {
  guestMemMiB: number;
  inProcess: { points: ClonePoint[]; perCloneMiB: { rss: number; pss: number; privateDirty: number; guestWritten: number } };
  processes?: { points: ClonePoint[]; perCloneMiB: { rss: number; pss: number; privateDirty: number; guestWritten: number } };
}

function sh(cmd: string[]): string {
  const r = Bun.spawnSync(cmd, { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`${cmd.join(" ")} failed (${r.exitCode}): ${r.stderr.toString()}`);
  return r.stdout.toString();
}

/** A QEMU HMP monitor on a Unix socket: send a line, collect what comes back. */
async function monitor(sock: string) {
  let out = "";
  for (let i = 0; i < 200; i++) {
    try {
      const conn = await Bun.connect({ unix: sock, socket: { data: (_s, d) => void (out += new TextDecoder().decode(d)) } });
      return {
        send: (line: string) => void conn.write(`${line}\n`),
        take: () => { const o = out; out = ""; return o; },
        close: () => conn.end(),
      };
    } catch {
      await Bun.sleep(10);
    }
  }
  throw new Error(`QEMU monitor ${sock} never came up`);
}

/** Live-migrate the counter probe under QEMU into `file`. */
async function makeQemuMigration(elf: string, file: string, dir: string): Promise<void> {
  const sock = join(dir, "mon-src.sock");
  const p = Bun.spawn([...qemuCommand({ kernel: elf, memSize: GUEST_MEM, cpu: QEMU_CPU }), "-monitor", `unix:${sock},server=on,wait=off`], { stdout: "pipe", stderr: "pipe" });
  try {
    let n = 0;
    const reading = (async () => { for await (const c of p.stdout) n += c.byteLength; })();
    for (let i = 0; n < 1000; i++) {
      if (i > 1000) throw new Error(`QEMU source: the counter printed ${n} bytes in 10 s\n${await new Response(p.stderr).text()}`);
      await Bun.sleep(10);
    }
    const m = await monitor(sock);
    m.send(`migrate "exec:cat > ${file}"`);
    for (let i = 0; ; i++) {
      await Bun.sleep(50);
      m.take();
      m.send("info migrate");
      await Bun.sleep(50);
      const o = m.take();
      if (/Migration status: completed/.test(o)) break;
      if (/Migration status: failed/.test(o) || i > 100) throw new Error(`QEMU migration did not complete: ${o}`);
    }
    m.send("quit");
    m.close();
    await Promise.race([p.exited, Bun.sleep(5000)]);
    void reading;
  } finally {
    p.kill("SIGKILL");
    await p.exited;
  }
}

/** QEMU with -incoming defer: from `migrate_incoming` to the first serial byte. */
async function qemuDeferred(elf: string, file: string, dir: string): Promise<number> {
  const sock = join(dir, "mon-dst.sock");
  rmSync(sock, { force: true });
  const p = Bun.spawn([...qemuCommand({ kernel: elf, memSize: GUEST_MEM, cpu: QEMU_CPU }), "-incoming", "defer", "-monitor", `unix:${sock},server=on,wait=off`], { stdout: "pipe", stderr: "pipe" });
  const killer = setTimeout(() => p.kill("SIGKILL"), 20_000);
  try {
    const m = await monitor(sock);
    await Bun.sleep(200); // let QEMU settle: the timed part is the restore only
    const first = (async () => { for await (const _c of p.stdout) return performance.now(); return undefined; })();
    const t0 = performance.now();
    m.send(`migrate_incoming "exec:cat ${file}"`);
    const t1 = await first;
    m.close();
    if (t1 === undefined) throw new Error(`QEMU -incoming defer: no output\n${await new Response(p.stderr).text()}`);
    return t1 - t0;
  } finally {
    clearTimeout(killer);
    p.kill("SIGKILL");
    await p.exited;
  }
}

export async function restoreLatency(opts: { runs: number; warm: number; qemuElf?: string; log: (s: string) => void }): Promise<RestoreResult> {
  const dir = mkdtempSync(join(tmpdir(), "kindling-bench-snapshot-"));
  try {
    const state = join(dir, "counter.state");
    const mem = join(dir, "counter.mem");
    const made = /^snapshot (.*)$/m.exec(sh([process.execPath, MAKE, state, mem, String(GUEST_MEM / MIB)]))?.[1];
    const snap = JSON.parse(made!) as { stateBytes: number; memoryBytes: number; timings: Record<string, number> };

    const k = { cold: [] as number[], warm: [] as number[], spare: [] as number[], spawn: [] as number[] };
    const phases = new Map<string, number[]>();
    const q = { command: [] as number[], spawn: [] as number[] };
    const migration = join(dir, "qemu-migration.bin");
    if (opts.qemuElf) await makeQemuMigration(opts.qemuElf, migration, dir);
    const qcmd = opts.qemuElf ? [...qemuCommand({ kernel: opts.qemuElf, memSize: GUEST_MEM, cpu: QEMU_CPU }), "-incoming", `exec:cat ${migration}`] : undefined;

    // The child compiled to a standalone executable, as a program using kindling would ship (metric 1's way).
    const { executable } = await import("../../scripts/bundle.ts");
    const restoreExe = await executable(RESTORE, join(dir, "restore-exe"));
    for (let i = 0; i < opts.runs; i++) {
      const r = await timedSpawn([restoreExe, state, mem, String(opts.warm)], { signal: /^first .*\n/m, timeoutMs: 60_000 });
      if (r.signalMs === undefined || r.exitCode !== 0) throw new Error(`restore child failed (exit ${r.exitCode}): ${r.stdout}\n${r.stderr}`);
      k.spawn.push(r.signalMs);
      const lines = Object.fromEntries(r.stdout.trim().split("\n").map((l) => [l.split(" ")[0]!, l.slice(l.indexOf(" ") + 1)]));
      k.cold.push(Number(lines.first!.split(" ")[1]));
      for (const w of JSON.parse(lines.warm!) as { ms: number }[]) k.warm.push(w.ms);
      for (const w of JSON.parse(lines.spare!) as { ms: number; timings: Record<string, number> }[]) {
        k.spare.push(w.ms);
        for (const [name, ms] of Object.entries(w.timings)) phases.set(name, [...(phases.get(name) ?? []), ms]);
      }
      if (qcmd && opts.qemuElf) {
        const s = await timedSpawn(qcmd, { signal: /[\s\S]/, timeoutMs: 20_000, killOnSignal: true });
        if (s.signalMs === undefined) throw new Error(`QEMU -incoming: no output\n${s.stderr}`);
        q.spawn.push(s.signalMs);
        q.command.push(await qemuDeferred(opts.qemuElf, migration, dir));
      }
    }
    const result: RestoreResult = {
      guestMemMiB: GUEST_MEM / MIB,
      snapshot: { stateBytes: snap.stateBytes, memoryBytes: snap.memoryBytes, memFileBytes: statSync(mem).size, createMs: snap.timings },
      kindling: {
        coldCallMs: summarize(k.cold, "ms"), warmCallMs: summarize(k.warm, "ms"), spareCallMs: summarize(k.spare, "ms"),
        spawnToFirstMs: summarize(k.spawn, "ms"),
        breakdown: [...phases].map(([phase, xs]) => ({ phase, medianMs: summarize(xs, "ms").median })),
      },
      qemu: qcmd ? { commandToFirstMs: summarize(q.command, "ms"), spawnToFirstMs: summarize(q.spawn, "ms"), migrationBytes: statSync(migration).size, command: qcmd } : undefined,
    };
    opts.log(`restore to first instruction: kindling ${result.kindling.spareCallMs.median} ms (spare worker), ${result.kindling.warmCallMs.median} ms (warm), ${result.kindling.coldCallMs.median} ms (cold); QEMU migrate_incoming ${result.qemu?.commandToFirstMs.median ?? "-"} ms`);
    return result;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** One process holding `n` clones, or `procs` processes holding one each; smaps summed. */
async function clonePoint(state: string, mem: string, n: number, procs: number): Promise<ClonePoint> {
  const sum: ClonePoint = { n: n * procs, rssKiB: 0, pssKiB: 0, privateDirtyKiB: 0, guestRssKiB: 0, firecrackerRuleRssKiB: 0, guestPrivateKiB: 0, guestSharedKiB: 0 };
  const children = Array.from({ length: procs }, () => Bun.spawn([process.execPath, CLONES, state, mem, String(n)], { stdout: "pipe", stderr: "pipe" }));
  try {
    const ready = await Promise.all(children.map(async (p) => {
      const timer = setTimeout(() => p.kill("SIGKILL"), 180_000);
      let text = "";
      for await (const c of p.stdout) {
        text += new TextDecoder().decode(c);
        if (/^ready .*\n/m.test(text)) break;
      }
      clearTimeout(timer);
      const m = /^ready (.*)$/m.exec(text);
      if (!m) throw new Error(`hold-clones ${n}: never ready\n${await new Response(p.stderr).text()}`);
      return JSON.parse(m[1]!) as [number, number][];
    }));
    await Bun.sleep(300);
    children.forEach((p, i) => {
      const ram = ready[i]!;
      const maps = readSmaps(p.pid);
      const inRam = (m: { start: number; end: number }) => ram.some(([a, s]) => m.start < a + s && a < m.end);
      const o = overhead(maps, (m) => (inRam(m) ? residentKiB(p.pid, m.start, m.end) : 0), GUEST_MEM);
      for (const key of ["rssKiB", "pssKiB", "privateDirtyKiB", "guestRssKiB", "firecrackerRuleRssKiB"] as const) sum[key] += o[key];
      for (const m of maps.filter(inRam)) {
        sum.guestPrivateKiB += m.kib.Private_Dirty ?? 0;
        sum.guestSharedKiB += (m.kib.Rss ?? 0) - (m.kib.Private_Dirty ?? 0);
      }
    });
    return sum;
  } finally {
    for (const p of children) p.kill("SIGKILL");
    await Promise.all(children.map((p) => p.exited));
  }
}

function perClone(points: ClonePoint[]) {
  const slope = (f: (p: ClonePoint) => number) => round(linearFit(points.map((p) => ({ x: p.n, y: f(p) }))).slope / 1024);
  return { rss: slope((p) => p.rssKiB), pss: slope((p) => p.pssKiB), privateDirty: slope((p) => p.privateDirtyKiB), guestWritten: slope((p) => p.guestPrivateKiB) };
}

export async function cloneMemory(opts: { counts: number[]; processCounts: number[]; log: (s: string) => void }): Promise<ClonesResult> {
  const dir = mkdtempSync(join(tmpdir(), "kindling-bench-clones-"));
  try {
    const state = join(dir, "counter.state");
    const mem = join(dir, "counter.mem");
    sh([process.execPath, MAKE, state, mem, String(GUEST_MEM / MIB)]);
    const inPoints: ClonePoint[] = [];
    for (const n of opts.counts) inPoints.push(await clonePoint(state, mem, n, 1));
    const inProcess = { points: inPoints, perCloneMiB: perClone(inPoints) };
    let processes: ClonesResult["processes"];
    if (opts.processCounts.length > 1) {
      const pts: ClonePoint[] = [];
      for (const n of opts.processCounts) pts.push(await clonePoint(state, mem, 1, n));
      processes = { points: pts, perCloneMiB: perClone(pts) };
    }
    opts.log(`clones: per clone ${inProcess.perCloneMiB.rss} MiB RSS (${inProcess.perCloneMiB.pss} PSS) beyond the ${inProcess.perCloneMiB.guestWritten} MiB of guest pages each wrote; a process each: ${processes?.perCloneMiB.pss ?? "-"} MiB PSS`);
    return { guestMemMiB: GUEST_MEM / MIB, inProcess, processes };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---- Linux at its shell: `kindling exec --snapshot DIR -- echo hi` ----
//
// The snapshot is the guest's quick shell (src/exec.ts, saveExecSnapshot), made once per guest build and
// kept in the cache (<cache>/exec-snapshot/<guest hash>/, made again when its exec.json does not name
// this quick shell): making it boots Linux, minutes on an emulating host. Each run times two
// processes, alternating, each reporting its own call's timings (the load, i.e. the restore, and the
// command's first output, both from the call) and spawn to exit:
//   program: children/exec-snapshot.ts compiled to a standalone executable (scripts/bundle.ts
//            --executable), calling the library's execFromSnapshot(): the headline, as a service built on
//            kindling would ship it (the same way the start-to-first headline is measured);
//   CLI:     `bun src/cli/main.ts exec --snapshot DIR -- echo hi`, from TypeScript source: the call runs
//            cold code that the compiled program has as bytecode.
// QEMU has no counterpart here: it cannot run the guest's userland on an emulating host (no syscall assist).

export interface ExecSnapshotTimes {
  loadMs: Summary;
  firstOutputMs: Summary;
  spawnToExitMs: Summary;
}

export interface ExecSnapshotResult extends ExecSnapshotTimes {
  cli: ExecSnapshotTimes;
  snapshotMadeMs?: number;
}

export async function execSnapshot(opts: { runs: number; log: (s: string) => void }): Promise<ExecSnapshotResult> {
  const { buildGuest } = await import("../../guest/build.ts");
  const { cacheRoot } = await import("../../guest/cache.ts");
  const { saveExecSnapshot, hasQuickShell } = await import("../../src/exec.ts");
  const { executable } = await import("../../scripts/bundle.ts");
  const g = await buildGuest({ log: opts.log });
  // The guest build's own directory is named by its hash: the snapshot is kept per build.
  const dir = join(cacheRoot(), "exec-snapshot", basename(dirname(g.vmlinux)));
  let snapshotMadeMs: number | undefined;
  if (!hasQuickShell(dir)) {
    opts.log(`making the shell snapshot in ${dir} (one Linux boot)`);
    snapshotMadeMs = await saveExecSnapshot(dir, { kernel: g.vmlinux, rootfs: g.rootfs, log: () => {} });
  }
  const exeDir = mkdtempSync(join(tmpdir(), "kindling-bench-exec-"));
  try {
    const exe = await executable(join(import.meta.dir, "../children/exec-snapshot.ts"), join(exeDir, "exec-snapshot"));
    const cli = join(import.meta.dir, "../../src/cli/main.ts");
    const t = { program: { load: [] as number[], first: [] as number[], wall: [] as number[] }, cli: { load: [] as number[], first: [] as number[], wall: [] as number[] } };
    for (let i = 0; i < opts.runs; i++) {
      const p = await timedSpawn([exe, dir], { signal: /^hi\n/, timeoutMs: 180_000 });
      const pm = /^exec-snapshot (\{.*\})$/m.exec(p.stdout);
      if (p.exitCode !== 0 || !pm || !p.stdout.startsWith("hi\n")) throw new Error(`exec-snapshot program failed (exit ${p.exitCode}): ${p.stdout}\n${p.stderr}`);
      const pt = JSON.parse(pm[1]!) as { loadMs: number; firstOutputMs: number };
      t.program.load.push(pt.loadMs);
      t.program.first.push(pt.firstOutputMs);
      t.program.wall.push(p.exitMs);
      const r = await timedSpawn([process.execPath, cli, "exec", "--snapshot", dir, "--timeout", "120", "--", "echo", "hi"], { signal: /^hi\n/, timeoutMs: 180_000 });
      const m = /snapshot loaded (\d+) ms, first output (\d+) ms/.exec(r.stdout + r.stderr);
      if (r.exitCode !== 0 || !m || !r.stdout.startsWith("hi\n")) throw new Error(`exec --snapshot failed (exit ${r.exitCode}): ${r.stdout}\n${r.stderr}`);
      t.cli.load.push(Number(m[1]));
      t.cli.first.push(Number(m[2]));
      t.cli.wall.push(r.exitMs);
    }
    const times = (x: { load: number[]; first: number[]; wall: number[] }): ExecSnapshotTimes =>
      ({ loadMs: summarize(x.load, "ms"), firstOutputMs: summarize(x.first, "ms"), spawnToExitMs: summarize(x.wall, "ms") });
    const result: ExecSnapshotResult = { ...times(t.program), cli: times(t.cli), snapshotMadeMs };
    opts.log(`exec --snapshot echo hi: first output ${result.firstOutputMs.median} ms after the call (load ${result.loadMs.median} ms), compiled program; CLI from source ${result.cli.firstOutputMs.median} ms (load ${result.cli.loadMs.median} ms)`);
    return result;
  } finally {
    rmSync(exeDir, { recursive: true, force: true });
  }
}
