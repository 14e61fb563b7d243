// Bundle a program that uses kindling as a library into one file compiled to JavaScriptCore bytecode, with
// the vCPU worker bundled beside it, so that a process starts without transpiling and parsing ~40
// TypeScript modules (about 10 ms of a VM's start to its first instruction here). The benchmarks' children
// run bundled this way (bench/lib/bundled-children.ts).
//
//   bun scripts/bundle.ts ENTRY.ts OUTDIR
//
// The `kindling` command itself (src/cli/main.ts) does not bundle yet: it finds its subcommands by computed
// `import()` URLs and uses top-level await.
//
// What a bundle needs that the source tree gets for free:
//   - the vCPU worker's script: KINDLING_VCPU_WORKER_URL is defined as the bundled worker's absolute path
//     (src/vcpu/worker-pool.ts reads it);
//   - bytecode needs CommonJS, so an entry point has no top-level await;
//   - `import.meta.dir` in CommonJS output is the source file's directory, fixed at build time: the bundle
//     finds the probe sources and the guest cache where the source tree has them, and must be rebuilt
//     when the tree moves;
//   - the probe guests' cache key: KINDLING_PROBE_SOURCE_HASH is the hash of the probe sources the bundle
//     was built from (guest/probes/build.ts), and the probes are built now, so that the bundled program
//     finds them without hashing the sources at every start.

import { mkdirSync, rmSync } from "node:fs";
import { basename, join, resolve } from "node:path";
import { buildProbes, probeSourceHash } from "../guest/probes/build.ts";

const ROOT = join(import.meta.dir, "..");
const WORKER = join(ROOT, "src/vcpu/worker.ts");

export interface Bundle {
  /** The bundled entry point: run it with `bun`. */
  entry: string;
  worker: string;
}

/** Bundle `entry` and the vCPU worker into `outDir` (emptied first). Throws with Bun's messages on failure. */
export async function bundle(entry: string, outDir: string): Promise<Bundle> {
  const out = resolve(outDir);
  rmSync(out, { recursive: true, force: true });
  mkdirSync(out, { recursive: true });
  const worker = join(out, `${basename(WORKER).replace(/\.ts$/, "")}.js`);
  try {
    buildProbes();
  } catch {
    // No binutils here: the bundled program builds its probes at first use, as from source.
  }
  const r = await Bun.build({
    entrypoints: [resolve(entry), WORKER],
    outdir: out,
    target: "bun",
    format: "cjs",
    bytecode: true,
    naming: { entry: "[name].[ext]" },
    define: { KINDLING_VCPU_WORKER_URL: JSON.stringify(worker), KINDLING_PROBE_SOURCE_HASH: JSON.stringify(probeSourceHash()) },
  });
  if (!r.success) throw new Error(`bundling ${entry} failed:\n${r.logs.map(String).join("\n")}`);
  return { entry: join(out, `${basename(entry).replace(/\.ts$/, "")}.js`), worker };
}

if (import.meta.main) {
  const [entry, outDir] = process.argv.slice(2);
  if (!entry || !outDir) {
    process.stderr.write("usage: bun scripts/bundle.ts ENTRY.ts OUTDIR\n");
    process.exit(2);
  }
  const b = await bundle(entry, outDir);
  console.log(`${b.entry}\n${b.worker}`);
}
