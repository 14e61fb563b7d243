// The benchmark children that time a process's start, bundled to bytecode as a program using kindling would
// ship (scripts/bundle.ts), once per benchmark run, into a temporary directory: run with `bun`, and compiled
// to standalone executables (scripts/bundle.ts --executable), which start faster.

import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { bundle, executable } from "../../scripts/bundle.ts";

export interface BundledChildren {
  dir: string;
  /** children/first-write.ts, bundled. */
  firstWrite: string;
  /** children/breakdown.ts, bundled. */
  breakdown: string;
  /** children/first-write.ts and children/breakdown.ts as standalone executables. */
  firstWriteExe: string;
  breakdownExe: string;
  /** children/first-write.ts as an executable with JIT policy 4 (startup code stays interpreted longer). */
  firstWriteExeJit4: string;
}

let built: Promise<BundledChildren> | undefined;

export function bundledChildren(): Promise<BundledChildren> {
  built ??= (async () => {
    const dir = mkdtempSync(join(tmpdir(), "kindling-bench-bundle-"));
    const firstWrite = await bundle(join(import.meta.dir, "../children/first-write.ts"), join(dir, "first-write"));
    const breakdown = await bundle(join(import.meta.dir, "../children/breakdown.ts"), join(dir, "breakdown"));
    const firstWriteExe = await executable(join(import.meta.dir, "../children/first-write.ts"), join(dir, "exe", "first-write"));
    const breakdownExe = await executable(join(import.meta.dir, "../children/breakdown.ts"), join(dir, "exe", "breakdown"));
    const firstWriteExeJit4 = await executable(join(import.meta.dir, "../children/first-write.ts"), join(dir, "exe-jit4", "first-write"), { jitPolicy: 4 });
    return { dir, firstWrite: firstWrite.entry, breakdown: breakdown.entry, firstWriteExe, breakdownExe, firstWriteExeJit4 };
  })();
  return built;
}
