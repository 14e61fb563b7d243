// scripts/run-tests.ts [bun test arguments...]: runs `bun test` over test/, streams its output, and ends with
// one plain line that any CI can read:
//
//   tests: 41 passed, 0 failed, 2 skipped
//
// The counts come from bun's own closing summary. The exit code is bun test's, except that a run in which
// no test passed or failed (none found, or all skipped) exits 1: a green run must have tested something.
// File or directory arguments replace the default test/ (`bun run test test/cli.test.ts`); others, such as
// `-t pattern` or `--timeout 1000`, are passed to bun test as they are.

import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { detectHost } from "../src/host.ts";

const ROOT = resolve(import.meta.dir, "..");

const args = process.argv.slice(2);
const namesPaths = args.some((a) => !a.startsWith("-") && existsSync(resolve(ROOT, a)));
const command = [process.execPath, "test", ...(namesPaths ? [] : ["./test"]), ...args];

/** A line about this host, so a slow or failing run can be read in context. */
function hostNote(): string {
  const host = detectHost();
  if (host.kvm.error !== null) {
    const ci = process.env.CI === "true" ? "under CI=true, tests that need it fail" : "tests that need it report why";
    return `KVM is unusable (${host.kvm.error}); ${ci}`;
  }
  if (host.emulatesGuestKernel) {
    const cause = host.emulationCause === "pvm" ? "PVM" : "no vmx/svm";
    return `KVM usable; this host emulates guest kernel code (${cause}), so Linux boot tests take minutes each`;
  }
  return "KVM usable, with hardware virtualization";
}

/** Keeps the last `limit` characters written to a stream, for reading bun's summary afterwards. */
class Tail {
  text = "";
  constructor(private readonly limit = 64 * 1024) {}
  push(s: string): void {
    this.text = (this.text + s).slice(-this.limit);
  }
}

async function pump(from: ReadableStream<Uint8Array>, to: { write(chunk: Uint8Array): unknown }, tail: Tail): Promise<void> {
  const decoder = new TextDecoder();
  for await (const chunk of from) {
    to.write(chunk);
    tail.push(decoder.decode(chunk, { stream: true }));
  }
}

export interface Summary {
  passed: number;
  failed: number;
  skipped: number;
}

/**
 * Reads bun test's closing block, the count lines just above "Ran N tests across M files.":
 *    12 pass / 1 skip / 1 todo / 2 filtered out / 0 fail / 3 error / 40 expect() calls
 * Returns undefined when there is no such block (bun found no tests, or crashed).
 */
export function parseBunSummary(output: string): Summary | undefined {
  const lines = output.replace(/\x1b\[[0-9;]*m/g, "").split(/\r?\n/);
  let ran = -1;
  for (let i = lines.length - 1; i >= 0; i--) {
    if (/^Ran \d+ tests? across \d+ files?\./.test(lines[i]!.trim())) {
      ran = i;
      break;
    }
  }
  if (ran < 0) return undefined;
  const count: Record<string, number> = {};
  for (let i = ran - 1; i >= 0; i--) {
    // Any "<number> <words>" line belongs to the block ("2 filtered out", "40 expect() calls", ...).
    const m = lines[i]!.match(/^\s*(\d+) (\S.*)$/);
    if (!m) break;
    count[m[2] === "errors" ? "error" : m[2]!] = Number(m[1]);
  }
  if (count.pass === undefined && count.fail === undefined) return undefined;
  const fail = count.fail ?? 0;
  const errors = count.error ?? 0;
  return {
    passed: count.pass ?? 0,
    // bun counts a file that throws while loading as a failure and an error; an error outside any test
    // with no failure still means the run is broken.
    failed: fail > 0 ? fail : errors,
    skipped: (count.skip ?? 0) + (count.todo ?? 0),
  };
}

export function summaryLine(s: Summary): string {
  return `tests: ${s.passed} passed, ${s.failed} failed${s.skipped > 0 ? `, ${s.skipped} skipped` : ""}`;
}

async function main(): Promise<number> {
  console.log(`run-tests: ${hostNote()}`);
  console.log(`run-tests: ${command.slice(1).join(" ")}`);
  const colour = process.stdout.isTTY || process.stderr.isTTY;
  const child = Bun.spawn(command, {
    cwd: ROOT,
    stdin: "inherit",
    stdout: "pipe",
    stderr: "pipe",
    env: colour ? { ...process.env, FORCE_COLOR: "1" } : process.env,
  });
  const out = new Tail();
  const err = new Tail();
  await Promise.all([pump(child.stdout, process.stdout, out), pump(child.stderr, process.stderr, err)]);
  const code = await child.exited;

  // bun writes its summary to stderr; look there first, then in stdout.
  const summary = parseBunSummary(err.text) ?? parseBunSummary(out.text);
  console.log("");
  if (summary === undefined) {
    console.log(summaryLine({ passed: 0, failed: 0, skipped: 0 }));
    console.log(`run-tests: bun test printed no summary (exit ${code}): no tests ran`);
    return code === 0 ? 1 : code;
  }
  console.log(summaryLine(summary));
  if (summary.passed + summary.failed === 0) {
    console.log("run-tests: no test ran (all skipped or filtered out)");
    return code === 0 ? 1 : code;
  }
  if (summary.failed > 0 && code === 0) return 1;
  return code;
}

if (import.meta.main) process.exit(await main());
