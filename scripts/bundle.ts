// Bundle a program that uses kindling as a library into one file compiled to JavaScriptCore bytecode, with
// the vCPU worker bundled beside it, so that a process starts without transpiling and parsing ~40
// TypeScript modules (about 10 ms of a VM's start to its first instruction here). The benchmarks' children
// run bundled this way (bench/lib/bundled-children.ts).
//
//   bun scripts/bundle.ts ENTRY.ts OUTDIR
//   bun scripts/bundle.ts --executable ENTRY.ts OUTFILE
//
// `--executable` (executable() below) makes a standalone executable instead (`bun build --compile`): Bun's
// runtime, the program and the worker in one file (~110 MB), run without `bun`. Measured here, its process
// reaches a guest's first instruction ~4 ms sooner than `bun BUNDLE.js`, with ~3.5 ms less CPU
// (bench/README.md, start to first instruction).
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
import { basename, dirname, join, relative, resolve, sep } from "node:path";
import { buildProbes, probeSourceHash } from "../guest/probes/build.ts";

const ROOT = join(import.meta.dir, "..");
const WORKER = join(ROOT, "src/vcpu/worker.ts");
/**
 * What CommonJS output cannot hold: consola's environment lookup (through std-env) reads `import.meta.env`,
 * which is a syntax error outside a module; it falls back to process.env without it.
 */
const ESM_ONLY = { "import.meta.env": "undefined" };

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
    define: { KINDLING_VCPU_WORKER_URL: JSON.stringify(worker), KINDLING_PROBE_SOURCE_HASH: JSON.stringify(probeSourceHash()), ...ESM_ONLY },
  });
  if (!r.success) throw new Error(`bundling ${entry} failed:\n${r.logs.map(String).join("\n")}`);
  return { entry: join(out, `${basename(entry).replace(/\.ts$/, "")}.js`), worker };
}

/** The deepest directory holding both paths. */
function commonDir(a: string, b: string): string {
  const pa = a.split(sep);
  const pb = b.split(sep);
  let n = 0;
  while (n < pa.length && n < pb.length && pa[n] === pb[n]) n++;
  return pa.slice(0, n).join(sep) || sep;
}

/**
 * Compile `entry` and the vCPU worker into one standalone executable at `outFile`, with bytecode. Inside
 * it, modules live under Bun's embedded root (the deepest directory holding the entry and the worker), and
 * `new Worker("./src/vcpu/worker.ts")` finds the embedded worker by its path from that root. It does not
 * read bunfig.toml or .env files from the directory it runs in. `jitPolicy` is Bun's `compile.jitPolicy`.
 */
export async function executable(entry: string, outFile: string, opts: { jitPolicy?: number } = {}): Promise<string> {
  const out = resolve(outFile);
  mkdirSync(dirname(out), { recursive: true });
  try {
    buildProbes();
  } catch {
    // As for bundle(): built at first use instead (from the source tree, which must then be present).
  }
  const root = commonDir(dirname(resolve(entry)), ROOT);
  const r = await Bun.build({
    entrypoints: [resolve(entry), WORKER],
    root,
    target: "bun",
    format: "cjs",
    bytecode: true,
    // jitPolicy > 1 multiplies JavaScriptCore's tier-up thresholds (Bun.unsafe.setJITPolicy), so that
    // run-once startup code stays in the interpreter instead of keeping the JIT threads busy.
    compile: { outfile: out, autoloadBunfig: false, autoloadDotenv: false, jitPolicy: opts.jitPolicy ?? 1 },
    define: { KINDLING_VCPU_WORKER_URL: JSON.stringify(`./${relative(root, WORKER)}`), KINDLING_PROBE_SOURCE_HASH: JSON.stringify(probeSourceHash()), ...ESM_ONLY },
  });
  if (!r.success) throw new Error(`compiling ${entry} failed:\n${r.logs.map(String).join("\n")}`);
  return out;
}

if (import.meta.main) {
  const args = process.argv.slice(2);
  const exe = args[0] === "--executable";
  const [entry, out] = exe ? args.slice(1) : args;
  if (!entry || !out) {
    process.stderr.write("usage: bun scripts/bundle.ts [--executable] ENTRY.ts OUTDIR|OUTFILE\n");
    process.exit(2);
  }
  if (exe) {
    console.log(await executable(entry, out));
  } else {
    const b = await bundle(entry, out);
    console.log(`${b.entry}\n${b.worker}`);
  }
}
